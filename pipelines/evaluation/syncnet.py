"""LSE-C / LSE-D: lip-sync confidence and distance from SyncNet (Chung & Zisserman 2016).

The network is the one the published ``syncnet_v2.model`` holds (joonson/syncnet_python, layer
names kept so the file loads by name). The scoring follows that repository's evaluation as used by
Wav2Lip and later papers: 25 fps face crops of 224² (BGR, 0..255, not normalised), 13 MFCCs at
100 Hz from 16 kHz audio (python_speech_features' defaults), one embedding per 5-frame / 20-MFCC
window, distances to the audio windows within ±15 frames; LSE-D is the smallest mean distance and
LSE-C the median mean distance minus that minimum. The crop box follows its ``crop_video`` (box side
max(w, h), 13-frame median filter, 0.4 crop scale, grey padding) but the box comes from the 68
landmarks' extent rather than the S3FD detector, so figures can differ slightly from published ones.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.fft import dct
from scipy.signal import medfilt
from torch import nn
from torch.nn import functional as F

from ..checkpoint import load_checkpoint, load_foreign_state_dict, read_foreign_state_dict
from ..errors import LandmarkTalkError

__all__ = ["SyncNetV2Config", "SyncNetV2", "load_syncnet_v2", "find_syncnet_weights", "syncnet_crop_boxes",
           "cut_syncnet_crops", "lip_sync_scores"]

logger = logging.getLogger(__name__)

SYNCNET_FILE = "syncnet_v2.safetensors"
OFFICIAL_FILE = "syncnet_v2.model"
EXPECTED_FILES = f"syncnet_python's {OFFICIAL_FILE} (or {SYNCNET_FILE})"
SYNCNET_FPS = 25.0
SYNCNET_SAMPLE_RATE = 16000
CROP_SIZE = 224
_WINDOW = 5  # video frames per embedding; 20 MFCC steps at 100 Hz
_MFCC_PER_FRAME = 4
_CROP_SCALE = 0.4
_PAD_VALUE = 110


@dataclass(frozen=True)
class SyncNetV2Config:
    embedding_dim: int = 1024


def _bn_relu(kind, channels):
    return [kind(channels), nn.ReLU()]


class SyncNetV2(nn.Module):
    """Audio (MFCC [N,1,13,20]) and lip (BGR frames [N,3,5,224,224], 0..255) embeddings in one space."""

    config_class = SyncNetV2Config

    def __init__(self, config: SyncNetV2Config | None = None):
        super().__init__()
        self.config = config or SyncNetV2Config()
        bn2, bn3 = nn.BatchNorm2d, nn.BatchNorm3d
        # Sequential indices must match the published file, including the parameterless 1×1 max pool.
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), *_bn_relu(bn2, 64), nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, padding=1), *_bn_relu(bn2, 192), nn.MaxPool2d(3, stride=(1, 2)),
            nn.Conv2d(192, 384, 3, padding=1), *_bn_relu(bn2, 384),
            nn.Conv2d(384, 256, 3, padding=1), *_bn_relu(bn2, 256),
            nn.Conv2d(256, 256, 3, padding=1), *_bn_relu(bn2, 256), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 512, (5, 4)), *_bn_relu(bn2, 512),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, self.config.embedding_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, self.config.embedding_dim))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), *_bn_relu(bn3, 96), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), *_bn_relu(bn3, 256),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu(bn3, 256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu(bn3, 256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu(bn3, 256),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6)), *_bn_relu(bn3, 512),
        )

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def find_syncnet_weights(folder: str | os.PathLike) -> Path | None:
    folder = Path(folder)
    for name in (SYNCNET_FILE, OFFICIAL_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def load_syncnet_v2(source: str | os.PathLike, *, device: str | torch.device = "cpu") -> SyncNetV2:
    """SyncNet from the published ``syncnet_v2.model`` (read without running pickled code), a pack file, or a folder."""
    path = Path(source)
    if path.is_dir():
        found = find_syncnet_weights(path)
        if found is None:
            raise FileNotFoundError(f"{path}: holds no SyncNet weights; put {EXPECTED_FILES} there")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SyncNet weights file; give {EXPECTED_FILES}")
    if path.suffix == ".safetensors":
        return load_checkpoint(path, "syncnet_v2", device=device)
    state = read_foreign_state_dict(path, EXPECTED_FILES)
    model = load_foreign_state_dict(SyncNetV2(), state, path, name="SyncNet v2", what=EXPECTED_FILES)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------- audio


def _mel_filterbank(filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters on FFT bins as python_speech_features builds them (floor((nfft+1)·f/sr) edges)."""
    top_mel = 2595 * np.log10(1 + (sample_rate / 2) / 700.0)
    hz = 700 * (10 ** (np.linspace(0, top_mel, filters + 2) / 2595.0) - 1)
    bins = np.floor((nfft + 1) * hz / sample_rate)
    bank = np.zeros((filters, nfft // 2 + 1))
    for j in range(filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def _syncnet_mfcc(samples: np.ndarray, sample_rate: int = SYNCNET_SAMPLE_RATE) -> np.ndarray:
    """13 MFCCs per 10 ms, [N,13], of 16-bit-scaled audio: python_speech_features.mfcc with its defaults."""
    signal = np.append(samples[0], samples[1:] - 0.97 * samples[:-1])
    frame_len, step, nfft = 400, 160, 512  # 25 ms windows every 10 ms at 16 kHz, no window function
    count = 1 if len(signal) <= frame_len else 1 + math.ceil((len(signal) - frame_len) / step)
    signal = np.concatenate([signal, np.zeros((count - 1) * step + frame_len - len(signal))])
    frames = signal[np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    mel = power @ _mel_filterbank(26, nfft, sample_rate).T
    mel = np.where(mel == 0, eps, mel)
    cepstra = dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :13]
    cepstra *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)  # lifter L = 22
    cepstra[:, 0] = np.log(energy)
    return cepstra


# ------------------------------------------------------------------------------------------- video


def syncnet_crop_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame (centre x, centre y, half side) [T,3] from landmarks [T,68,2], median-filtered over 13 frames.

    Frames without landmarks (NaN) take the nearest frame's box.
    """
    points = np.asarray(landmarks, np.float64)
    valid = np.isfinite(points).all(axis=(1, 2))
    if not valid.any():
        raise LandmarkTalkError("lip-sync scoring: no face was found in any frame of the prediction")
    lo, hi = points[valid].min(axis=1), points[valid].max(axis=1)
    found = np.stack([(lo[:, 0] + hi[:, 0]) / 2, (lo[:, 1] + hi[:, 1]) / 2, np.max(hi - lo, axis=1) / 2], axis=1)
    index = np.arange(len(points))
    boxes = np.stack([np.interp(index, index[valid], found[:, c]) for c in range(3)], axis=1)
    kernel = min(13, len(boxes) if len(boxes) % 2 else len(boxes) - 1)  # medfilt needs an odd size
    if kernel >= 3:
        boxes = np.stack([medfilt(boxes[:, c], kernel) for c in range(3)], axis=1)
    return boxes


def cut_syncnet_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """224² BGR face crops [T,224,224,3] from RGB frames, the box extended down and sideways for the mouth."""
    crops = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for i, (frame, (cx, cy, half)) in enumerate(zip(frames, boxes)):
        pad = int(half * (1 + 2 * _CROP_SCALE))
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(_PAD_VALUE,) * 3)
        my, mx = cy + pad, cx + pad
        face = padded[int(my - half):int(my + half * (1 + 2 * _CROP_SCALE)),
                      int(mx - half * (1 + _CROP_SCALE)):int(mx + half * (1 + _CROP_SCALE))]
        crops[i] = cv2.cvtColor(cv2.resize(face, (CROP_SIZE, CROP_SIZE)), cv2.COLOR_RGB2BGR)
    return crops


@torch.no_grad()
def lip_sync_scores(
    net: SyncNetV2,
    crops: np.ndarray | Iterable[np.ndarray],
    samples: np.ndarray,
    *,
    vshift: int = 15,
    batch_size: int = 16,
) -> dict[str, float]:
    """LSE-D, LSE-C and the audio-video offset (frames) of 25 fps crops against 16 kHz mono audio in -1..1.

    ``crops``: [T,224,224,3] BGR uint8 (from :func:`cut_syncnet_crops`), or an iterable of such chunks.
    """
    device = next(net.parameters()).device
    samples = np.asarray(samples, np.float64).reshape(-1)
    # syncnet_python reads 16-bit PCM, so its MFCC energies are on the int16 scale.
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767)
    mfcc = torch.from_numpy(_syncnet_mfcc(pcm).T.copy()).float()  # [13, N]
    audio_frames = len(pcm) // int(SYNCNET_SAMPLE_RATE / SYNCNET_FPS)

    lip_embeddings, pending = [], None
    chunks = [crops] if isinstance(crops, np.ndarray) else crops
    for chunk in chunks:
        pending = chunk if pending is None else np.concatenate([pending, chunk])
        windows = len(pending) - _WINDOW + 1
        for first in range(0, max(windows, 0), batch_size):
            last = min(first + batch_size, windows)
            clip = torch.from_numpy(np.ascontiguousarray(pending[first:last + _WINDOW - 1])).to(device).float()
            clip = clip.permute(3, 0, 1, 2)  # t h w c -> c t h w
            batch = torch.stack([clip[:, i:i + _WINDOW] for i in range(last - first)])
            lip_embeddings.append(net.embed_lips(batch).cpu())
        if windows > 0:
            pending = pending[windows:]
    if not lip_embeddings:
        raise LandmarkTalkError("lip-sync scoring: needs at least 6 frames of video")
    lips = torch.cat(lip_embeddings)
    usable = min(len(lips) + _WINDOW - 1, audio_frames) - _WINDOW  # syncnet_python's `lastframe`
    if usable < 1:
        raise LandmarkTalkError(f"lip-sync scoring: video and audio overlap for {usable + _WINDOW} frames; "
                                "need 6 or more")
    lips = lips[:usable]
    audio = []
    for first in range(0, usable, batch_size):
        last = min(first + batch_size, usable)
        steps = torch.stack([mfcc[:, v * _MFCC_PER_FRAME:v * _MFCC_PER_FRAME + 20] for v in range(first, last)])
        audio.append(net.embed_audio(steps[:, None].to(device)).cpu())  # b 1 13 20
    audio = torch.cat(audio)

    span = 2 * vshift + 1
    padded = F.pad(audio, (0, 0, vshift, vshift))
    distances = torch.stack([F.pairwise_distance(lips[[i]].repeat(span, 1), padded[i:i + span]) for i in range(usable)])
    mean = distances.mean(dim=0)
    best, best_index = torch.min(mean, 0)
    return {"lse_d": float(best), "lse_c": float(torch.median(mean) - best), "av_offset": int(vshift - best_index)}
