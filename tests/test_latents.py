"""Latent codecs: one interface for the pack's autoencoder, wrapped callables and the real TAEF2 weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.checkpoint import save_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.latents import callable_codec, face_autoencoder_codec, load_latent_codec, taef2_codec
from pipelines.models.face_autoencoder import FaceAutoencoder, FaceAutoencoderConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread avoids contention stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _pool_codec():
    return callable_codec("avgpool4", lambda x: F.avg_pool2d(x, 4),
                          lambda z: F.interpolate(z, scale_factor=4, mode="bilinear"), channels=3, downscale=4)


def test_callable_codec_checks_shapes_and_round_trips_frames():
    codec = _pool_codec()
    yy, xx = np.mgrid[0:32, 0:32]
    frames = np.stack([np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1)] * 2).astype(np.uint8)  # smooth ramps
    latents = codec.encode_frames(frames, chunk_size=1)
    assert latents.shape == (2, 3, 8, 8) and latents.dtype == torch.float32
    back = codec.decode_frames(latents)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert _psnr(back[:, 4:-4, 4:-4], frames[:, 4:-4, 4:-4]) > 35  # a ramp survives pooling away from the border
    with pytest.raises(LandmarkTalkError, match="not divisible .* 4"):
        codec.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(LandmarkTalkError, match=r"\[B,3,h,w\]"):
        codec.decode(torch.zeros(1, 4, 8, 8))
    liar = callable_codec("liar", lambda x: x[:, :2, ::4, ::4], lambda z: z, channels=3, downscale=4)
    with pytest.raises(LandmarkTalkError, match="expected"):
        liar.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(LandmarkTalkError, match="name"):
        callable_codec("", lambda x: x, lambda z: z, channels=3, downscale=1)


def test_face_autoencoder_codec_shapes_and_a_name_that_follows_the_weights(tmp_path):
    torch.manual_seed(0)
    config = FaceAutoencoderConfig(image_size=32, block_channels=(8, 16, 16), norm_groups=8, latent_channels=4)
    model = FaceAutoencoder(config)
    codec = face_autoencoder_codec(model)
    assert codec.name.startswith("face_autoencoder:") and (codec.channels, codec.downscale) == (4, 4)
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (2, 4, 8, 12)
    assert codec.decode(latents).shape == (2, 3, 32, 48)
    torch.testing.assert_close(latents, model.encode(images))  # the posterior mean, not a sample
    assert face_autoencoder_codec(model).name == codec.name
    path = save_checkpoint(model, tmp_path / "ae.safetensors")
    loaded = load_latent_codec(path)
    assert loaded.name == codec.name
    torch.testing.assert_close(loaded.encode(images), latents)
    with torch.no_grad():
        model.decoder.conv_out.bias.add_(0.01)
    assert face_autoencoder_codec(model).name != codec.name


def test_load_latent_codec_explains_what_it_takes(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such"):
        load_latent_codec(tmp_path / "missing")
    with pytest.raises(LandmarkTalkError, match="taef2_encoder.pth"):
        load_latent_codec(tmp_path)
    with pytest.raises(FileNotFoundError, match="taef2_decoder.pth"):
        (tmp_path / "taef2_encoder.pth").write_bytes(b"")
        taef2_codec(tmp_path)


def test_taef2_round_trip_on_a_real_portrait_beats_blurred_baselines(shared_data):
    folder = shared_data / "models" / "taesd"
    if not (folder / "taef2_encoder.pth").is_file():
        pytest.skip(f"TAEF2 weights not found in {folder}")
    codec = load_latent_codec(folder)
    assert (codec.name, codec.channels, codec.downscale) == ("taef2", 32, 8)
    image = cv2.cvtColor(cv2.imread(str(shared_data / "images" / "happy.png")), cv2.COLOR_BGR2RGB)  # 256²
    latents = codec.encode_frames(image[None])
    assert latents.shape == (1, 32, 32, 32)
    assert 0.3 < float(latents.std()) < 3.0  # a sane latent scale, not saturated by the decoder's tanh clamp
    round_trip = codec.decode_frames(latents)[0]
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    pooled = cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC)  # 4× smaller, 3 channels
    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)
    score = _psnr(round_trip, image)
    # Measured: TAEF2 35.9 dB, 4× down/up 32.5 dB, Gaussian σ=2 31.8 dB.
    assert score > 34.0
    assert score > _psnr(pooled, image) + 2.0 and score > _psnr(blurred, image) + 2.0
    # Random latents decode far from the portrait: the score comes from what the encoder kept.
    noise_latents = torch.randn_like(latents)
    assert _psnr(codec.decode_frames(noise_latents)[0], image) < score - 15


def test_taef2_refuses_a_damaged_file(tmp_path):
    (tmp_path / "taef2_encoder.pth").write_bytes(b"not a zip")
    (tmp_path / "taef2_decoder.pth").write_bytes(b"")
    with pytest.raises(LandmarkTalkError, match="taef2_encoder.pth: not a readable"):
        taef2_codec(tmp_path)
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "taef2_encoder.pth")
    with pytest.raises(LandmarkTalkError, match="not a TAEF2 file"):
        taef2_codec(tmp_path)
