"""L2V denoiser plumbing: shapes, condition dropout, latent-space checks, condition inputs and clip rendering."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.checkpoint import save_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.latents import callable_codec
from pipelines.models.l2v import (L2V_PRESETS, L2VConfig, L2VDenoiser, encode_pose_latents, landmark_inputs,
                                  load_l2v, render_latents)
from test_l2v_synthetic import face_landmarks


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread avoids contention stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pool_codec(name="avgpool4"):
    return callable_codec(name, lambda x: F.avg_pool2d(x, 4),
                          lambda z: F.interpolate(z, scale_factor=4, mode="bilinear"), channels=3, downscale=4)


_SMALL = L2VConfig(image_size=32, downscale=4, latent_channels=3, latent_space="avgpool4", block_channels=(16, 32),
                   embed_dim=32, landmark_tokens=4, landmark_hidden=64, latent_shift=0.1, latent_scale=2.0)


def _small_model(config=_SMALL, seed=0):
    torch.manual_seed(seed)
    return L2VDenoiser(config).eval()


def _inputs(frames: int, size: int = 32, opening=None):
    opening = np.linspace(0, 1, frames) if opening is None else opening
    points = np.stack([face_landmarks(size / 2, size / 2, o, size) for o in opening])
    image, coords = landmark_inputs(points, size, size // 4)
    return points, image, coords


def test_tiny_preset_forward_shapes_and_audio_tokens():
    config = replace(L2V_PRESETS["tiny"], latent_channels=4)
    assert config.latent_size == 32
    torch.manual_seed(0)
    model = L2VDenoiser(config)
    b, z = 2, torch.randn(2, 4, 32, 32)
    out = model(z, torch.tensor([10, 900]), pose=z, identity=z, landmark_image=torch.rand(b, 3, 32, 32),
                landmark_points=torch.rand(b, 68, 2) * 2 - 1)
    assert out.shape == (2, 4, 32, 32)
    assert model.unet.config.in_channels == 3 * 4 + 3 and model.unet.config.cross_attention_dim == config.embed_dim
    with_audio = L2VDenoiser(replace(_SMALL, audio_dim=20, audio_window=5))
    x = torch.randn(2, 3, 8, 8)
    tokens = with_audio.condition_tokens(torch.rand(2, 68, 2), torch.randn(2, 5, 20))
    assert tokens.shape == (2, _SMALL.landmark_tokens + 5, _SMALL.embed_dim)
    assert with_audio(x, torch.tensor([1, 2]), pose=x, identity=x, landmark_image=torch.rand(2, 3, 8, 8),
                      landmark_points=torch.rand(2, 68, 2), audio=torch.randn(2, 5, 20)).shape == x.shape
    with pytest.raises(LandmarkTalkError, match=r"audio features \[B,5,20\]"):
        with_audio.condition_tokens(torch.rand(2, 68, 2), None)


def test_base_preset_is_the_papers_64_latent_at_256():
    config = L2V_PRESETS["base"]
    assert (config.image_size, config.latent_size) == (256, 64)
    with pytest.raises(LandmarkTalkError, match="divisible"):
        L2VDenoiser(replace(config, image_size=200))


def test_dropped_condition_ignores_the_landmarks():
    model = _small_model()
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([500, 500])
    _, image_a, coords_a = _inputs(2, opening=[0.0, 0.1])
    _, image_b, coords_b = _inputs(2, opening=[1.0, 0.9])
    run = lambda image, coords, drop: model(x, t, pose=x, identity=x, landmark_image=image,  # noqa: E731
                                            landmark_points=coords, drop_condition=torch.tensor([drop, drop]))
    with torch.no_grad():
        assert not torch.allclose(run(image_a, coords_a, False), run(image_b, coords_b, False), atol=1e-5)
        torch.testing.assert_close(run(image_a, coords_a, True), run(image_b, coords_b, True))


def test_checkpoint_refuses_another_latent_space(tmp_path):
    model = _small_model()
    codec = _pool_codec()
    path = save_checkpoint(model, tmp_path / "l2v.safetensors", metadata={"latent_space": codec.name})
    loaded = load_l2v(path, codec)
    assert loaded.config == _SMALL and loaded.checkpoint_metadata["landmarktalk.latent_space"] == "avgpool4"
    with pytest.raises(LandmarkTalkError, match=r"l2v.safetensors: it was trained in latent space 'avgpool4' but the "
                                                r"codec is 'taef2'"):
        load_l2v(path, _pool_codec("taef2"))
    wide = callable_codec("avgpool4", lambda x: x, lambda z: z, channels=4, downscale=4)
    with pytest.raises(LandmarkTalkError, match="3-channel latents"):
        load_l2v(path, wide)
    other = _pool_codec("face_autoencoder:0123")
    _, image, coords = _inputs(1)
    z = torch.zeros(1, 3, 8, 8)
    with pytest.raises(LandmarkTalkError, match="face_autoencoder:0123"):
        render_latents(loaded, other, pose=z, identity=z, landmark_images=image, landmark_points=coords, steps=1)


def test_landmark_inputs_draw_the_mouth_where_the_points_are():
    points, image, coords = _inputs(3, size=64, opening=[0.0, 0.5, 1.0])
    assert image.shape == (3, 3, 16, 16) and coords.shape == (3, 68, 2)
    torch.testing.assert_close(coords, torch.from_numpy(points / 64 * 2 - 1))
    inner = image[:, 2].sum(dim=(1, 2))
    assert inner[0] < inner[1] < inner[2] and inner[2] > 3 * inner[0]  # the inner-mouth area grows with the opening
    mouth = points[2, 60:68].mean(axis=0) / 4  # latent pixels
    assert image[2, 2, int(mouth[1]), int(mouth[0])] > 0.5
    assert float(image[2, 2, :4].sum()) == 0.0  # nothing in the top rows
    eye = points[0, 36:42].mean(axis=0) / 4
    assert image[0, 0, int(eye[1]) - 1:int(eye[1]) + 2, int(eye[0]) - 1:int(eye[0]) + 2].max() > 0.2


def test_finer_landmark_raster_is_folded_onto_the_latent_grid(tmp_path):
    fine = replace(_SMALL, landmark_raster_scale=4)
    assert fine.landmark_image_size == 32 and _SMALL.landmark_image_size == 8
    model = _small_model(fine)
    assert model.unet.config.in_channels == 3 * 3 + 3 * 16
    # A lower lip moved by 1 crop pixel (a quarter of a latent cell): the latent-side raster barely changes,
    # the fine one moves whole cells, and every fine cell reaches the UNet as a channel of its own.
    points, _, _ = _inputs(1, opening=[0.5])
    moved = points.copy()
    moved[0, 54:60, 1] += 1.0
    moved[0, 64:68, 1] += 1.0
    coarse_a, coarse_b = (landmark_inputs(p, 32, 8)[0] for p in (points, moved))
    fine_a, fine_b = (landmark_inputs(p, 32, 32)[0] for p in (points, moved))
    assert fine_a.shape == (1, 3, 32, 32)
    assert (fine_a - fine_b).abs().max() > 2 * (coarse_a - coarse_b).abs().max()
    x = torch.randn(1, 3, 8, 8)
    t = torch.tensor([500])
    with torch.no_grad():
        out = model(x, t, pose=x, identity=x, landmark_image=fine_a, landmark_points=torch.zeros(1, 68, 2))
        assert out.shape == (1, 3, 8, 8)
        # One fine pixel (inside a single latent cell) changes the prediction.
        poked = fine_a.clone()
        poked[0, 1, 17, 13] = 1.0 - poked[0, 1, 17, 13]
        other = model(x, t, pose=x, identity=x, landmark_image=poked, landmark_points=torch.zeros(1, 68, 2))
        assert (out - other).abs().max() > 1e-5
    # The scale is part of the stored config; a render given the latent-side raster is refused by name.
    loaded = load_l2v(save_checkpoint(model, tmp_path / "fine.safetensors", metadata={"latent_space": "avgpool4"}))
    assert loaded.config.landmark_raster_scale == 4
    z = torch.zeros(1, 3, 8, 8)
    with pytest.raises(LandmarkTalkError, match=r"landmark_images must be \(1, 3, 32, 32\)"):
        render_latents(loaded, _pool_codec(), pose=z, identity=z, landmark_images=coarse_a,
                       landmark_points=torch.zeros(1, 68, 2), steps=1)
    with pytest.raises(LandmarkTalkError, match="landmark_raster_scale 0"):
        L2VDenoiser(replace(_SMALL, landmark_raster_scale=0))


def test_pose_latents_hide_the_lower_face_only():
    identity_codec = callable_codec("pixels", lambda x: x, lambda z: z, channels=3, downscale=1)
    points, _, _ = _inputs(2, size=64)
    crops = torch.rand(2, 3, 64, 64) * 2 - 1
    pose = encode_pose_latents(identity_codec, crops, points)
    mouth_x, mouth_y = points[1, 62].round().astype(int)
    assert float(pose[1, :, mouth_y, mouth_x].abs().max()) == 0.0
    assert float(pose[1, :, points[1, 8, 1].astype(int) - 1].abs().sum()) > 0  # outside the jaw's width stays
    eyes_y = int(points[1, 37, 1])
    torch.testing.assert_close(pose[:, :, :eyes_y + 3], crops[:, :, :eyes_y + 3])
    # The box does not depend on the mouth: frames differing only in opening get the same mask.
    closed, wide = _inputs(1, size=64, opening=[0.0])[0], _inputs(1, size=64, opening=[1.0])[0]
    flat = torch.ones(1, 3, 64, 64)
    assert torch.equal(encode_pose_latents(identity_codec, flat, closed), encode_pose_latents(identity_codec, flat, wide))
    # Landmarks measured in a 4× larger crop give the same mask once their crop size is said.
    torch.testing.assert_close(encode_pose_latents(identity_codec, crops, points * 4, landmarks_crop_size=256), pose)


def _render(model, codec, frames=6, **kwargs):
    points, image, coords = _inputs(frames)
    pose = torch.randn(frames, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    identity = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    args = dict(pose=pose, identity=identity, landmark_images=image, landmark_points=coords, steps=4)
    args.update(kwargs)
    return render_latents(model, codec, **args)


def test_render_seeds_noise_guidance_and_chunks():
    model, codec = _small_model(), _pool_codec()
    seed = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = _render(model, codec, generator=seed(1))
    assert a.shape == (6, 3, 8, 8) and a.dtype == torch.float32
    torch.testing.assert_close(_render(model, codec, generator=seed(1)), a)
    assert (_render(model, codec, generator=seed(2)) - a).abs().mean() > 1e-3
    # Chunking changes nothing: every chunk starts from the same initial noise.
    torch.testing.assert_close(_render(model, codec, generator=seed(1), chunk_size=4), a)
    torch.testing.assert_close(_render(model, codec, generator=seed(1), chunk_size=1), a)
    noise = torch.randn(3, 8, 8, generator=seed(1))
    torch.testing.assert_close(_render(model, codec, noise=noise), a)
    assert (_render(model, codec, generator=seed(1), guidance=3.0) - a).abs().mean() > 1e-4


def test_every_frame_starts_from_the_same_noise():
    model, codec = _small_model(), _pool_codec()
    points, image, coords = _inputs(1)
    z = torch.randn(1, 3, 8, 8)
    same = render_latents(model, codec, pose=z.expand(5, -1, -1, -1), identity=z, landmark_images=image.expand(5, -1, -1, -1),
                          landmark_points=coords.expand(5, -1, -1), steps=3, generator=torch.Generator().manual_seed(0))
    for frame in same[1:]:
        torch.testing.assert_close(frame, same[0])


def test_progressive_reference_uses_the_previous_generated_frame():
    model, codec = _small_model(), _pool_codec()
    seen = []
    handle = model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["identity"][:1].clone()),
                                         with_kwargs=True)
    try:
        out = _render(model, codec, frames=3, steps=2, chunk_size=1, progressive=1.0,
                      generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(seen) == 3 * 2
    identity = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(seen[0], model.normalize_latents(identity))  # frame 0: the given reference
    torch.testing.assert_close(seen[2], model.normalize_latents(out[0:1]))  # frame 1: generated frame 0
    torch.testing.assert_close(seen[4], model.normalize_latents(out[1:2]))
    previous = torch.zeros(1, 3, 8, 8)
    half = _render(model, codec, frames=1, steps=1, progressive=0.5, previous=previous,
                   generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(half, _render(model, codec, frames=1, steps=1, generator=torch.Generator().manual_seed(0)))


def test_render_progress_counts_all_chunks_and_cancels():
    model, codec = _small_model(), _pool_codec()
    reports = []
    _render(model, codec, chunk_size=4, callback=lambda step, total, x0: reports.append((step, total)))
    assert reports == [(i, 8) for i in range(1, 9)]

    class Cancelled(Exception):
        pass

    def cancel(step, total, x0):
        raise Cancelled

    with pytest.raises(Cancelled):
        _render(model, codec, callback=cancel)
    with pytest.raises(LandmarkTalkError, match="pose must be"):
        _render(model, codec, pose=torch.zeros(6, 3, 4, 4))


def test_bf16_autocast_path_runs_on_cpu_and_keeps_fp32_state():
    model, codec = _small_model(), _pool_codec()
    full = _render(model, codec, generator=torch.Generator().manual_seed(3))
    seen = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    try:
        half = _render(model, codec, generator=torch.Generator().manual_seed(3), dtype=torch.bfloat16)
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16} and half.dtype == torch.float32
    assert float((half - full).abs().mean()) < 0.1 * float(full.abs().mean())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_render_matches_cpu_fp32():
    model, codec = _small_model(), _pool_codec()
    cpu = _render(model, codec, generator=torch.Generator().manual_seed(3))
    gpu = _render(model.cuda(), codec, generator=torch.Generator().manual_seed(3), device="cuda", dtype=torch.bfloat16)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert float((gpu.cpu() - cpu).abs().mean()) < 0.05 * float(cpu.abs().mean()) + 1e-3


def test_partial_denoise_starts_every_frame_from_the_identity_reference():
    model, codec = _small_model(), _pool_codec()
    identity = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    seed = torch.Generator().manual_seed
    full = _render(model, codec, generator=seed(1))
    # At a small strength the sampler starts near the reference and the model only nudges it.
    near = _render(model, codec, generator=seed(1), denoise=0.05)
    assert (near - identity).abs().mean() < 0.2 * (full - identity).abs().mean()
    # In between, the start is the reference noised to that level: same noise, another reference, another frame.
    mid = _render(model, codec, generator=seed(1), denoise=0.5)
    other = _render(model, codec, generator=seed(1), denoise=0.5, identity=identity + 1.0)
    assert (mid - other).abs().mean() > 0.1
    torch.testing.assert_close(_render(model, codec, generator=seed(1), denoise=1.0), full)
