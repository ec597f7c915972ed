"""A2L: shapes, canonical frames, checkpoints, errors, and a tiny real training run on a synthetic cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.audio import compute_audio_features
from pipelines.cache import write_clip_cache
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.models.a2l import (
    A2L, A2LConfig, align_to_reference, from_canonical, lip_opening, predict_landmarks, to_canonical,
)
from pipelines.types import Audio, AudioFeatures, FaceTrack, Landmarks

FPS = 25.0
RATE = 16000


def _template(opening: float = 0.0) -> np.ndarray:
    """A plausible 68-point iBUG face in unit coordinates (eyes at y≈-0.15, mouth at y≈0.3); y points down."""
    p = np.zeros((68, 2))
    theta = np.linspace(np.pi, 0, 17)
    p[0:17] = np.stack([0.45 * np.cos(theta), 0.5 * np.sin(theta)], -1)
    p[17:22] = np.stack([np.linspace(-0.35, -0.1, 5), np.full(5, -0.3)], -1)
    p[22:27] = np.stack([np.linspace(0.1, 0.35, 5), np.full(5, -0.3)], -1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.15, 0.1, 4)], -1)
    p[31:36] = np.stack([np.linspace(-0.08, 0.08, 5), np.full(5, 0.15)], -1)
    for start, cx in ((36, -0.2), (42, 0.2)):
        angles = np.array([np.pi, 2 * np.pi / 3, np.pi / 3, 0, -np.pi / 3, -2 * np.pi / 3])
        p[start:start + 6] = np.stack([cx + 0.08 * np.cos(angles), -0.15 - 0.03 * np.sin(angles)], -1)
    outer = np.linspace(np.pi, -np.pi, 13)[:-1]  # 48 left corner, upper lip left→right, lower right→left
    p[48:60] = np.stack([0.15 * np.cos(outer), 0.3 - 0.05 * np.sin(outer)], -1)
    inner = np.array([np.pi, 3 * np.pi / 4, np.pi / 2, np.pi / 4, 0, -np.pi / 4, -np.pi / 2, -3 * np.pi / 4])
    p[60:68] = np.stack([0.1 * np.cos(inner), 0.3 - 0.01 * np.sin(inner)], -1)
    lower = [55, 56, 57, 58, 59, 65, 66, 67]
    p[lower, 1] += opening
    p[5:12, 1] += 0.6 * opening
    return p


def _synthetic_clip(seconds: float, seed: int):
    """Speech-like bursts of noise and landmarks whose mouth opening follows the burst envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.zeros(n)
    position = int(0.3 * RATE)
    while position < n:
        length = int(rng.uniform(0.12, 0.35) * RATE)
        envelope[position:position + length] = rng.uniform(0.5, 1.0) * np.hanning(min(length, n - position) + 2)[1:-1]
        position += length + int(rng.uniform(0.08, 0.4) * RATE)
    samples = (rng.standard_normal(n) * 0.3 * envelope).astype(np.float32)
    frames = int(round(seconds * FPS))
    centres = ((np.arange(frames) + 0.5) / FPS * RATE).astype(int)
    energy = envelope[np.clip(centres, 0, n - 1)]
    crop = 64
    points = []
    for t in range(frames):
        face = _template(0.12 * energy[t])
        angle = 0.05 * np.sin(t / 30)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        scale = 36 * (1 + 0.04 * np.sin(t / 17))
        points.append(face @ rot.T * scale + np.array([32 + 2 * np.sin(t / 11), 30 + 2 * np.cos(t / 13)]))
    points = np.asarray(points, np.float32)
    return Audio(samples[None], RATE), points, energy, crop


def _write_cache(root, seconds=8.0, seed=0):
    audio, points, energy, crop = _synthetic_clip(seconds, seed)
    t = len(points)
    track = FaceTrack(
        landmarks=points, confidence=np.ones(t, np.float32), transforms=np.tile(np.eye(2, 3, dtype=np.float32), (t, 1, 1)),
        crop_size=crop, frame_size=(crop, crop), fps=FPS, filled=np.zeros(t, bool),
    )
    cache = write_clip_cache(root, crops=np.zeros((t, 8, 8, 3), np.uint8), landmarks=points, track=track, audio=audio,
                             fps=FPS, source=f"synthetic-{seed}")
    return cache, energy


def _tiny() -> A2L:
    torch.manual_seed(0)
    return A2L(A2LConfig.preset("tiny"))


def test_canonical_frame_is_pose_free_and_invertible():
    face = _template(0.05) * 40 + 32
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (face - 32) @ rot.T * 1.7 + np.array([80.0, 20.0])
    canon_a, frame_a = to_canonical(face)
    canon_b, _ = to_canonical(moved)
    np.testing.assert_allclose(canon_a, canon_b, atol=1e-5)
    eyes = [(canon_a[36] + canon_a[39]) / 2, (canon_a[42] + canon_a[45]) / 2]
    np.testing.assert_allclose(eyes, [[-0.5, 0.0], [0.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(from_canonical(canon_a, frame_a), face, atol=1e-3)
    assert lip_opening(_template(0.1)) == pytest.approx(lip_opening(_template(0.0)) + 0.1, abs=1e-6)
    # Rigid alignment undoes a similarity exactly, whatever the mouth does.
    opened = (_template(0.08) - 0) @ rot.T * 1.3 + 5.0
    aligned = align_to_reference(opened, _template(0.0))
    np.testing.assert_allclose(aligned[27:48], _template(0.0)[27:48], atol=1e-5)
    assert lip_opening(aligned) == pytest.approx(lip_opening(_template(0.08)), abs=1e-5)
    with pytest.raises(LandmarkTalkError, match="eyes coincide"):
        to_canonical(np.zeros((68, 2)))


def test_forward_shapes_and_untrained_model_returns_the_reference():
    model = _tiny()
    cfg = model.config
    features = torch.randn(2, 10, cfg.feature_window, cfg.feature_dim)
    reference = torch.from_numpy(to_canonical(_template() * 40 + 32)[0]).expand(2, 68, 2)
    speaker = torch.randn(2, cfg.speaker_dim)
    landmarks, intermediate = model(features, reference, speaker, return_intermediate=True)
    assert landmarks.shape == intermediate.shape == (2, 10, 68, 2)
    # Zero-initialised heads: the untrained model is the still-face baseline.
    torch.testing.assert_close(landmarks, reference[:, None].expand(2, 10, 68, 2))
    with pytest.raises(LandmarkTalkError, match="window=20"):
        model(torch.randn(1, 5, 7, cfg.feature_dim), reference[:1], speaker[:1])


def test_predict_landmarks_follows_reference_pose_and_checks_inputs():
    model = _tiny()
    audio, points, _, crop = _synthetic_clip(1.0, 0)
    feats = compute_audio_features(audio, FPS)
    speaker = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    # One reference frame (a photo): every frame sits in its pose; untrained ⇒ equals it.
    photo = Landmarks(points[:1], crop_size=crop, fps=FPS)
    out = predict_landmarks(model, feats, photo, speaker)
    assert out.points.shape == (25, 68, 2) and out.crop_size == crop and out.fps == FPS
    np.testing.assert_allclose(out.points, np.broadcast_to(points[:1], (25, 68, 2)), atol=1e-3)
    # One reference per frame (a video): each output frame takes its own frame's pose.
    video = Landmarks(points[:25], crop_size=crop, fps=FPS)
    out = predict_landmarks(model, feats, video, speaker, chunk_frames=7)
    eye_centres = out.points[:, [36, 39, 42, 45]].mean(axis=1)
    np.testing.assert_allclose(eye_centres, points[:25, [36, 39, 42, 45]].mean(axis=1), atol=1e-3)
    with pytest.raises(LandmarkTalkError, match="reference: 3 frames for 25 audio frames"):
        predict_landmarks(model, feats, Landmarks(points[:3], crop_size=crop, fps=FPS), speaker)
    with pytest.raises(LandmarkTalkError, match=r"speaker: expected a finite \[256\]"):
        predict_landmarks(model, feats, photo, speaker[:10])
    with pytest.raises(LandmarkTalkError, match="trained on 'logmel80'"):
        predict_landmarks(model, AudioFeatures(feats.features, FPS, "encoder:x"), photo, speaker)


def test_chunked_prediction_matches_one_pass():
    model = _tiny()
    with torch.no_grad():
        for head in (model.context_head, model.identity_head):
            head.weight.normal_(std=0.05)
    audio, points, _, crop = _synthetic_clip(2.0, 1)
    feats = compute_audio_features(audio, FPS)
    speaker = np.ones(256, np.float32) / 16
    reference = Landmarks(points[:1], crop_size=crop, fps=FPS)
    whole = predict_landmarks(model, feats, reference, speaker)
    chunked = predict_landmarks(model, feats, reference, speaker, chunk_frames=9)
    np.testing.assert_allclose(chunked.points, whole.points, atol=1e-4)
    assert np.abs(whole.points - points[:1]).max() > 0.01  # the heads really act


def test_motion_scale_and_centring():
    """motion_scale scales the predicted motion about the start shape; center_motion (a video reference)
    moves its mean over the clip onto the start shape, the video's median mouth, and leaves a photo's motion
    alone."""
    model = _tiny()
    with torch.no_grad():
        for head in (model.context_head, model.identity_head, model.reference_skip):
            head.weight.normal_(std=0.05)
            head.bias.normal_(std=0.05)  # a bias: the motion has a mean to remove
    audio, points, _, crop = _synthetic_clip(2.0, 1)
    feats = compute_audio_features(audio, FPS)
    speaker = np.ones(256, np.float32) / 16
    n = len(feats)
    # A still video (every frame the same): the placement is one similarity, so means can be compared.
    still = Landmarks(np.repeat(points[:1], n, axis=0), crop_size=crop, fps=FPS)
    full = predict_landmarks(model, feats, still, speaker).points
    held = predict_landmarks(model, feats, still, speaker, motion_scale=0.0).points
    half = predict_landmarks(model, feats, still, speaker, motion_scale=0.5).points
    np.testing.assert_allclose(held, np.broadcast_to(points[:1], held.shape), atol=1e-3)  # scale 0: the start shape
    np.testing.assert_allclose(half, (full + held) / 2, atol=1e-3)
    centred = predict_landmarks(model, feats, still, speaker, center_motion=True).points
    assert np.abs(full.mean(axis=0) - points[0]).max() > 0.05  # the motion had drifted off the start shape
    np.testing.assert_allclose(centred.mean(axis=0), points[0], atol=1e-3)
    np.testing.assert_allclose(centred - centred.mean(axis=0), full - full.mean(axis=0), atol=1e-3)  # same motion
    # A video that talks, in one pose: the mouth shut in most frames and open in every fifth, so its median mouth
    # is shut and its mean mouth is not. Centring puts the motion's mean on the median mouth (docs/RESULTS.md:
    # the mean mouth scored closer landmarks but a worse render).
    talking = np.stack([_template(0.12 if t % 5 == 0 else 0.0) * 36 + [32, 30] for t in range(n)]).astype(np.float32)
    video = Landmarks(talking, crop_size=crop, fps=FPS)
    mean_mouth, median_mouth = talking.mean(axis=0), np.median(talking, axis=0)
    assert np.abs(mean_mouth - median_mouth)[48:68].max() > 0.5  # px
    centred = predict_landmarks(model, feats, video, speaker, center_motion=True).points
    np.testing.assert_allclose(centred.mean(axis=0), median_mouth, atol=1e-3)
    half = predict_landmarks(model, feats, video, speaker, center_motion=True, motion_scale=0.5).points
    held = predict_landmarks(model, feats, video, speaker, center_motion=True, motion_scale=0.0).points
    np.testing.assert_allclose(held, np.broadcast_to(median_mouth, held.shape), atol=1e-3)  # scale 0: the median
    np.testing.assert_allclose(half, (centred + held) / 2, atol=1e-3)
    photo = Landmarks(points[:1], crop_size=crop, fps=FPS)
    np.testing.assert_allclose(predict_landmarks(model, feats, photo, speaker, center_motion=True).points,
                               predict_landmarks(model, feats, photo, speaker).points, atol=1e-6)
    with pytest.raises(LandmarkTalkError, match=r"motion scale 3.0: give a factor in \[0, 2\]"):
        predict_landmarks(model, feats, photo, speaker, motion_scale=3.0)


def test_checkpoint_round_trip_and_wrong_kind(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.identity_head.weight.normal_(std=0.05)
    path = save_checkpoint(model, tmp_path / "a2l.safetensors")
    loaded = load_checkpoint(path, "a2l")
    assert loaded.config == model.config
    cfg = model.config
    args = (torch.randn(1, 6, cfg.feature_window, cfg.feature_dim), torch.randn(1, 68, 2), torch.randn(1, cfg.speaker_dim))
    model.eval()
    torch.testing.assert_close(loaded(*args), model(*args))
    with pytest.raises(LandmarkTalkError, match=f"{path}: holds a 'a2l' model, expected 'smoother'"):
        load_checkpoint(path, "smoother")


def test_presets():
    assert A2LConfig.preset("paper").content_dim == 256
    assert A2LConfig.preset("small", hidden_dim=64).hidden_dim == 64
    with pytest.raises(LandmarkTalkError, match="preset 'huge'"):
        A2LConfig.preset("huge")


def train_on_synthetic_clips(tmp_path, config: A2LConfig, steps: int, val_every: int, **task_options):
    """A tiny A2L trained on two synthetic clips whose mouth follows the audio envelope.

    Returns (task, validation loss before training, the training result, r of the held-out lip opening of
    clip 0 with its audio energy, predicted by the saved checkpoint from the first frame as reference)."""
    from pipelines.train import TrainConfig, train_model
    from pipelines.train.a2l_task import A2LTask

    caches, energies = zip(*[_write_cache(tmp_path / f"clip{i}", seed=i) for i in range(2)])
    task = A2LTask(list(caches), config, holdout=0.2, window_seconds=(1.0, 2.0), silence_probability=0.1,
                   **task_options)
    torch.manual_seed(0)
    model = A2L(config)
    with torch.no_grad():
        start = np.mean([float(task.compute_loss(model, b)[0]) for b in task.validation_batches(8)])
    result = train_model(
        model, task, TrainConfig(steps=steps, batch_size=8, learning_rate=5e-3, ema_decay=0.8, val_every=val_every,
                                 log_every=val_every // 3),
        tmp_path / "a2l.safetensors",
    )
    print(f"validation loss {start:.4f} -> {result.final_validation_loss:.4f}")
    trained = load_checkpoint(tmp_path / "a2l.safetensors", "a2l")
    clip = task.clips[0]
    reference = Landmarks(caches[0].landmarks()[:1], crop_size=64, fps=FPS)
    features = AudioFeatures(clip.features[clip.val.start:clip.val.stop], FPS, config.feature_kind)
    predicted = predict_landmarks(trained, features, reference, clip.speaker)
    opening = lip_opening(to_canonical(predicted.points)[0])
    r = np.corrcoef(opening, energies[0][clip.val.start:clip.val.stop])[0, 1]
    print(f"held-out lip opening vs audio energy: r = {r:.3f}")
    return task, start, result, r


def test_tiny_training_learns_mouth_from_audio_energy(tmp_path):
    task, start, result, r = train_on_synthetic_clips(tmp_path, A2LConfig.preset("tiny", speaker_method="logmel"), 120, 60)
    val = task.validation_batches(8)
    assert len(val) == 2 and val[0]["features"].shape[:2] == (3, 40)
    assert result.final_validation_loss < 0.6 * start
    # The mouth really follows the audio on held-out frames (not just a better average shape).
    assert r > 0.6


def test_train_cli_writes_a_checkpoint(tmp_path):
    from pipelines.cli import main

    _write_cache(tmp_path / "caches" / "clip0", seconds=4.0)
    out = tmp_path / "a2l.safetensors"
    code = main(["train", "a2l", "--data", str(tmp_path / "caches"), "--out", str(out), "--preset", "tiny",
                 "--speaker", "logmel", "--steps", "3", "--batch-size", "2", "--val-every", "3"])
    assert code == 0
    model = load_checkpoint(out, "a2l")
    assert model.config.speaker_method == "logmel" and model.config.content_dim == 16


def test_mouth_jaw_model_leaves_eyes_brows_and_nose_at_the_reference():
    torch.manual_seed(0)
    model = A2L(A2LConfig.preset("tiny", driven_points="mouth_jaw"))
    with torch.no_grad():
        for head in (model.context_head, model.identity_head):
            head.weight.normal_(std=0.1)
            head.bias.normal_(std=0.1)
    cfg = model.config
    reference = torch.from_numpy(to_canonical(_template() * 40 + 32)[0])[None]
    out = model.eval()(torch.randn(1, 5, cfg.feature_window, cfg.feature_dim), reference, torch.randn(1, cfg.speaker_dim))
    fixed = list(range(17, 48))
    torch.testing.assert_close(out[0][:, fixed], reference[:, fixed].expand(5, -1, -1))
    assert float((out[0][:, 48:68] - reference[:, 48:68]).abs().min()) > 0
    with pytest.raises(LandmarkTalkError, match="driven_points"):
        A2LConfig(driven_points="eyes")


def test_task_batches_silence_augmentation_and_determinism(tmp_path):
    from pipelines.audio.features import SILENCE_LOGMEL
    from pipelines.train.a2l_task import A2LTask

    cache, _ = _write_cache(tmp_path / "clip", seconds=4.0)
    config = A2LConfig.preset("tiny", speaker_method="logmel")
    silent_task = A2LTask([cache], config, window_seconds=(1.0, 1.5), silence_probability=1.0, silence_weight=4.0)
    batch = silent_task.sample_batch(torch.Generator().manual_seed(0), 3)
    clip = silent_task.clips[0]
    assert torch.all(batch["features"] == SILENCE_LOGMEL) and torch.all(batch["weight"] == 4.0)
    assert torch.all(batch["silent"] == 1.0)
    # Targets: the reference with the speaker's closed mouth and jaw, held for the whole window.
    target = batch["target"][0].numpy()
    closed_level = np.percentile(lip_opening(clip.canonical[clip.train.start:clip.train.stop]), 10)
    assert lip_opening(clip.closed_shape) <= closed_level + 1e-6
    np.testing.assert_allclose(lip_opening(target), lip_opening(clip.closed_shape), rtol=0.02)
    assert np.all(target == target[:1])  # held still for the whole window
    np.testing.assert_array_equal(target[0, 17:48], batch["reference"][0, 17:48].numpy())

    task = A2LTask([cache], config, window_seconds=(1.0, 1.5), silence_probability=0.0)
    a = task.sample_batch(torch.Generator().manual_seed(5), 4)
    b = task.sample_batch(torch.Generator().manual_seed(5), 4)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert 25 <= a["features"].shape[1] <= 38 and a["features"].shape[0] == 4
    assert torch.all(a["weight"] == 1.0) and not a["silent"].any()
    # Training windows never reach into the held-out tail.
    assert clip.train.stop == 80 and task.window_frames[1] <= 80


def test_mean_shape_start_untrained_model_returns_the_speakers_mean_mouth():
    torch.manual_seed(0)
    model = A2L(A2LConfig.preset("tiny", mouth_start="mean_shape"))
    cfg = model.config
    reference = torch.from_numpy(to_canonical(_template(0.08) * 40 + 32)[0])[None]
    mean_shape = torch.from_numpy(to_canonical(_template(0.02) * 40 + 32)[0])[None]
    args = (torch.randn(1, 6, cfg.feature_window, cfg.feature_dim), reference, torch.randn(1, cfg.speaker_dim))
    out = model(*args, mean_shape=mean_shape)[0]
    driven = list(range(0, 17)) + list(range(48, 68))
    torch.testing.assert_close(out[:, driven], mean_shape[:, driven].expand(6, -1, -1))
    torch.testing.assert_close(out[:, 17:48], reference[:, 17:48].expand(6, -1, -1))
    torch.testing.assert_close(model(*args), reference.expand(6, 68, 2)[None])  # no mean shape given: the reference
    # Through predict_landmarks: a photo reference with an open mouth plus frames of the speaker → the mean
    # of those frames' mouths laid onto the photo (the mean-mouth baseline), in the photo's pose.
    audio, points, _, crop = _synthetic_clip(1.0, 0)
    feats = compute_audio_features(audio, FPS)
    speaker = np.ones(256, np.float32) / 16
    photo = Landmarks(points[12:13], crop_size=crop, fps=FPS)
    predicted = predict_landmarks(model, feats, photo, speaker, speaker_frames=points).points
    photo_canon, photo_frame = to_canonical(photo.points[0])
    expected = align_to_reference(to_canonical(points)[0], photo_canon).mean(axis=0)
    expected_px = from_canonical(expected, photo_frame)
    np.testing.assert_allclose(predicted[:, 48:68], np.broadcast_to(expected_px[48:68], (25, 20, 2)), atol=1e-3)
    assert abs(lip_opening(expected) - lip_opening(photo_canon)) > 1e-3  # the photo's own mouth really was different
    with pytest.raises(LandmarkTalkError, match="speaker_frames"):
        predict_landmarks(model, feats, photo, speaker, speaker_frames=points[0])
    with pytest.raises(LandmarkTalkError, match="mouth_start"):
        A2LConfig(mouth_start="mean")


def test_shape_basis_model_moves_only_within_the_basis(tmp_path):
    from pipelines.train.a2l_task import A2LTask

    cache, _ = _write_cache(tmp_path / "clip", seconds=4.0)
    config = A2LConfig.preset("tiny", speaker_method="logmel", mouth_components=3)
    task = A2LTask([cache], config, window_seconds=(1.0, 1.5))
    torch.manual_seed(0)
    model = A2L(config)
    basis = task.shape_basis(model)
    assert basis.shape == (3, 136) and np.isfinite(basis).all()
    assert np.all(basis.reshape(3, 68, 2)[:, 17:48] == 0)  # non-driven points never move
    # The synthetic mouth opens along one direction: the first component is it (lower lip down, jaw down).
    opening = (to_canonical(_template(0.1))[0] - to_canonical(_template(0.0))[0]).reshape(-1)
    cosine = abs(basis[0] @ opening) / np.linalg.norm(basis[0]) / np.linalg.norm(opening)
    assert cosine > 0.9
    model.set_shape_basis(basis)
    with torch.no_grad():
        for head in (model.context_head, model.identity_head):
            head.weight.normal_(std=0.1)
            head.bias.normal_(std=0.1)
    reference = torch.from_numpy(task.clips[0].canonical[0])[None]
    out = model.eval()(torch.randn(1, 5, config.feature_window, config.feature_dim), reference, torch.from_numpy(task.clips[0].speaker)[None])
    moved = (out[0] - reference).reshape(5, -1).detach().numpy()
    in_span = moved @ np.linalg.pinv(basis) @ basis
    np.testing.assert_allclose(moved, in_span, atol=1e-5)
    assert np.abs(moved).max() > 1e-3
    # The basis is saved with the model and restored.
    path = save_checkpoint(model, tmp_path / "a2l.safetensors")
    torch.testing.assert_close(load_checkpoint(path, "a2l").shape_basis, model.shape_basis)
    with pytest.raises(LandmarkTalkError, match=r"expected a finite \[3, 136\]"):
        model.set_shape_basis(np.zeros((2, 136)))
    with pytest.raises(LandmarkTalkError, match="predicts free coordinates"):
        A2L(A2LConfig.preset("tiny")).set_shape_basis(basis)


def test_inner_holdout_validates_inside_the_training_part(tmp_path):
    from pipelines.train.a2l_task import A2LTask

    cache, _ = _write_cache(tmp_path / "clip", seconds=4.0)  # 100 frames: 80 train, 20 held out
    config = A2LConfig.preset("tiny", speaker_method="logmel", mouth_start="mean_shape")
    task = A2LTask([cache], config, holdout=0.2, inner_holdout=0.25, window_seconds=(1.0, 1.5))
    clip = task.clips[0]
    assert (clip.train, clip.val) == (range(0, 60), range(60, 80))  # the held-out 80..99 is never touched
    assert task.window_frames[1] <= 60
    batch = task.sample_batch(torch.Generator().manual_seed(0), 2)
    val = task.validation_batches(4)[0]
    assert val["features"].shape[1] == 20 and batch["mean_shape"].shape == (2, 68, 2)
    # The mean shape is the training frames laid onto the reference, averaged: its mouth is the mean mouth.
    expected = align_to_reference(clip.canonical[:60], val["reference"][0].numpy()).mean(axis=0)
    np.testing.assert_allclose(val["mean_shape"][0].numpy(), expected, atol=1e-4)
    with pytest.raises(LandmarkTalkError, match="inner holdout"):
        A2LTask([cache], config, inner_holdout=1.5)


def test_checkpoint_without_the_new_config_fields_still_loads(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    model = _tiny()
    path = save_checkpoint(model, tmp_path / "a2l.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    fields = json.loads(meta["landmarktalk.config"])
    del fields["mouth_start"], fields["mouth_components"]  # as written before these fields existed
    meta["landmarktalk.config"] = json.dumps(fields)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_checkpoint(tmp_path / "old.safetensors", "a2l")
    assert old.config.mouth_start == "reference" and old.config.mouth_components == 0


def test_train_cli_sets_the_shape_basis_and_mean_start(tmp_path):
    from pipelines.cli import main

    _write_cache(tmp_path / "caches" / "clip0", seconds=4.0)
    out = tmp_path / "a2l.safetensors"
    code = main(["train", "a2l", "--data", str(tmp_path / "caches"), "--out", str(out), "--preset", "tiny",
                 "--speaker", "logmel", "--steps", "2", "--batch-size", "2", "--val-every", "2",
                 "--mouth-start", "mean_shape", "--mouth-components", "3", "--inner-holdout", "0.25"])
    assert code == 0
    model = load_checkpoint(out, "a2l")
    assert model.config.mouth_start == "mean_shape" and model.config.mouth_components == 3
    assert float(model.shape_basis.abs().sum()) > 0  # fitted from the training mouths, not left at zero
    assert model.checkpoint_metadata["landmarktalk.inner_holdout"] == "0.25"


def test_train_cli_fine_tunes_from_an_init_checkpoint_keeping_its_settings(tmp_path):
    """`train a2l --init` starts from the checkpoint's weights (at learning rate 0 they come out unchanged),
    keeps its settings over --preset, keeps a PCA model's basis, and records where it started."""
    from pipelines.cli import main

    _write_cache(tmp_path / "many" / "clip0", seconds=4.0, seed=0)
    _write_cache(tmp_path / "person" / "clip1", seconds=4.0, seed=1)
    common = ["--speaker", "logmel", "--batch-size", "2", "--val-every", "2", "--ema-decay", "0"]
    pretrained = tmp_path / "pretrained.safetensors"
    assert main(["train", "a2l", "--data", str(tmp_path / "many"), "--out", str(pretrained), "--preset", "tiny",
                 "--steps", "3", "--mouth-components", "3", *common]) == 0
    frozen, tuned = tmp_path / "frozen.safetensors", tmp_path / "tuned.safetensors"
    init = ["train", "a2l", "--data", str(tmp_path / "person"), "--init", str(pretrained), "--preset", "paper",
            "--steps", "2", *common]
    assert main(init + ["--out", str(frozen), "--lr", "0"]) == 0
    assert main(init + ["--out", str(tuned)]) == 0
    start, same, moved = (load_checkpoint(p, "a2l") for p in (pretrained, frozen, tuned))
    assert same.config == start.config and same.config.content_dim == 16  # tiny, not --preset paper
    for key, value in start.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value)
    torch.testing.assert_close(moved.shape_basis, start.shape_basis)  # not refitted to the person's mouths
    assert any(not torch.equal(moved.state_dict()[k], v) for k, v in start.state_dict().items())
    assert moved.checkpoint_metadata["landmarktalk.init"] == str(pretrained)
