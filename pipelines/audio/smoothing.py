"""Temporal smoothing: DiffTalk's learnable audio filter, its parameter-free form, and a landmark filter.

:class:`TemporalSmoother` follows DiffTalk §4.2.2: for frame ``i`` it looks at the per-frame features
``[F_{i-w}, …, F_{i+w}]`` (``w = 8`` in the paper), scores them with self-attention and returns their
attention-weighted sum, one smoothed feature per frame. Because the output is a convex combination of
the input features it is a low-pass filter by construction; it starts as a Gaussian average (query/key
products are zero at initialisation) and training learns where to look.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LandmarkTalkError
from ..types import AudioFeatures

__all__ = ["TemporalSmootherConfig", "TemporalSmoother", "smooth_audio_features", "smooth_landmark_track"]


@dataclass(frozen=True)
class TemporalSmootherConfig:
    dim: int = 64  # feature size in and out
    half_window: int = 8  # w: frames on each side (DiffTalk: 8)
    attention_dim: int = 32
    init_sigma: float = 2.0  # frames; width of the Gaussian the attention starts as


class TemporalSmoother(nn.Module):
    """[B, T, dim] → [B, T, dim]: each frame becomes an attention-weighted average of its 2w+1 neighbours."""

    config_class = TemporalSmootherConfig

    def __init__(self, config: TemporalSmootherConfig):
        super().__init__()
        self.config = config
        w = config.half_window
        self.query = nn.Linear(config.dim, config.attention_dim)
        self.key = nn.Linear(config.dim, config.attention_dim, bias=False)
        offsets = torch.arange(-w, w + 1, dtype=torch.float32)
        # Log of a Gaussian over the window: with the zero key below, the initial weights are exactly it.
        self.position_bias = nn.Parameter(-0.5 * (offsets / max(config.init_sigma, 1e-3)) ** 2)
        nn.init.normal_(self.query.weight, std=0.02)
        nn.init.zeros_(self.query.bias)
        nn.init.zeros_(self.key.weight)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Weights [B, T, 2w+1] over each frame's window (sum to 1)."""
        return self._weights_and_windows(x)[0]

    def _weights_and_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.config.half_window
        # Replicate the edge frames so the first and last frames have a full window.
        padded = F.pad(x.transpose(1, 2), (w, w), mode="replicate").transpose(1, 2)
        windows = padded.unfold(1, 2 * w + 1, 1).transpose(2, 3)  # b t k c
        scores = torch.einsum("bta,btka->btk", self.query(x), self.key(windows)) / math.sqrt(self.config.attention_dim)
        return torch.softmax(scores + self.position_bias, dim=-1), windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.config.dim:
            raise LandmarkTalkError(f"TemporalSmoother: expected [B, T, {self.config.dim}] features, got {tuple(x.shape)}")
        weights, windows = self._weights_and_windows(x)
        return torch.einsum("btk,btkc->btc", weights, windows)


def smooth_audio_features(features: AudioFeatures, *, half_window: int = 2, sigma: float = 1.0,
                          similarity: float = 4.0) -> AudioFeatures:
    """Parameter-free form of the filter above on [T, W, D] feature windows: each frame's window becomes a
    convex combination of its 2·half_window+1 neighbours', weighted by a Gaussian over the frame offset
    (``sigma`` frames) times exp(``similarity`` × cosine similarity of the windows), so neighbours that
    sound alike count more and a change of sound is blurred less than by a plain moving average.
    ``half_window`` 0 returns the features unchanged.
    """
    if half_window < 0 or not sigma > 0 or similarity < 0:
        raise LandmarkTalkError(
            f"smooth_audio_features: half_window {half_window}, sigma {sigma}, similarity {similarity}; "
            "give half_window >= 0, sigma > 0 and similarity >= 0"
        )
    windows = np.asarray(features.features, dtype=np.float32)
    if windows.ndim != 3 or not np.isfinite(windows).all():
        raise LandmarkTalkError(f"audio features: expected finite [T, W, D] windows, got shape {windows.shape}")
    if half_window == 0 or len(windows) < 2:
        return features
    w = half_window
    x = torch.from_numpy(windows).reshape(1, len(windows), -1)
    padded = F.pad(x.transpose(1, 2), (w, w), mode="replicate").transpose(1, 2)
    neighbours = padded.unfold(1, 2 * w + 1, 1).transpose(2, 3)  # 1 t k c
    cosine = F.cosine_similarity(x.unsqueeze(2), neighbours, dim=-1, eps=1e-6)  # 1 t k
    offsets = torch.arange(-w, w + 1, dtype=torch.float32)
    weights = torch.softmax(-0.5 * (offsets / sigma) ** 2 + similarity * cosine, dim=-1)
    smoothed = torch.einsum("btk,btkc->btc", weights, neighbours).reshape(windows.shape)
    return replace(features, features=smoothed.numpy())


def smooth_landmark_track(points: np.ndarray, fps: float, *, window_s: float = 0.2, polyorder: int = 2) -> np.ndarray:
    """Savitzky–Golay filter along time of [T, ...] landmarks; keeps peaks better than a moving average.

    The window is ``window_s`` seconds rounded to an odd number of frames (at least ``polyorder + 3``,
    since a window of ``polyorder + 1`` frames fits every point exactly, at most T); tracks too short to
    filter come back unchanged.
    """
    from scipy.signal import savgol_filter

    points = np.asarray(points, dtype=np.float32)
    if not (fps > 0):
        raise LandmarkTalkError(f"fps {fps!r}: give a positive frame rate")
    length = int(round(window_s * fps)) | 1
    length = max(length, (polyorder + 3) | 1)
    if length > len(points):
        length = len(points) if len(points) % 2 else len(points) - 1
    if length <= polyorder + 1:
        return points.copy()
    return savgol_filter(points, length, polyorder, axis=0, mode="interp").astype(np.float32)
