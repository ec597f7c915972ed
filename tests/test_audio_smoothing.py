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


def _noisy_features(seed=0, frames=120):
    from pipelines.types import AudioFeatures

    rng = np.random.default_rng(seed)
    # two "sounds" (A for 60 frames, then B) with per-frame noise
    a, b = rng.normal(0, 1, (20, 8)), rng.normal(0, 1, (20, 8))
    clean = np.stack([a if t < frames // 2 else b for t in range(frames)]).astype(np.float32)
    noisy = clean + rng.normal(0, 0.5, clean.shape).astype(np.float32)
    return clean, AudioFeatures(features=noisy, fps=25.0, kind="test")


def test_parameter_free_audio_smoothing_lowers_noise_and_keeps_the_change_of_sound():
    from pipelines.audio import smooth_audio_features

    clean, noisy = _noisy_features()
    out = smooth_audio_features(noisy, half_window=3, sigma=2.0)
    assert out.features.shape == noisy.features.shape and out.fps == 25.0 and out.kind == "test"
    error_before = np.abs(noisy.features - clean).mean()
    error_after = np.abs(out.features - clean).mean()
    assert error_after < 0.7 * error_before
    # a convex combination of neighbours: never outside their range
    x = noisy.features
    assert (out.features <= np.maximum.reduce([np.roll(x, k, 0) for k in range(-3, 4)]) + 1e-5).all()
    # similarity weighting blurs the change of sound less than a plain Gaussian of the same width
    plain = smooth_audio_features(noisy, half_window=3, sigma=2.0, similarity=0.0)
    edge = slice(57, 63)
    assert np.abs(out.features[edge] - clean[edge]).mean() < np.abs(plain.features[edge] - clean[edge]).mean()


def test_parameter_free_audio_smoothing_edge_cases():
    from pipelines.audio import smooth_audio_features
    from pipelines.types import AudioFeatures

    _, noisy = _noisy_features(frames=10)
    assert smooth_audio_features(noisy, half_window=0) is noisy
    constant = AudioFeatures(features=np.ones((7, 4, 3), np.float32), fps=30.0, kind="c")
    assert np.allclose(smooth_audio_features(constant, half_window=4).features, 1.0)
    with pytest.raises(LandmarkTalkError, match="half_window"):
        smooth_audio_features(noisy, half_window=-1)
    bad = AudioFeatures(features=np.full((5, 4, 3), np.nan, np.float32), fps=25.0, kind="nan")
    with pytest.raises(LandmarkTalkError, match="finite"):
        smooth_audio_features(bad)
