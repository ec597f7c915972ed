"""Boundary types shared by the stages, the CLI and the ComfyUI nodes.

Every array field documents its shape, dtype, range and units. Frame counts always follow the audio
at the chosen fps: ``round(duration_s * fps)`` (see :func:`frame_count_for`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MediaInfo", "Audio", "FaceTrack", "Landmarks", "AudioFeatures", "frame_count_for"]


def frame_count_for(duration_s: float, fps: float) -> int:
    """Frames that cover ``duration_s`` seconds at ``fps``; the pack-wide rule for output length."""
    return int(round(duration_s * fps + 1e-9))


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` found in a media file.

    ``fps`` is the constant rate frames are delivered at (for a variable-frame-rate source, the
    nominal rate it is resampled to); ``frame_count`` is the number of frames reading yields at that
    rate. Durations are seconds; absent streams have ``None`` fields.
    """

    path: str
    container: str
    duration_s: float
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    video_codec: str | None = None
    rotation: int = 0
    variable_frame_rate: bool = False
    average_fps: float | None = None
    video_duration_s: float | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration_s: float | None = None

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_sample_rate is not None


@dataclass
class Audio:
    """A waveform. ``samples``: [C, N] float32 in -1..1; ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])


@dataclass
class FaceTrack:
    """One tracked face through a clip.

    - ``landmarks``: [T, 68, 2] float32, source-frame pixels (x, y), iBUG 300-W order, smoothed.
    - ``confidence``: [T] float32 in 0..1; 0 where the frame had no detection and was filled.
    - ``transforms``: [T, 2, 3] float32 similarity transforms, source frame → aligned crop pixels.
    - ``crop_size``: side of the square aligned crop in pixels.
    - ``frame_size``: (height, width) of the source frames in pixels.
    - ``fps``: frames per second of the source.
    - ``filled``: [T] bool, frames whose face was interpolated rather than detected.
    - ``face_index``: which face was followed, counting faces left to right from 0.
    - ``face_count``: the most faces seen in one frame.
    """

    landmarks: np.ndarray
    confidence: np.ndarray
    transforms: np.ndarray
    crop_size: int
    frame_size: tuple[int, int]
    fps: float
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    face_index: int = 0
    face_count: int = 1

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])


@dataclass
class Landmarks:
    """A landmark sequence in aligned-crop coordinates.

    ``points``: [T, 68, 2] float32, crop pixels (x, y) for a ``crop_size``² crop; ``fps`` frames per second.
    """

    points: np.ndarray
    crop_size: int
    fps: float

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class AudioFeatures:
    """Per-video-frame audio feature windows.

    ``features``: [T, W, D] float32: for each of T frames, W feature steps of D dims centred on it;
    ``fps``: the video rate T follows; ``kind``: what D holds (e.g. ``"logmel80"``).
    """

    features: np.ndarray
    fps: float
    kind: str

    def __len__(self) -> int:
        return int(self.features.shape[0])
