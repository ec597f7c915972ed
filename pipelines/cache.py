"""Per-clip training cache: aligned face crops, crop-space landmarks, the face track and 16 kHz audio.

``fit`` and ``train`` read clips through this cache so tracking and alignment run once per clip. Layout
of a cache folder::

    meta.json        source, fps, crop_size, num_frames, format
    crops.npy        uint8 [T, S, S, 3] RGB aligned crops (memory-mapped on read)
    landmarks.npy    float32 [T, 68, 2] crop pixels, smoothed, iBUG 300-W order
    track.npz        the FaceTrack in source-frame pixels
    audio.npy        float32 [N] 16 kHz mono, the clip's audio track
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import LandmarkTalkError
from .types import Audio, FaceTrack

__all__ = ["ClipCache", "write_clip_cache", "prepare_clip_cache", "load_clip_caches", "default_cache_dir"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
AUDIO_RATE = 16000
_VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


@dataclass(frozen=True)
class ClipCache:
    """A prepared clip on disk; arrays load lazily."""

    root: Path
    source: str
    fps: float
    crop_size: int
    num_frames: int

    def crops(self) -> np.ndarray:
        """uint8 [T, S, S, 3] RGB aligned crops, memory-mapped."""
        return np.load(self.root / "crops.npy", mmap_mode="r")

    def landmarks(self) -> np.ndarray:
        """float32 [T, 68, 2] crop pixels."""
        return np.load(self.root / "landmarks.npy")

    def track(self) -> FaceTrack:
        with np.load(self.root / "track.npz") as z:
            return FaceTrack(
                landmarks=z["landmarks"], confidence=z["confidence"], transforms=z["transforms"],
                crop_size=int(z["crop_size"]), frame_size=(int(z["frame_size"][0]), int(z["frame_size"][1])),
                fps=float(z["fps"]), filled=z["filled"], face_index=int(z["face_index"]) if "face_index" in z.files else 0,
                face_count=int(z["face_count"]) if "face_count" in z.files else 1,
            )

    def audio(self) -> Audio:
        """16 kHz mono [1, N] float32."""
        return Audio(samples=np.load(self.root / "audio.npy")[None, :], sample_rate=AUDIO_RATE)

    def train_val_frames(self, holdout: float) -> tuple[range, range]:
        """Split by time: the first (1 - holdout) of the frames train, the tail validates."""
        if not 0.0 <= holdout < 1.0:
            raise LandmarkTalkError(f"holdout {holdout}: give a fraction in [0, 1), e.g. 0.2")
        cut = self.num_frames - int(round(self.num_frames * holdout))
        return range(0, cut), range(cut, self.num_frames)


def _open_cache(root: Path) -> ClipCache:
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LandmarkTalkError(f"{root}: not a clip cache ({exc}); prepare it with `python -m pipelines fit CLIP`") from exc
    if meta.get("format") != CACHE_FORMAT:
        raise LandmarkTalkError(f"{root}: cache format {meta.get('format')}, expected {CACHE_FORMAT}; delete it to rebuild")
    return ClipCache(root=root, source=meta["source"], fps=float(meta["fps"]), crop_size=int(meta["crop_size"]),
                     num_frames=int(meta["num_frames"]))


def write_clip_cache(
    root: str | os.PathLike,
    *,
    crops: np.ndarray,
    landmarks: np.ndarray,
    track: FaceTrack,
    audio: Audio,
    fps: float,
    source: str,
    overwrite: bool = False,
) -> ClipCache:
    """Write a cache folder atomically (built in a temporary sibling folder, then renamed)."""
    root = Path(root)
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3:
        raise LandmarkTalkError(f"crops: expected uint8 [T,S,S,3], got {crops.dtype} {crops.shape}")
    if landmarks.shape != (crops.shape[0], 68, 2):
        raise LandmarkTalkError(f"landmarks: expected [{crops.shape[0]},68,2], got {landmarks.shape}")
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} already exists; remove it or pass overwrite=True")
    root.parent.mkdir(parents=True, exist_ok=True)
    samples = audio.samples.mean(axis=0) if audio.samples.ndim == 2 else audio.samples
    if audio.sample_rate != AUDIO_RATE:
        import librosa

        samples = librosa.resample(samples.astype(np.float32), orig_sr=audio.sample_rate, target_sr=AUDIO_RATE)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        np.save(tmp / "crops.npy", crops)
        np.save(tmp / "landmarks.npy", landmarks.astype(np.float32))
        np.savez(
            tmp / "track.npz", landmarks=track.landmarks, confidence=track.confidence, transforms=track.transforms,
            crop_size=track.crop_size, frame_size=np.asarray(track.frame_size), fps=track.fps, filled=track.filled,
            face_index=track.face_index, face_count=track.face_count,
        )
        np.save(tmp / "audio.npy", samples.astype(np.float32))
        meta = {"format": CACHE_FORMAT, "source": source, "fps": fps, "crop_size": int(crops.shape[1]),
                "num_frames": int(crops.shape[0])}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open_cache(root)


def prepare_clip_cache(
    clip: str | os.PathLike,
    cache_root: str | os.PathLike,
    *,
    crop_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> ClipCache:
    """Track and align a talking clip once; reuse the cache when it already matches."""
    from .face import align_faces, crop_landmarks, track_face
    from .media import probe_media, read_audio, read_video

    clip = Path(clip)
    root = Path(cache_root)
    if (root / "meta.json").is_file():
        cache = _open_cache(root)
        if cache.crop_size == crop_size and cache.source == str(clip.resolve()):
            return cache
    info = probe_media(clip)
    if not info.has_audio:
        raise LandmarkTalkError(f"{clip}: has no audio track; fitting needs the person speaking with sound")
    frames, fps = read_video(clip)
    track = track_face(frames, fps=fps, crop_size=crop_size, source=str(clip), progress=progress)
    crops = align_faces(frames, track)
    crop_points = crop_landmarks(track).points
    audio = read_audio(clip, sample_rate=AUDIO_RATE, mono=True)
    logger.info("cached %s: %d frames at %g fps, %d px crops", clip.name, len(crops), fps, crop_size)
    return write_clip_cache(root, crops=crops, landmarks=crop_points, track=track, audio=audio, fps=fps,
                            source=str(clip.resolve()), overwrite=True)


def default_cache_dir() -> Path:
    """Where prepared clips go unless told otherwise: $LANDMARKTALK_CACHE, else the user's cache folder."""
    if os.environ.get("LANDMARKTALK_CACHE"):
        return Path(os.environ["LANDMARKTALK_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "landmarktalk"


def cache_dir_for(clip: Path, crop_size: int, cache_dir: Path | None = None) -> Path:
    """A cache folder keyed by the clip's path, size and mtime, so an edited clip is prepared again."""
    import hashlib

    stat = clip.stat()
    key = hashlib.sha1(f"{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return (cache_dir or default_cache_dir()) / f"{clip.stem}-{key}-{crop_size}"


def load_clip_caches(
    data: str | os.PathLike, *, crop_size: int = 256, cache_dir: str | os.PathLike | None = None
) -> list[ClipCache]:
    """Caches from a cache folder, a folder of caches, a clip, or a folder of clips.

    Clips are prepared on first use into ``cache_dir`` (default :func:`default_cache_dir`), so a
    read-only media folder works.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder; give a clip, a folder of clips, or a cache")
    if (data / "meta.json").is_file():
        return [_open_cache(data)]
    if data.is_file():
        clips = [data]
    else:
        caches = [_open_cache(p.parent) for p in sorted(data.glob("*/meta.json"))]
        if caches:
            return caches
        clips = sorted(p for p in data.iterdir() if p.suffix.lower() in _VIDEO_SUFFIXES)
    if not clips:
        raise LandmarkTalkError(f"--data {data}: holds no clips ({', '.join(sorted(_VIDEO_SUFFIXES))}) and no caches")
    root = Path(cache_dir) if cache_dir is not None else None
    return [prepare_clip_cache(clip, cache_dir_for(clip, crop_size, root), crop_size=crop_size) for clip in clips]
