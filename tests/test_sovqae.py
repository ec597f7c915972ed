"""SOVQAE: EMA codebook, dead-code restarts, learning on a synthetic pattern, strict loading, refine_frames, degradations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import cli
from pipelines.cache import write_clip_cache
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.models.sovqae import SOVQAE, SOVQAEConfig, EMAVectorQuantizer
from pipelines.models.wav2lip import Wav2Lip, Wav2LipConfig
from pipelines.refine import degrade_faces, refine_frames, wav2lip_like
from pipelines.train import TrainConfig, train_model
from pipelines.train.sovqae_task import SOVQAETask
from pipelines.types import Audio, FaceTrack

TINY = SOVQAEConfig(image_size=32, block_channels=(16, 32), norm_groups=8, latent_dim=8, codebook_size=32)


def _latents(points: torch.Tensor) -> torch.Tensor:
    """[N, 2] points → [1, 2, N, 1] latents, the quantiser's layout."""
    return points.t()[None, :, :, None]


def _set_codes(quantizer: EMAVectorQuantizer, codes, sizes) -> None:
    quantizer.codebook.copy_(torch.tensor(codes, dtype=torch.float32))
    quantizer.cluster_size.copy_(torch.tensor(sizes, dtype=torch.float32))
    quantizer.embed_sum.copy_(quantizer.codebook * quantizer.cluster_size[:, None])


def test_ema_codebook_moves_toward_its_data():
    torch.manual_seed(0)
    quantizer = EMAVectorQuantizer(2, 2, decay=0.9, dead_code_threshold=1.0)
    _set_codes(quantizer, [[0.0, 0.0], [-50.0, -50.0]], [100.0, 100.0])
    target = torch.tensor([3.0, 3.0])
    distances = []
    for _ in range(30):
        _, indices = quantizer(_latents(target + 0.05 * torch.randn(64, 2)), update_codebook=True)
        assert int(indices.max()) == 0
        distances.append(float((quantizer.codebook[0] - target).norm()))
    assert all(b < a for a, b in zip(distances, distances[1:]))  # every update moves it closer
    assert distances[-1] < 0.1 * distances[0]
    assert torch.allclose(quantizer.codebook[1], torch.tensor([-50.0, -50.0]), atol=1e-3)  # unused, not yet expired
    quantizer(_latents(target.expand(8, 2)), update_codebook=False)
    assert distances[-1] == float((quantizer.codebook[0] - target).norm())  # no update unless asked


def test_a_code_never_used_is_restarted_onto_the_data():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    quantizer = EMAVectorQuantizer(5, 2, decay=0.9, dead_code_threshold=1.0)
    _set_codes(quantizer, centres.tolist() + [[100.0, 100.0]], [50.0] * 5)
    restarted_at = None
    for step in range(80):
        points = centres[torch.randint(4, (400,))] + 0.1 * torch.randn(400, 2)
        quantizer(_latents(points), update_codebook=True)
        if float(quantizer.codebook[4].norm()) < 50:
            restarted_at = step
            break
    # 50 · 0.9^n drops below 1 after 38 updates: the code is kept while its average says it may be used
    assert restarted_at is not None and 35 <= restarted_at <= 40, restarted_at
    assert float((points - quantizer.codebook[4]).norm(dim=1).min()) < 0.5  # moved onto a real latent
    assert float(quantizer.cluster_size[4]) == 2.0
    for k in range(4):
        assert float((quantizer.codebook[k] - centres[k]).norm()) < 0.2  # live codes untouched by restarts


def test_restarts_undo_codebook_collapse():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    quantizer = EMAVectorQuantizer(4, 2, decay=0.9, dead_code_threshold=1.0)
    _set_codes(quantizer, [[5.0, 5.0]] * 4, [0.0] * 4)  # all codes on one cluster, never counted
    assert len(torch.unique(quantizer.codes_for(_latents(centres)))) == 1
    for _ in range(60):
        quantizer(_latents(centres[torch.randint(4, (400,))] + 0.1 * torch.randn(400, 2)), update_codebook=True)
    used = quantizer.codes_for(_latents(centres)).flatten()
    assert len(torch.unique(used)) == 4
    for k in range(4):
        assert float((quantizer.codebook[used[k]] - centres[k]).norm()) < 0.3


def _pattern_cache(root, frames=40, size=32):
    """Crops of coloured stripes whose phase drifts per frame: detail a VQ-AE must learn to redraw."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    crops = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x + 0.5 * y + t) / 6)
        blob = ((x - 16) ** 2 + (y - 22 - (t % 5)) ** 2 < 30).astype(float)
        crops[t, ..., 0] = 255 * stripes
        crops[t, ..., 1] = 255 * (0.3 + 0.5 * blob)
        crops[t, ..., 2] = 255 * (1 - stripes) * 0.8
    points = rng.uniform(4, 28, (frames, 68, 2)).astype(np.float32)
    track = FaceTrack(landmarks=points, confidence=np.ones(frames, np.float32),
                      transforms=np.tile(np.eye(2, 3, dtype=np.float32), (frames, 1, 1)), crop_size=size,
                      frame_size=(size, size), fps=25.0, filled=np.zeros(frames, bool))
    audio = Audio(samples=np.zeros((1, 16000 * frames // 25), np.float32), sample_rate=16000)
    return write_clip_cache(root, crops=crops, landmarks=points, track=track, audio=audio, fps=25.0, source="pattern")


def _restoration_error(model, task) -> float:
    model.eval()
    with torch.no_grad():
        return float(np.mean([(model(b["degraded"]).clamp(0, 1) - b["sharp"]).abs().mean()
                              for b in task.validation_batches(8)]))


def test_tiny_sovqae_learns_to_restore_a_pattern(tmp_path):
    torch.manual_seed(0)
    cache = _pattern_cache(tmp_path / "cache")
    task = SOVQAETask([cache], 0.2, TINY.image_size)
    model = SOVQAE(TINY)
    before = _restoration_error(model, task)
    degraded_input = float(np.mean([(b["degraded"] - b["sharp"]).abs().mean() for b in task.validation_batches(8)]))
    config = TrainConfig(steps=60, batch_size=8, learning_rate=3e-3, ema_decay=0.0, val_every=60, log_every=10)
    result = train_model(model.train(), task, config, tmp_path / "sovqae.safetensors")
    after = _restoration_error(model, task)
    parts = result.history["parts"]
    assert parts[-1]["reconstruction"] < 0.6 * parts[0]["reconstruction"]
    assert after < 0.6 * before, (before, after)
    assert after < degraded_input * 1.5  # in the range of the damage itself after 60 steps
    assert parts[-1]["codes_used"] > 0.2
    loaded = load_checkpoint(tmp_path / "sovqae.safetensors", "sovqae")
    images = task.validation_batches(8)[0]["degraded"]
    with torch.no_grad():
        assert torch.allclose(loaded(images), model.eval()(images), atol=1e-6)  # codebook buffers saved too


def test_strict_loading_rejects_the_wrong_kind(tmp_path):
    torch.manual_seed(0)
    sovqae = save_checkpoint(SOVQAE(TINY), tmp_path / "refiner.safetensors")
    wav2lip = save_checkpoint(Wav2Lip(Wav2LipConfig(base_channels=2)), tmp_path / "lipsync.safetensors")
    with pytest.raises(LandmarkTalkError, match=r"refiner\.safetensors.*'sovqae' model, expected 'wav2lip'"):
        load_checkpoint(sovqae, "wav2lip")
    with pytest.raises(LandmarkTalkError, match=r"lipsync\.safetensors.*'wav2lip' model, expected 'sovqae'"):
        load_checkpoint(wav2lip, "sovqae")
    with pytest.raises(LandmarkTalkError, match="'wav2lip' model, expected 'syncnet'"):
        load_checkpoint(wav2lip, "syncnet")
    assert load_checkpoint(sovqae, "sovqae").config == TINY


def test_refine_frames_keeps_type_shape_and_range():
    torch.manual_seed(0)
    model = SOVQAE(TINY)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)  # not the model's size: resized and back
    calls = []
    out = refine_frames(model, crops, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == crops.shape and out.dtype == np.uint8 and calls == [(2, 5), (4, 5), (5, 5)]
    floats = crops.astype(np.float32) / 255
    refined = refine_frames(model, floats)
    assert refined.dtype == np.float32 and refined.shape == crops.shape
    assert 0 <= refined.min() and refined.max() <= 1
    image = torch.from_numpy(floats[:, 4:36, 4:36])  # ComfyUI IMAGE at the model's size
    as_tensor = refine_frames(model, image)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32 and as_tensor.shape == image.shape
    with torch.no_grad():
        direct = model.eval()(image.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(as_tensor, direct, atol=1e-6)
    with pytest.raises(LandmarkTalkError, match="crops"):
        refine_frames(model, crops[0])


def _laplacian_variance(images: torch.Tensor) -> float:
    import cv2

    gray = images.mean(1).numpy()
    return float(np.mean([cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var() for g in gray]))


def test_degradations_are_seeded_bounded_and_blur():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(0, 1, (6, 3, 64, 64)).astype(np.float32))
    first = degrade_faces(images, torch.Generator().manual_seed(3), clean_probability=0.0)
    again = degrade_faces(images, torch.Generator().manual_seed(3), clean_probability=0.0)
    assert torch.equal(first, again) and first.shape == images.shape
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    assert all(float((a - b).abs().mean()) > 0.01 for a, b in zip(first, images))
    assert torch.equal(degrade_faces(images, torch.Generator().manual_seed(3), clean_probability=1.0), images)
    foundation = wav2lip_like(images)
    assert foundation.shape == images.shape
    assert _laplacian_variance(foundation) < 0.2 * _laplacian_variance(images)
    upper, lower = foundation[:, :, :24], foundation[:, :, 40:]
    assert _laplacian_variance(lower) < _laplacian_variance(upper)  # the generated half is softest


def test_train_cli_sovqae(tmp_path):
    cache = _pattern_cache(tmp_path / "cache", frames=12)
    out = tmp_path / "refiner.safetensors"
    assert cli.main(["train", "sovqae", "--data", str(cache.root), "--out", str(out), "--preset", "cpu128",
                     "--codebook-size", "64", "--steps", "1", "--batch-size", "2", "--val-every", "1"]) == 0
    model = load_checkpoint(out, "sovqae")
    assert model.config.image_size == 128 and model.config.codebook_size == 64
