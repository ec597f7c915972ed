"""A tiny L2V trained on the drawn face learns to open the mouth the landmarks ask for (vs. the untrained model)."""
from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.checkpoint import save_checkpoint
from pipelines.latents import callable_codec
from pipelines.models.face_autoencoder import FaceAutoencoder, FaceAutoencoderConfig
from pipelines.models.l2v import L2VConfig, L2VDenoiser, encode_pose_latents, landmark_inputs, load_l2v, render_latents
from pipelines.train import TrainConfig, train_model
from pipelines.train.l2v_task import L2VTask, add_task_arguments, build_training
from test_l2v_synthetic import mouth_darkness, write_synthetic_face_cache


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread avoids contention stalls (measured 10× faster).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pool_codec():
    # A fixed f = 4, 3-channel "autoencoder": average pooling / bilinear upsampling. Exercises the
    # callable-codec path and keeps the test about the diffusion model, not about an autoencoder.
    return callable_codec("avgpool4", lambda x: F.avg_pool2d(x, 4),
                          lambda z: F.interpolate(z, scale_factor=4, mode="bilinear"), channels=3, downscale=4)


def _tiny_config(codec) -> L2VConfig:
    return L2VConfig(image_size=64, downscale=4, latent_channels=3, latent_space=codec.name,
                     block_channels=(16, 32), cross_attention=(False, True))


def _mouth_following(model, codec, cache, opening, frames, guidance=1.0) -> float:
    """Correlation between the rendered mouth's darkness and the landmark opening over ``frames``."""
    crops, points = cache.crops(), cache.landmarks()
    images = torch.from_numpy(np.asarray(crops[frames])).permute(0, 3, 1, 2).float() / 127.5 - 1
    landmark_image, coords = landmark_inputs(points[frames], cache.crop_size, cache.crop_size // 4)
    identity = codec.encode(torch.from_numpy(np.asarray(crops[10:11])).permute(0, 3, 1, 2).float() / 127.5 - 1)
    latents = render_latents(model, codec, pose=encode_pose_latents(codec, images, points[frames]), identity=identity,
                             landmark_images=landmark_image, landmark_points=coords, sampler="dpmpp_2m", steps=10,
                             guidance=guidance, generator=torch.Generator().manual_seed(0), chunk_size=32)
    darkness = mouth_darkness(codec.decode_frames(latents), points[frames])
    return float(np.corrcoef(darkness, opening[frames])[0, 1])


def test_tiny_l2v_learns_to_follow_the_landmarks(tmp_path):
    cache, opening = write_synthetic_face_cache(tmp_path / "cache", num_frames=160, size=64)
    codec = _pool_codec()
    config = _tiny_config(codec)
    task = L2VTask([cache], 0.2, codec, config, condition_dropout=0.1)
    mean, std = task.latent_statistics()
    config = replace(config, latent_shift=mean, latent_scale=1.0 / std)
    task.config = config

    batch = task.sample_batch(torch.Generator().manual_seed(0), 64)
    _, target, reference = batch["frames"].T
    assert (reference < 128).all() and ((target - reference).abs() >= 60).all()  # references from training frames, ≥ 60 away

    torch.manual_seed(0)
    model = L2VDenoiser(config)
    untrained = copy.deepcopy(model).eval()
    with torch.no_grad():
        before = float(np.mean([float(task.compute_loss(untrained, b)[0]) for b in task.validation_batches(16)]))
    out = tmp_path / "l2v.safetensors"
    result = train_model(model.train(), task, TrainConfig(steps=120, batch_size=16, learning_rate=2e-3, ema_decay=0.0,
                                                          warmup_steps=10, val_every=60), out,
                         metadata={"latent_space": codec.name})
    # Measured (this config): validation loss 1.06 → 0.17; mouth correlation untrained −0.18, trained 0.90.
    assert result.final_validation_loss < 0.4 * before, (before, result.history["val_loss"])

    trained = load_l2v(out, codec)
    val_frames = np.arange(128, 160)
    untrained_follow = _mouth_following(untrained, codec, cache, opening, val_frames)
    trained_follow = _mouth_following(trained, codec, cache, opening, val_frames)
    assert trained_follow > 0.7 and trained_follow > untrained_follow + 0.5, (untrained_follow, trained_follow)


def test_build_training_encodes_with_the_codec_and_records_its_space(tmp_path):
    cache, _ = write_synthetic_face_cache(tmp_path / "cache", num_frames=40, size=64)
    torch.manual_seed(0)
    autoencoder = FaceAutoencoder(FaceAutoencoderConfig(image_size=64, block_channels=(8, 16, 16), norm_groups=8))
    codec_path = save_checkpoint(autoencoder, tmp_path / "ae.safetensors")
    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    args = parser.parse_args(["--data", str(cache.root), "--codec", str(codec_path), "--image-size", "32",
                              "--prediction-type", "epsilon", "--mouth-warps", "2"])
    model, task, metadata = build_training(args)
    config = model.config
    assert metadata["latent_space"] == config.latent_space and config.latent_space.startswith("face_autoencoder:")
    assert (config.latent_channels, config.downscale, config.latent_size, config.prediction_type) == (4, 4, 8, "epsilon")
    mean, std = task.latent_statistics()
    assert config.latent_scale == pytest.approx(1 / std) and config.latent_shift == pytest.approx(mean)
    batch = task.sample_batch(torch.Generator().manual_seed(0), 4)
    assert batch["pose"].shape == batch["identity"].shape == (4, 4, 8, 8)
    # 32 training frames: no reference can be 60 away, so the farthest ones are used (a warped copy's
    # distance counts from the frame it was made from; references are never warped copies).
    assert len(task.train_frames) == 3 * 32 and len(task.frame_of[0]) == 40 + 2 * 32  # 2 warped copies each
    _, target, reference = batch["frames"].T
    target = torch.as_tensor(task.frame_of[0][target.numpy()])
    assert (reference < 32).all() and ((target - reference).abs() >= torch.maximum(target, 31 - target)).all()
    loss, parts = task.compute_loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and "mse" in parts


def test_loss_weights_favour_the_masked_lower_face(tmp_path):
    cache, _ = write_synthetic_face_cache(tmp_path / "cache", num_frames=40, size=64)
    codec = _pool_codec()
    config = _tiny_config(codec)
    weighted = L2VTask([cache], 0.2, codec, config, mouth_weight=3.0)
    batch = weighted.sample_batch(torch.Generator().manual_seed(0), 4)
    weight = batch["loss_weight"].float()
    assert weight.shape == (4, 16, 16)
    assert float(weight.min()) == 1.0 and float(weight.max()) == pytest.approx(4.0, abs=0.01)
    points = cache.landmarks()[batch["frames"][:, 1].numpy()] * (16 / cache.crop_size)
    mouth = np.round(points[:, 62]).astype(int)  # the inner upper lip lies inside the masked region
    assert all(float(weight[i, y, x]) > 3.0 for i, (x, y) in enumerate(mouth))
    assert float(weight[:, :3].max()) == 1.0  # the top of the crop (brows) keeps the plain weight
    plain = L2VTask([cache], 0.2, codec, config, mouth_weight=0.0).sample_batch(torch.Generator().manual_seed(0), 4)
    assert bool((plain["loss_weight"] == 1).all())
    # the weighted loss is what trains; the plain MSE is reported beside it
    model = L2VDenoiser(replace(config, latent_shift=0.0, latent_scale=1.0))
    loss, parts = weighted.compute_loss(model, batch)
    assert torch.isfinite(loss) and float(parts["mse"]) > 0
