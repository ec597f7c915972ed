"""DiffTalk's temporal smoother and the landmark track filter really smooth, and the smoother can learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.audio import TemporalSmoother, TemporalSmootherConfig, smooth_landmark_track
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.errors import LandmarkTalkError


def _roughness(x: torch.Tensor) -> float:
    return float(x.diff(dim=1).abs().mean())


def test_smoother_shape_and_initial_gaussian_weights():
    torch.manual_seed(0)
    smoother = TemporalSmoother(TemporalSmootherConfig(dim=8, half_window=3, init_sigma=1.5))
    x = torch.randn(2, 30, 8)
    assert smoother(x).shape == (2, 30, 8)
    weights = smoother.attention_weights(x)
    assert weights.shape == (2, 30, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 30))
    # At initialisation the weights are the same Gaussian for every frame, peaked on the frame itself.
    expected = torch.softmax(-0.5 * (torch.arange(-3, 4.0) / 1.5) ** 2, 0)
    torch.testing.assert_close(weights[1, 17], expected)


def test_smoother_lowers_frame_to_frame_variation_by_construction():
    # Honest claim: the output is a convex combination of neighbours, so noise is averaged down from the
    # start (no fitting involved); a constant sequence passes unchanged.
    torch.manual_seed(0)
    smoother = TemporalSmoother(TemporalSmootherConfig(dim=16, half_window=4))
    t = torch.linspace(0, 6.28, 100)
    clean = torch.sin(t)[None, :, None].expand(1, 100, 16)
    noisy = clean + 0.3 * torch.randn(1, 100, 16)
    with torch.no_grad():
        smoothed = smoother(noisy)
        constant = smoother(torch.full((1, 20, 16), 0.7))
    assert _roughness(smoothed) < 0.4 * _roughness(noisy)
    assert float((smoothed - clean).pow(2).mean()) < 0.5 * float((noisy - clean).pow(2).mean())
    torch.testing.assert_close(constant, torch.full((1, 20, 16), 0.7))


def test_smoother_attention_learns():
    # Fit it to pass frames through unchanged: the weight on the centre frame must grow from its Gaussian start.
    torch.manual_seed(0)
    smoother = TemporalSmoother(TemporalSmootherConfig(dim=8, half_window=3))
    x = torch.randn(4, 40, 8)
    with torch.no_grad():
        start_centre = float(smoother.attention_weights(x)[..., 3].mean())
        start_error = float((smoother(x) - x).pow(2).mean())
    optimiser = torch.optim.Adam(smoother.parameters(), lr=5e-2)
    for _ in range(60):
        loss = (smoother(x) - x).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert float(smoother.attention_weights(x)[..., 3].mean()) > start_centre + 0.2
        assert float((smoother(x) - x).pow(2).mean()) < 0.5 * start_error


def test_smoother_rejects_wrong_feature_size():
    smoother = TemporalSmoother(TemporalSmootherConfig(dim=8))
    with pytest.raises(LandmarkTalkError, match=r"expected \[B, T, 8\]"):
        smoother(torch.zeros(1, 10, 5))


def test_smoother_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    smoother = TemporalSmoother(TemporalSmootherConfig(dim=8, half_window=2))
    with torch.no_grad():
        smoother.key.weight.normal_()
    path = save_checkpoint(smoother, tmp_path / "smoother.safetensors")
    loaded = load_checkpoint(path, "smoother")
    assert loaded.config == smoother.config
    x = torch.randn(1, 12, 8)
    torch.testing.assert_close(loaded(x), smoother(x))
    with pytest.raises(LandmarkTalkError, match="holds a 'smoother' model, expected 'a2l'"):
        load_checkpoint(path, "a2l")


def test_landmark_track_filter_reduces_jitter_and_keeps_motion():
    rng = np.random.default_rng(0)
    t = np.arange(120) / 25.0
    clean = np.stack([np.sin(2 * np.pi * 0.8 * t), np.cos(2 * np.pi * 0.5 * t)], -1)[:, None, :] * 10 + 100
    clean = np.repeat(clean, 68, axis=1).astype(np.float32)
    noisy = clean + rng.normal(0, 0.8, clean.shape).astype(np.float32)
    smoothed = smooth_landmark_track(noisy, 25.0)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    assert np.abs(smoothed - clean).mean() < 0.8 * np.abs(noisy - clean).mean()
    longer = smooth_landmark_track(noisy, 25.0, window_s=0.4)
    assert np.abs(longer - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    # Savitzky–Golay of order 2 keeps a quadratic path exactly, edges included.
    quadratic = (0.05 * np.arange(50.0) ** 2)[:, None, None] * np.ones((1, 68, 2))
    np.testing.assert_allclose(smooth_landmark_track(quadratic, 25.0), quadratic, atol=1e-3)
    short = noisy[:2]
    np.testing.assert_array_equal(smooth_landmark_track(short, 25.0), short)
