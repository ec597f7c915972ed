"""The pack's face autoencoder: f = 4 shapes, strict checkpoints, and a short training that really improves it."""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.models.face_autoencoder import FACE_AUTOENCODER_PRESETS, FaceAutoencoder, FaceAutoencoderConfig
from pipelines.train import TrainConfig, train_model
from pipelines.train.face_autoencoder_task import FaceAutoencoderTask, add_task_arguments, build_training
from test_l2v_synthetic import write_synthetic_face_cache

_TINY = FaceAutoencoderConfig(image_size=64, block_channels=(16, 32, 32), norm_groups=8, latent_channels=4)


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread avoids contention stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_presets_downscale_by_four_and_shapes_follow():
    assert all(config.downscale == 4 for config in FACE_AUTOENCODER_PRESETS.values())
    torch.manual_seed(0)
    model = FaceAutoencoder(_TINY).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    reconstruction, posterior = model(images)
    assert reconstruction.shape == images.shape
    assert posterior.mean.shape == (2, 4, 16, 16)
    model.train()
    a, _ = model(images)
    b, _ = model(images)
    assert not torch.equal(a, b)  # training mode samples the posterior
    with pytest.raises(LandmarkTalkError, match="divisible by 4"):
        model.encode(torch.zeros(1, 3, 30, 30))
    with pytest.raises(LandmarkTalkError, match="norm_groups"):
        FaceAutoencoder(FaceAutoencoderConfig(block_channels=(12, 24, 24), norm_groups=8))


def test_checkpoint_round_trip_is_strict(tmp_path):
    torch.manual_seed(0)
    model = FaceAutoencoder(_TINY).eval()
    path = save_checkpoint(model, tmp_path / "ae.safetensors")
    loaded = load_checkpoint(path, "face_autoencoder")
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode(images), model.encode(images))
    assert loaded.config == _TINY
    with pytest.raises(LandmarkTalkError, match="'face_autoencoder'.*expected 'l2v'"):
        load_checkpoint(path, "l2v")


def test_short_training_improves_the_round_trip(tmp_path):
    cache, _ = write_synthetic_face_cache(tmp_path / "cache", num_frames=80, size=32)
    task = FaceAutoencoderTask([cache], 0.2, 32)
    torch.manual_seed(0)
    model = FaceAutoencoder(replace(_TINY, image_size=32))

    def validation_scores(m) -> tuple[float, float]:
        """(mean L1, mean PSNR in dB) of the held-out reconstructions."""
        m.eval()
        l1, psnr = [], []
        with torch.no_grad():
            for batch in task.validation_batches(16):
                error = m(batch["images"])[0].clamp(-1, 1) - batch["images"]
                l1.append(float(error.abs().mean()))
                psnr.append(float(10 * torch.log10(4.0 / error.pow(2).mean())))  # peak-to-peak 2
        return float(np.mean(l1)), float(np.mean(psnr))

    before = validation_scores(model)
    config = TrainConfig(steps=120, batch_size=8, learning_rate=2e-3, ema_decay=0.0, val_every=120, warmup_steps=10)
    result = train_model(model.train(), task, config, tmp_path / "ae.safetensors")
    after = validation_scores(load_checkpoint(result.checkpoint, "face_autoencoder"))
    # A flat mid-grey guess scores the images' mean absolute value; the trained model must beat it clearly.
    flat = float(np.mean([float(b["images"].abs().mean()) for b in task.validation_batches(16)]))
    # Measured: L1 0.40 → 0.06 (flat 0.30), PSNR 12.1 → 25.2 dB.
    assert after[0] < 0.3 * before[0] and after[0] < 0.3 * flat, (before, after, flat)
    assert after[1] > before[1] + 8.0, (before, after)
    assert {"l1", "gradient", "kl"} <= set(result.history["parts"][-1])


def test_build_training_reads_caches_and_the_preset(tmp_path):
    cache, _ = write_synthetic_face_cache(tmp_path / "cache", num_frames=20, size=64)
    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    args = parser.parse_args(["--data", str(cache.root), "--preset", "cpu128", "--image-size", "64"])
    model, task, metadata = build_training(args)
    assert model.config.image_size == 64 and model.config.block_channels == FACE_AUTOENCODER_PRESETS["cpu128"].block_channels
    assert task.sample_batch(torch.Generator().manual_seed(0), 2)["images"].shape == (2, 3, 64, 64)
    assert "synthetic-face" in metadata["trained_on"]
