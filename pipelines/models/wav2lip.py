"""Wav2Lip (Prajwal et al. 2020): the lip-sync generator, its SyncNet expert and its mel front end.

The layer list and parameter names follow the official ``models/wav2lip.py`` and ``models/syncnet.py``
so the published ``wav2lip.pth`` / ``wav2lip_gan.pth`` / ``lipsync_expert.pth`` load after
``python -m pipelines convert``. With the default config the generator has 36,298,035 parameters.

Conventions kept from the original, because the official weights were trained with them:
- faces are **BGR**, 0..1, 96×96, cut from a face box (detector box + pads top/bottom/left/right
  0/10/0/0 px) and resized with bilinear interpolation; the generator input is 6 channels:
  the target with its lower half zeroed, then an unmasked reference;
- audio is a 16 kHz mel spectrogram (80 mel frames per second), 16 mel steps per video frame starting
  at mel index ``int(80 * i / fps)``;
- the generated 96² face replaces the whole box (resized back), as the original's paste does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ..errors import LandmarkTalkError
from ..schedule import source_frame_schedule
from ..types import Audio, FaceTrack, Landmarks, frame_count_for

__all__ = [
    "Wav2LipConfig", "Wav2Lip", "SyncNetConfig", "SyncNet",
    "wav2lip_melspectrogram", "mel_windows", "face_boxes", "cut_faces", "generator_input", "lipsync_frames",
]

logger = logging.getLogger(__name__)

FACE_SIZE = 96
MEL_STEPS = 16
SYNC_FRAMES = 5  # SyncNet sees 5 consecutive frames = 0.2 s at 25 fps = 16 mel steps
DEFAULT_PADS = (0, 10, 0, 0)  # top, bottom, left, right in source pixels; the original's default

# The original hparams.py values; changing any of them breaks the official weights.
_SAMPLE_RATE = 16000
_N_FFT = 800
_HOP = 200
_WIN = 800
_NUM_MELS = 80
_FMIN, _FMAX = 55.0, 7600.0
_PREEMPHASIS = 0.97
_MIN_LEVEL_DB = -100.0
_REF_LEVEL_DB = 20.0
_MAX_ABS = 4.0
MEL_PER_SECOND = _SAMPLE_RATE / _HOP  # 80


# ---------------------------------------------------------------------------------------------
# Building blocks, named as the official ``models/conv.py`` names them (``conv_block``, ``act``).


class _Conv(nn.Module):
    """Conv2d + BatchNorm + ReLU, optionally residual (official ``Conv2d``)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class _ConvTranspose(nn.Module):
    """ConvTranspose2d + BatchNorm + ReLU (official ``Conv2dTranspose``)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(c: int) -> _Conv:
    return _Conv(c, c, 3, 1, 1, residual=True)


def _audio_encoder(c: int, extra_last_residual: bool) -> nn.Sequential:
    """80×16 mel window → [32c or 16c]×1×1; shared layout of the generator's and SyncNet's audio towers."""
    layers = [
        _Conv(1, c, 3, 1, 1), _res(c), _res(c),
        _Conv(c, 2 * c, 3, (3, 1), 1), _res(2 * c), _res(2 * c),  # 27×16
        _Conv(2 * c, 4 * c, 3, 3, 1), _res(4 * c), _res(4 * c),  # 9×6
        _Conv(4 * c, 8 * c, 3, (3, 2), 1), _res(8 * c),  # 3×3
    ]
    if extra_last_residual:
        layers.append(_res(8 * c))
    layers += [_Conv(8 * c, 16 * c, 3, 1, 0), _Conv(16 * c, 16 * c, 1, 1, 0)]  # 1×1
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# Generator


@dataclass(frozen=True)
class Wav2LipConfig:
    """``base_channels`` 16 is the official width; smaller values give tiny models for tests."""

    base_channels: int = 16


class Wav2Lip(nn.Module):
    """Wav2Lip generator: (mel window, masked target + reference face) → 96² BGR face in 0..1."""

    config_class = Wav2LipConfig

    def __init__(self, config: Wav2LipConfig | None = None):
        super().__init__()
        self.config = config = config or Wav2LipConfig()
        c = config.base_channels
        if c < 1:
            raise LandmarkTalkError(f"Wav2LipConfig.base_channels {c}: give a positive width (16 = official)")
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(_Conv(6, c, 7, 1, 3)),  # 96
            nn.Sequential(_Conv(c, 2 * c, 3, 2, 1), _res(2 * c), _res(2 * c)),  # 48
            nn.Sequential(_Conv(2 * c, 4 * c, 3, 2, 1), _res(4 * c), _res(4 * c), _res(4 * c)),  # 24
            nn.Sequential(_Conv(4 * c, 8 * c, 3, 2, 1), _res(8 * c), _res(8 * c)),  # 12
            nn.Sequential(_Conv(8 * c, 16 * c, 3, 2, 1), _res(16 * c), _res(16 * c)),  # 6
            nn.Sequential(_Conv(16 * c, 32 * c, 3, 2, 1), _res(32 * c)),  # 3
            nn.Sequential(_Conv(32 * c, 32 * c, 3, 1, 0), _Conv(32 * c, 32 * c, 1, 1, 0)),  # 1
        ])
        # Generator audio tower: 16c → 32c at the top so it matches the face bottleneck.
        self.audio_encoder = _audio_encoder(2 * c, extra_last_residual=False)
        # Each decoder block's input is the previous output concatenated with the mirrored encoder feature.
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(_Conv(32 * c, 32 * c, 1, 1, 0)),
            nn.Sequential(_ConvTranspose(64 * c, 32 * c, 3, 1, 0), _res(32 * c)),  # 3
            nn.Sequential(_ConvTranspose(64 * c, 32 * c, 3, 2, 1, 1), _res(32 * c), _res(32 * c)),  # 6
            nn.Sequential(_ConvTranspose(48 * c, 24 * c, 3, 2, 1, 1), _res(24 * c), _res(24 * c)),  # 12
            nn.Sequential(_ConvTranspose(32 * c, 16 * c, 3, 2, 1, 1), _res(16 * c), _res(16 * c)),  # 24
            nn.Sequential(_ConvTranspose(20 * c, 8 * c, 3, 2, 1, 1), _res(8 * c), _res(8 * c)),  # 48
            nn.Sequential(_ConvTranspose(10 * c, 4 * c, 3, 2, 1, 1), _res(4 * c), _res(4 * c)),  # 96
        ])
        self.output_block = nn.Sequential(_Conv(5 * c, 2 * c, 3, 1, 1), nn.Conv2d(2 * c, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """audio [B,1,80,16] and faces [B,6,96,96] → [B,3,96,96]; or with time, [B,T,1,80,16] and [B,6,T,96,96] → [B,3,T,96,96]."""
        timed = face_sequences.dim() == 5
        if timed:
            batch = face_sequences.shape[0]
            audio_sequences = rearrange(audio_sequences, "b t c h w -> (t b) c h w")
            face_sequences = rearrange(face_sequences, "b c t h w -> (t b) c h w")
        x = self.audio_encoder(audio_sequences)
        feats = []
        y = face_sequences
        for block in self.face_encoder_blocks:
            y = block(y)
            feats.append(y)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        x = self.output_block(x)
        if timed:
            x = rearrange(x, "(t b) c h w -> b c t h w", b=batch)
        return x


# ---------------------------------------------------------------------------------------------
# SyncNet expert


@dataclass(frozen=True)
class SyncNetConfig:
    """``base_channels`` 32 is the official width of ``SyncNet_color``."""

    base_channels: int = 32


class SyncNet(nn.Module):
    """Lip-sync expert (official ``SyncNet_color``): (mel window, 5 lower-half faces) → unit embeddings."""

    config_class = SyncNetConfig

    def __init__(self, config: SyncNetConfig | None = None):
        super().__init__()
        self.config = config = config or SyncNetConfig()
        c = config.base_channels
        if c < 1:
            raise LandmarkTalkError(f"SyncNetConfig.base_channels {c}: give a positive width (32 = official)")
        self.face_encoder = nn.Sequential(
            _Conv(3 * SYNC_FRAMES, c, 7, 1, 3),  # 48×96
            _Conv(c, 2 * c, 5, (1, 2), 1), _res(2 * c), _res(2 * c),  # 46×47
            _Conv(2 * c, 4 * c, 3, 2, 1), _res(4 * c), _res(4 * c), _res(4 * c),  # 23×24
            _Conv(4 * c, 8 * c, 3, 2, 1), _res(8 * c), _res(8 * c),  # 12×12
            _Conv(8 * c, 16 * c, 3, 2, 1), _res(16 * c), _res(16 * c),  # 6×6
            _Conv(16 * c, 16 * c, 3, 2, 1), _Conv(16 * c, 16 * c, 3, 1, 0), _Conv(16 * c, 16 * c, 1, 1, 0),  # 1×1
        )
        self.audio_encoder = _audio_encoder(c, extra_last_residual=True)

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B,1,80,16], faces [B,15,48,96] (5 BGR lower halves, frame-major) → (audio, face) [B,16c] unit vectors."""
        face = self.face_encoder(face_sequences).flatten(1)
        audio = self.audio_encoder(audio_sequences).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)


# ---------------------------------------------------------------------------------------------
# Mel front end


def wav2lip_melspectrogram(audio: Audio) -> np.ndarray:
    """float32 [80, M] normalised log-mel in [-4, 4], M = 1 + N // 200 at 16 kHz (80 per second)."""
    import librosa
    from scipy.signal import lfilter

    samples = np.asarray(audio.samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=0)
    if samples.size == 0:
        raise LandmarkTalkError("audio: no samples; give speech at least 0.2 s long")
    if audio.sample_rate != _SAMPLE_RATE:
        samples = librosa.resample(samples, orig_sr=audio.sample_rate, target_sr=_SAMPLE_RATE)
    emphasised = lfilter([1.0, -_PREEMPHASIS], [1.0], samples.astype(np.float64))
    # librosa < 0.10 (which the original used) padded centred frames by reflection; newer versions pad zeros.
    spectrum = np.abs(librosa.stft(emphasised, n_fft=_N_FFT, hop_length=_HOP, win_length=_WIN, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=_SAMPLE_RATE, n_fft=_N_FFT, n_mels=_NUM_MELS, fmin=_FMIN, fmax=_FMAX)
    min_level = np.exp(_MIN_LEVEL_DB / 20 * np.log(10))
    decibels = 20 * np.log10(np.maximum(min_level, basis @ spectrum)) - _REF_LEVEL_DB
    normalised = (2 * _MAX_ABS) * ((decibels - _MIN_LEVEL_DB) / -_MIN_LEVEL_DB) - _MAX_ABS
    return np.clip(normalised, -_MAX_ABS, _MAX_ABS).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """float32 [T, 80, 16]: frame i reads mel steps from ``int(80 * (i / fps))``; windows past the end take the last 16."""
    if fps <= 0:
        raise LandmarkTalkError(f"fps {fps}: give a positive frame rate")
    if mel.shape[1] < MEL_STEPS:
        # Shorter than 0.2 s: pad with the silence level so there is one full window.
        mel = np.pad(mel, ((0, 0), (0, MEL_STEPS - mel.shape[1])), constant_values=-_MAX_ABS)
    last = mel.shape[1] - MEL_STEPS
    starts = [min(int(MEL_PER_SECOND * (i / fps)), last) for i in range(num_frames)]
    if not starts:
        return np.zeros((0, _NUM_MELS, MEL_STEPS), np.float32)
    return np.stack([mel[:, s:s + MEL_STEPS] for s in starts]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Face boxes, crops and inference


def face_boxes(
    faces: FaceTrack | Landmarks | np.ndarray,
    frame_size: tuple[int, int],
    *,
    pads: tuple[int, int, int, int] = DEFAULT_PADS,
    smooth_window: int = 5,
) -> np.ndarray:
    """int64 [T, 4] boxes (x1, y1, x2, y2) in pixels, padded like the original and clipped to the frame.

    ``faces`` is a FaceTrack (source pixels), Landmarks (crop pixels) or [T,68,2] points — a
    detector-like box is drawn around the jaw, from a little above the brows to the chin — or [T,4]
    detector boxes. Boxes are averaged over
    ``smooth_window`` frames, as the original does unless told ``--nosmooth``.
    """
    height, width = frame_size
    if isinstance(faces, FaceTrack):
        points = np.asarray(faces.landmarks, dtype=np.float64)
    elif isinstance(faces, Landmarks):
        points = np.asarray(faces.points, dtype=np.float64)
    else:
        points = np.asarray(faces, dtype=np.float64)
    if points.ndim == 3 and points.shape[1:] == (68, 2):
        top_of_brows = points[:, 17:27, 1].min(axis=1)
        chin = points[:, :, 1].max(axis=1)
        # An S3FD box reaches about a fifth of the brow-to-chin height above the brows.
        boxes = np.stack([points[:, :, 0].min(axis=1), top_of_brows - 0.2 * (chin - top_of_brows),
                          points[:, :, 0].max(axis=1), chin], axis=1)
    elif points.ndim == 2 and points.shape[1] == 4:
        boxes = points.astype(np.float64)
    else:
        raise LandmarkTalkError(f"faces: expected a FaceTrack, [T,68,2] landmarks or [T,4] boxes, got {points.shape}")
    if len(boxes) == 0:
        raise LandmarkTalkError("faces: no frames; track the face first")
    top, bottom, left, right = pads
    boxes = boxes + np.array([-left, -top, right, bottom], dtype=np.float64)
    if smooth_window > 1 and len(boxes) > 1:
        kernel = np.ones(smooth_window) / smooth_window
        padded = np.pad(boxes, ((smooth_window // 2, smooth_window - 1 - smooth_window // 2), (0, 0)), mode="edge")
        boxes = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)
    boxes = np.round(boxes).astype(np.int64)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    small = (boxes[:, 2] - boxes[:, 0] < 2) | (boxes[:, 3] - boxes[:, 1] < 2)
    if small.any():
        raise LandmarkTalkError(
            f"faces: the face box of frame {int(np.argmax(small))} lies outside the {width}x{height} frame; "
            "check that the track belongs to these frames"
        )
    return boxes


def cut_faces(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """RGB uint8 [T,H,W,3] frames + [T,4] boxes → BGR uint8 [T,96,96,3] (bilinear, like the original's cv2.resize)."""
    crops = np.empty((len(frames), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for k, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1, x2, y2 = (int(v) for v in box)
        crops[k] = cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    return crops


def generator_input(target_bgr: torch.Tensor, reference_bgr: torch.Tensor) -> torch.Tensor:
    """[..., 3, 96, 96] faces 0..1 → [..., 6, 96, 96]: target with its lower half zeroed, then the reference."""
    masked = target_bgr.clone()
    masked[..., FACE_SIZE // 2:, :] = 0
    return torch.cat([masked, reference_bgr], dim=-3)


@torch.no_grad()
def lipsync_frames(
    model: Wav2Lip,
    frames: np.ndarray,
    faces: FaceTrack | Landmarks | np.ndarray,
    audio: Audio,
    fps: float,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pads: tuple[int, int, int, int] = DEFAULT_PADS,
    length_mode: str = "pingpong",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Re-voice ``frames`` (uint8 [N,H,W,3] RGB; N=1 for a photo) with ``audio``: uint8 [T,H,W,3], T = round(duration·fps).

    ``faces`` gives the face per source frame (FaceTrack, Landmarks or detector boxes, see
    :func:`face_boxes`). Models trained by the pack saw aligned crops: give them aligned crops with
    their crop-space Landmarks and paste the result back with the face stage. Source frames are
    reused forward/backward when the audio is longer (``length_mode``). Moves ``model`` to ``device``/``dtype``; ``progress(done, total)`` is called per batch.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise LandmarkTalkError(f"frames: expected uint8 [N,H,W,3] RGB, got {frames.dtype} {frames.shape}")
    boxes = face_boxes(faces, frames.shape[1:3], pads=pads)
    if len(boxes) != len(frames):
        raise LandmarkTalkError(f"faces: {len(boxes)} entries for {len(frames)} frames; track the same frames")
    total = frame_count_for(audio.duration_s, fps)
    chunks = mel_windows(wav2lip_melspectrogram(audio), fps, total)
    schedule = source_frame_schedule(len(frames), total, length_mode)
    model = model.to(device=device, dtype=dtype).eval()
    out = np.empty((total,) + frames.shape[1:], dtype=np.uint8)
    for start in range(0, total, batch_size):
        index = schedule[start:start + batch_size]
        faces_bgr = cut_faces(frames[index], boxes[index])
        face_tensor = rearrange(torch.from_numpy(faces_bgr), "b h w c -> b c h w").to(device=device, dtype=dtype) / 255
        mel = torch.from_numpy(chunks[start:start + len(index)])[:, None].to(device=device, dtype=dtype)
        # The original's reference is the same source frame, unmasked.
        generated = model(mel, generator_input(face_tensor, face_tensor))
        generated = rearrange(generated.float().clamp(0, 1) * 255, "b c h w -> b h w c").round().byte().cpu().numpy()
        for k, i in enumerate(index):
            x1, y1, x2, y2 = (int(v) for v in boxes[i])
            frame = frames[i].copy()
            frame[y1:y2, x1:x2] = cv2.resize(generated[k][..., ::-1], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            out[start + k] = frame
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return out
