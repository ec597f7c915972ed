"""DAE-Talker path: model shapes and checkpoints, DDIM inversion, speech2latent learning, head pose, fit + holdout."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipelines.cache import write_clip_cache
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.dae import (decode_latents, estimate_head_pose, evaluate_dae_holdout, fit_dae, invert_crops, pose_curve,
                           render_dae_frames)
from pipelines.errors import LandmarkTalkError
from pipelines.models.dae import DAEConfig, DiffusionAutoencoder, Speech2LatentConfig, SpeechToLatent
from pipelines.train import TrainConfig, train_model
from pipelines.train.dae_task import DAETask, crops_to_tensor
from pipelines.train.speech2latent_task import Speech2LatentTask
from pipelines.types import Audio, FaceTrack
from test_l2v_synthetic import FPS, draw_face, face_landmarks, synthetic_face_clip

TINY_DAE = DAEConfig(image_size=32, latent_dim=16, encoder_channels=(8, 16, 16), block_channels=(8, 16),
                     attention=(False, True), norm_groups=4, attention_heads=2)
TINY_S2L = Speech2LatentConfig(latent_dim=16, model_dim=32, layers=1, heads=2, conv_kernel=5, ff_mult=2,
                               dropout=0.0, context_frames=16)


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine's cores are shared; one intra-op thread avoids contention stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _speech_following(opening: np.ndarray, fps: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced buzz whose loudness follows ``opening`` frame by frame (silence when closed)."""
    n = int(len(opening) / fps * rate)
    t = np.arange(n) / rate
    envelope = np.interp(t, (np.arange(len(opening)) + 0.5) / fps, opening) ** 2
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    return (0.3 * envelope * buzz + noise).astype(np.float32)[None]


def _write_cache(root, num_frames: int = 40, size: int = 32, still_head: bool = False):
    crops, points, opening = synthetic_face_clip(num_frames, size)
    if still_head:  # only the mouth moves, so everything in z_sem is explained by the speech
        points = np.stack([face_landmarks(size * 0.5, size * 0.45, o, size) for o in opening]).astype(np.float32)
        crops = np.stack([draw_face(p, size) for p in points])
    transforms = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (num_frames, 1, 1))
    track = FaceTrack(landmarks=points, confidence=np.ones(num_frames, np.float32), transforms=transforms,
                      crop_size=size, frame_size=(size, size), fps=FPS, filled=np.zeros(num_frames, bool))
    audio = Audio(samples=_speech_following(opening, FPS), sample_rate=16000)
    cache = write_clip_cache(root, crops=crops, landmarks=points, track=track, audio=audio, fps=FPS,
                             source="synthetic-face")
    return cache, opening


def test_shapes_and_input_checks():
    torch.manual_seed(0)
    dae = DiffusionAutoencoder(TINY_DAE)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    z = dae.encode(images)
    assert z.shape == (3, 16)
    assert dae(images, torch.tensor([1, 500, 999]), z).shape == (3, 3, 32, 32)
    with pytest.raises(LandmarkTalkError, match=r"\[B, 3, 32, 32\]"):
        dae.encode(torch.zeros(1, 3, 64, 64))
    s2l = SpeechToLatent(TINY_S2L)
    out = s2l(torch.randn(2, 12, 20, 80), torch.randn(2, 12, 3))
    assert out.shape == (2, 12, 16)
    with pytest.raises(LandmarkTalkError, match="audio features"):
        s2l(torch.randn(2, 12, 10, 80), torch.randn(2, 12, 3))
    with pytest.raises(LandmarkTalkError, match="pose"):
        s2l(torch.randn(2, 12, 20, 80), torch.randn(2, 11, 3))


def test_checkpoints_round_trip_for_both_kinds(tmp_path):
    torch.manual_seed(0)
    dae, s2l = DiffusionAutoencoder(TINY_DAE).eval(), SpeechToLatent(TINY_S2L).eval()
    s2l.latent_mean.fill_(0.5)
    s2l.latent_std.fill_(2.0)
    save_checkpoint(dae, tmp_path / "dae.safetensors")
    save_checkpoint(s2l, tmp_path / "s2l.safetensors")
    dae2, s2l2 = load_checkpoint(tmp_path / "dae.safetensors", "dae"), load_checkpoint(tmp_path / "s2l.safetensors",
                                                                                      "speech2latent")
    assert dae2.config == TINY_DAE and s2l2.config == TINY_S2L
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(dae.encode(images), dae2.encode(images))
        assert torch.equal(dae(images, torch.tensor([10, 20]), dae.encode(images)),
                           dae2(images, torch.tensor([10, 20]), dae2.encode(images)))
    audio, pose = torch.randn(1, 8, 20, 80), torch.randn(1, 8, 3)
    assert torch.equal(s2l.predict_latents(audio, pose), s2l2.predict_latents(audio, pose))
    assert float(s2l2.latent_std[0]) == 2.0  # the normalisation buffers travel with the weights
    with pytest.raises(LandmarkTalkError, match="s2l.safetensors"):
        load_checkpoint(tmp_path / "s2l.safetensors", "dae")


def test_ddim_inversion_then_decoding_gives_the_reference_back(tmp_path):
    cache, _ = _write_cache(tmp_path / "cache", num_frames=40)
    torch.manual_seed(0)
    dae = DiffusionAutoencoder(TINY_DAE)
    task = DAETask([cache], 0.2, TINY_DAE)
    train_model(dae, task, TrainConfig(steps=100, batch_size=8, learning_rate=2e-3, ema_decay=0, val_every=0,
                                       log_every=50, save_every=1000), tmp_path / "dae.safetensors")
    dae.eval()
    reference = crops_to_tensor(cache.crops()[35:36], 32)
    z = dae.encode(reference)
    noise = invert_crops(dae, reference, z, steps=20)
    assert noise.shape == reference.shape
    inverted = decode_latents(dae, z, noise, steps=20)
    random = decode_latents(dae, z, torch.randn(reference.shape, generator=torch.Generator().manual_seed(0)), steps=20)
    inverted_error = float((inverted - reference).pow(2).mean())
    random_error = float((random - reference).pow(2).mean())
    assert inverted_error < 0.1 * random_error, (inverted_error, random_error)
    # The same x_T decodes a whole z_sem sequence (one code for every frame).
    frames = decode_latents(dae, dae.encode(crops_to_tensor(cache.crops()[:4], 32)), noise, steps=5)
    assert frames.shape == (4, 3, 32, 32)


def test_speech2latent_learns_z_from_speech(tmp_path):
    cache, opening = _write_cache(tmp_path / "cache", num_frames=200, still_head=True)
    torch.manual_seed(0)
    dae = DiffusionAutoencoder(TINY_DAE).eval()  # a fixed random encoder: z_sem still follows the mouth
    task = Speech2LatentTask([cache], 0.2, dae, TINY_S2L)
    model = SpeechToLatent(TINY_S2L)
    for name, value in task.statistics().items():
        getattr(model, name).copy_(value)
    with torch.no_grad():
        before = [float(task.compute_loss(model.eval(), b)[0]) for b in task.validation_batches(8)]
    result = train_model(model.train(), task, TrainConfig(steps=150, batch_size=8, learning_rate=2e-3, ema_decay=0,
                                                         val_every=150, log_every=25, save_every=1000),
                         tmp_path / "s2l.safetensors")
    losses = result.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    # Held-out tail: better than the untrained model and than predicting the training mean (loss of 0s).
    mean_baseline = [float(model.normalize_latents(b["latents"]).abs().mean() + model.normalize_latents(b["latents"]).pow(2).mean())
                     for b in task.validation_batches(8)]
    assert result.final_validation_loss < 0.8 * min(np.mean(before), np.mean(mean_baseline)), (
        result.final_validation_loss, np.mean(before), np.mean(mean_baseline))


def _rotated_face(yaw: float, pitch: float, rng) -> np.ndarray:
    """A 3D face of its own (ellipsoidal head, different nose) rotated and projected with a pinhole camera."""
    from pipelines.face._geometry import TEMPLATE

    x, y = TEMPLATE[:, 0] - 0.5, TEMPLATE[:, 1] - 0.5
    depth = 0.4 - np.sqrt(np.maximum(0.4 ** 2 - x ** 2 - 0.3 * y ** 2, 0))
    depth[27:36] -= np.array([0.03, 0.06, 0.09, 0.12, 0.05, 0.07, 0.08, 0.07, 0.05])
    face = np.stack([x, y, depth], axis=1)
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    # Turn the head so its nose goes towards +x for yaw > 0 (x right, y down, z away from the camera).
    rot_y = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rot_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    points = face @ (rot_y @ rot_x).T + np.array([0.02, -0.01, 2.5])
    return points[:, :2] / points[:, 2:] * 500 + 128 + rng.normal(0, 0.3, (68, 2))


def test_head_pose_yaw_follows_a_rotated_face():
    rng = np.random.default_rng(0)
    yaw = np.radians(30) * np.sin(np.linspace(0, 4 * np.pi, 60))
    pitch = np.radians(8) * rng.standard_normal(60)
    points = np.stack([_rotated_face(a, b, rng) for a, b in zip(yaw, pitch)])
    nose = points[:, 30, 0] - points[:, :, 0].mean(axis=1)
    assert np.corrcoef(nose, yaw)[0, 1] > 0.9  # the synthetic turn really moves the nose to +x
    pose = estimate_head_pose(points)
    assert pose.shape == (60, 3)
    assert np.sign(pose[np.abs(yaw) > 0.1, 0]).tolist() == np.sign(yaw[np.abs(yaw) > 0.1]).tolist()
    assert np.corrcoef(pose[:, 0], yaw)[0, 1] > 0.9
    assert np.corrcoef(pose[:, 1], pitch)[0, 1] > 0.5  # pitch is harder (no depth cue) but follows
    assert np.isnan(estimate_head_pose(np.full((1, 68, 2), np.nan))).all()


def test_pose_curve_parses_sines_and_keys():
    pose = pose_curve("yaw: sin 10 2.0\npitch: 0, 20", 51, 25.0)
    assert pose.shape == (51, 3)
    assert np.isclose(np.degrees(pose[:, 0]).max(), 10, atol=0.2)
    assert np.isclose(np.degrees(pose[12, 0]), 10 * math.sin(2 * math.pi * 12 / 25 / 2.0), atol=1e-3)
    assert np.isclose(np.degrees(pose[-1, 1]), 20) and np.isclose(np.degrees(pose[25, 1]), 10)
    assert (pose[:, 2] == 0).all()
    with pytest.raises(LandmarkTalkError, match="yaw: sin 10 2.0"):
        pose_curve("tilt: 5", 10, 25.0)


def test_fit_render_and_holdout_end_to_end(tmp_path):
    cache, _ = _write_cache(tmp_path / "cache", num_frames=30, size=64)
    out = tmp_path / "fit"
    record = fit_dae(cache.root, out, holdout=0.2, steps=2, speech2latent_steps=2, batch_size=2)
    assert (out / "dae.safetensors").is_file() and (out / "speech2latent.safetensors").is_file()
    assert set(record["seconds"]) == {"dae", "speech2latent"}
    dae, s2l = load_checkpoint(out / "dae.safetensors", "dae"), load_checkpoint(out / "speech2latent.safetensors",
                                                                               "speech2latent")
    fit_dae(cache.root, out, holdout=0.2, steps=2, speech2latent_steps=2, batch_size=2)
    again = load_checkpoint(out / "dae.safetensors", "dae").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in dae.state_dict().items())  # finished models are not retrained
    speech = Audio(samples=_speech_following(np.linspace(0, 1, 13), FPS), sample_rate=16000)
    chunks = list(render_dae_frames(dae, s2l, speech, FPS, cache.crops()[0], pose_curve("yaw: sin 5 0.4", 13, FPS),
                                    steps=3, chunk_frames=5))
    assert [len(c) for c in chunks] == [5, 5, 3] and chunks[0].shape[1:] == (64, 64, 3) and chunks[0].dtype == np.uint8
    with pytest.raises(LandmarkTalkError, match="pose"):
        next(render_dae_frames(dae, s2l, speech, FPS, cache.crops()[0], np.zeros((12, 3)), steps=2))
    summary = evaluate_dae_holdout(out, steps=3)
    assert summary["holdout_frames"] == 6
    assert set(summary["metrics"]) == {"dae", "still", "reconstruction"}
    still = summary["metrics"]["still"]
    assert 0 < still["ssim"] <= 1 and still["psnr"] > 10
    assert json.loads((out / "dae_holdout.json").read_text())["metrics"]["dae"]["psnr"] == summary["metrics"]["dae"]["psnr"]


@pytest.mark.skipif(not __import__("comfy_harness").comfy_available(), reason=__import__("comfy_harness").SKIP_REASON)
def test_nodes_load_encode_predict_and_decode(tmp_path):
    from comfy_harness import comfy_audio, pack_module, use_scratch_folders

    models_dir = use_scratch_folders(tmp_path)
    checkpoint, dae_module = pack_module("pipelines.checkpoint"), pack_module("pipelines.models.dae")
    torch.manual_seed(0)
    checkpoint.save_checkpoint(dae_module.DiffusionAutoencoder(dae_module.DAEConfig(**TINY_DAE.__dict__)),
                               models_dir / "dae.safetensors")
    checkpoint.save_checkpoint(dae_module.SpeechToLatent(dae_module.Speech2LatentConfig(**TINY_S2L.__dict__)),
                               models_dir / "s2l.safetensors")
    nodes = pack_module("nodes.dae")
    assert nodes.LandmarkTalkLoadDAE.define_schema().inputs[0].options == ["dae.safetensors"]
    assert nodes.LandmarkTalkLoadSpeech2Latent.define_schema().inputs[0].options == ["s2l.safetensors"]
    dae = nodes.LandmarkTalkLoadDAE.execute(model_name="dae.safetensors").result[0]
    s2l = nodes.LandmarkTalkLoadSpeech2Latent.execute(model_name="s2l.safetensors").result[0]
    crops, _, opening = synthetic_face_clip(6, 48)
    image = torch.from_numpy(crops).float() / 255
    z = nodes.LandmarkTalkEncodeSemanticLatents.execute(dae=dae, crops=image).result[0]
    assert z.shape == (6, 16)
    audio = comfy_audio(_speech_following(np.linspace(0, 1, 10), FPS)[0], 16000)
    z_speech = nodes.LandmarkTalkSpeechToLatents.execute(speech2latent=s2l, audio=audio, fps=FPS,
                                                         pose_curve="yaw: sin 10 0.4").result[0]
    assert z_speech.shape == (10, 16)
    _, points, _ = synthetic_face_clip(4, 48)
    track = FaceTrack(landmarks=points, confidence=np.ones(4, np.float32), crop_size=48, frame_size=(48, 48), fps=FPS,
                      transforms=np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (4, 1, 1)))
    driven = nodes.LandmarkTalkSpeechToLatents.execute(speech2latent=s2l, audio=audio, fps=FPS, driving_face_track=track,
                                                       pose_curve="").result[0]
    assert driven.shape == (10, 16) and not torch.equal(driven, z_speech)  # the driving pose changes the latents
    out = nodes.LandmarkTalkDAEDecode.execute(dae=dae, z_sem=z_speech, reference=image[:1], steps=2,
                                              chunk_frames=4).result[0]
    assert out.shape == (10, 32, 32, 3) and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="yaw: sin"):
        nodes.LandmarkTalkSpeechToLatents.execute(speech2latent=s2l, audio=audio, fps=FPS, pose_curve="nod: 3")


def test_render_dae_video_pastes_decoded_crops_into_a_photo(tmp_path, shared_data):
    from pipelines.dae import render_dae_video
    import soundfile

    from pipelines.media import probe_media

    torch.manual_seed(0)
    save_checkpoint(DiffusionAutoencoder(TINY_DAE), tmp_path / "dae.safetensors")
    save_checkpoint(SpeechToLatent(TINY_S2L), tmp_path / "speech2latent.safetensors")
    soundfile.write(tmp_path / "speech.wav", _speech_following(np.linspace(0, 1, 10), FPS)[0], 16000)
    out = render_dae_video(shared_data / "images" / "happy.png", tmp_path / "speech.wav", tmp_path,
                           tmp_path / "out.mp4", pose="yaw: sin 5 0.4", steps=2, chunk_frames=4)
    info = probe_media(out)
    assert info.frame_count == 10 and info.has_audio
    with pytest.raises(FileNotFoundError, match="speech2latent.safetensors"):
        (tmp_path / "speech2latent.safetensors").unlink()
        render_dae_video(shared_data / "images" / "happy.png", tmp_path / "speech.wav", tmp_path, tmp_path / "o.mp4")


def test_cli_fit_and_render_take_the_dae_path(tmp_path, shared_data):
    import soundfile

    from pipelines.cli import main as cli_main
    from pipelines.media import probe_media

    cache, _ = _write_cache(tmp_path / "cache", num_frames=30, size=64)
    models = tmp_path / "models"
    assert cli_main(["fit", str(cache.root), "--path", "dae", "--out", str(models), "--steps", "2",
                     "--holdout", "0.2", "--render-steps", "2"]) == 0
    assert (models / "dae.safetensors").is_file() and (models / "speech2latent.safetensors").is_file()
    assert set(json.loads((models / "dae_holdout.json").read_text())["metrics"]) == {"dae", "still", "reconstruction"}
    soundfile.write(tmp_path / "speech.wav", _speech_following(np.linspace(0, 1, 8), FPS)[0], 16000)
    out = tmp_path / "out.mp4"
    assert cli_main(["render", "--path", "dae", "--face", str(shared_data / "images" / "happy.png"),
                     "--audio", str(tmp_path / "speech.wav"), "--models", str(models), "--out", str(out),
                     "--steps", "2", "--pose", "yaw: sin 5 0.4"]) == 0
    assert probe_media(out).frame_count == 8
    # a pose curve on the L2V path is refused with the fix in the message
    assert cli_main(["render", "--face", str(shared_data / "images" / "happy.png"), "--audio",
                     str(tmp_path / "speech.wav"), "--models", str(models), "--out", str(tmp_path / "x.mp4"),
                     "--pose", "yaw: sin 5 0.4"]) != 0
