"""Streaming render: audio features, A2L landmarks and muxing a window at a time equal the whole-clip results.

The render reads long speech a stretch at a time (memory flat in its length); these tests make that
streaming exact: feature windows bit for bit, landmarks to float tolerance (the LSTM state carried across
windows, the temporal smoother given its context on both sides, the reference's identity shape and
per-frame placement as for the whole clip), and the encoder muxing audio straight from a decoded file.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from pipelines.audio import compute_audio_features
from pipelines.audio.features import iter_audio_features
from pipelines.errors import LandmarkTalkError
from pipelines.media import VideoWriter, decode_audio_file, probe_media, read_audio
from pipelines.models.a2l import A2L, A2LConfig, mean_landmark_motion, predict_landmarks, stream_landmarks
from pipelines.schedule import source_frame_schedule
from pipelines.types import Audio, FaceTrack, Landmarks, frame_count_for

FPS = 25.0


def _speech(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """[channels, N] syllable-like bursts of harmonics and noise, with silent gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t) + 0.4 * np.sin(2 * np.pi * 0.9 * t), 0, None)
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((130, 260, 390, 650, 1300), 1))
    mono = 0.2 * envelope * voice + 0.02 * rng.standard_normal(len(t))
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)]).astype(np.float32)


def _face(opening: float = 0.0) -> np.ndarray:
    """A 68-point face in a 64 px crop: jaw, brows, nose, eyes, lips (mouth opened by ``opening``)."""
    p = np.zeros((68, 2))
    theta = np.linspace(np.pi, 0, 17)
    p[0:17] = np.stack([0.45 * np.cos(theta), 0.5 * np.sin(theta)], -1)
    p[17:27] = np.stack([np.r_[np.linspace(-0.35, -0.1, 5), np.linspace(0.1, 0.35, 5)], np.full(10, -0.3)], -1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.15, 0.1, 4)], -1)
    p[31:36] = np.stack([np.linspace(-0.08, 0.08, 5), np.full(5, 0.15)], -1)
    angles = np.linspace(np.pi, -np.pi, 7)[:-1]
    p[36:42] = np.stack([-0.2 + 0.08 * np.cos(angles), -0.15 + 0.03 * np.sin(angles)], -1)
    p[42:48] = np.stack([0.2 + 0.08 * np.cos(angles), -0.15 + 0.03 * np.sin(angles)], -1)
    outer = np.linspace(np.pi, -np.pi, 13)[:-1]
    p[48:60] = np.stack([0.15 * np.cos(outer), 0.3 - 0.05 * np.sin(outer)], -1)
    inner = np.linspace(np.pi, -np.pi, 9)[:-1]
    p[60:68] = np.stack([0.1 * np.cos(inner), 0.3 - 0.01 * np.sin(inner)], -1)
    p[[55, 56, 57, 58, 59, 65, 66, 67], 1] += opening
    return p * 40 + 32


def _source_points(count: int, seed: int = 0) -> np.ndarray:
    """``count`` frames of a moving, talking face (pose and mouth change every frame)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(count):
        angle = 0.08 * np.sin(t / 2)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        face = (_face(rng.uniform(0, 0.1)) - 32) @ rot.T * (1 + 0.05 * np.cos(t)) + 32 + rng.normal(0, 1.5, 2)
        frames.append(face)
    return np.asarray(frames, np.float32)


def _random_a2l(**overrides) -> A2L:
    """A tiny A2L whose every weight is random (heads included), so its output depends on every input."""
    torch.manual_seed(0)
    model = A2L(A2LConfig.preset("tiny", smoother_half_window=3, **overrides))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.15)
    return model


def _speaker(model: A2L) -> np.ndarray:
    return np.random.default_rng(3).standard_normal(model.config.speaker_dim).astype(np.float32) * 0.3


def _streamed(model, audio, reference, window_frames, **kwargs) -> np.ndarray:
    windows = iter_audio_features(audio, FPS, window=model.config.feature_window, window_frames=window_frames)
    parts = list(stream_landmarks(model, windows, reference, _speaker(model), **kwargs))
    assert all(part.crop_size == reference.crop_size and part.fps == FPS for part in parts)
    return np.concatenate([part.points for part in parts])


# ------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("rate, channels, fps, window_frames", [
    (16000, 1, 25.0, 7), (16000, 2, 29.97, 2), (22050, 2, 30.0, 13), (16000, 1, 24.0, 100_000),
])
def test_streamed_feature_windows_equal_the_whole_clip_exactly(rate, channels, fps, window_frames):
    # 15.3 s: two 10 s log-mel blocks, so windows straddle their seam
    audio = Audio(_speech(15.3, rate, channels), rate)
    whole = compute_audio_features(audio, fps)
    windows = list(iter_audio_features(audio, fps, window_frames=window_frames))
    assert [len(w) for w in windows[:-1]] == [window_frames] * (len(windows) - 1)
    assert all(w.fps == fps and w.kind == "logmel80" for w in windows)
    np.testing.assert_array_equal(np.concatenate([w.features for w in windows]), whole.features)
    # frame counts that run past the audio's end (padded with silence; at twice its length whole windows
    # lie past it) or stop short of it
    for frames in (len(whole) + 9, 2 * len(whole), len(whole) - 4):
        expected = compute_audio_features(audio, fps, num_frames=frames).features
        streamed = np.concatenate([w.features for w in iter_audio_features(audio, fps, num_frames=frames,
                                                                           window_frames=window_frames)])
        np.testing.assert_array_equal(streamed, expected)


def test_features_read_from_a_decoded_file_equal_those_of_the_samples(tmp_path):
    source = tmp_path / "speech.wav"
    sf.write(source, _speech(12.5, 44100, 2).T, 44100, subtype="FLOAT")
    decoded = decode_audio_file(source, tmp_path / "speech_16k.f32", sample_rate=16000)
    in_memory = read_audio(source, sample_rate=16000)
    assert (decoded.sample_rate, decoded.channels, decoded.num_samples) == (16000, 2, in_memory.samples.shape[1])
    np.testing.assert_array_equal(decoded.read(0, decoded.num_samples), in_memory.samples)
    np.testing.assert_array_equal(decoded.read(1000, 1234), in_memory.samples[:, 1000:1234])
    whole = compute_audio_features(read_audio(source, sample_rate=16000, mono=True), FPS)
    streamed = np.concatenate([w.features for w in iter_audio_features(decoded, FPS, window_frames=11)])
    np.testing.assert_array_equal(streamed, whole.features)


def test_a_file_with_bad_or_no_audio_is_refused_and_nothing_left(tmp_path):
    samples = _speech(1.0)[0]
    samples[8000] = np.nan
    source = tmp_path / "nan.wav"
    sf.write(source, samples, 16000, subtype="FLOAT")
    with pytest.raises(LandmarkTalkError, match=r"NaN or infinite samples \(first at 0.500 s\)"):
        decode_audio_file(source, tmp_path / "nan.f32")
    assert not (tmp_path / "nan.f32").exists()
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, fps=FPS, preset="ultrafast") as writer:
        writer.write(np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(LandmarkTalkError, match="has no audio stream"):
        decode_audio_file(silent, tmp_path / "silent.f32")
    assert not (tmp_path / "silent.f32").exists()


# ------------------------------------------------------------------------------------------ landmarks


@pytest.mark.parametrize("mouth_start", ["reference", "mean_shape"])
@pytest.mark.parametrize("window_frames", [1, 2, 7, 1000])
def test_streamed_landmarks_equal_the_whole_clip(mouth_start, window_frames):
    model = _random_a2l(mouth_start=mouth_start)
    audio = Audio(_speech(4.0), 16000)
    features = compute_audio_features(audio, FPS)
    total = len(features)
    points = _source_points(9)
    # a photo: every frame in its pose
    photo = Landmarks(points[:1], crop_size=64, fps=FPS)
    expected = predict_landmarks(model, features, photo, _speaker(model)).points
    np.testing.assert_allclose(_streamed(model, audio, photo, window_frames), expected, atol=1e-4)
    # a video played ping-pong over the audio: each frame on its own scheduled source frame, the identity
    # shape the median over all scheduled frames (source frames counted as often as they play)
    schedule = source_frame_schedule(len(points), total, "pingpong")
    video = Landmarks(points, crop_size=64, fps=FPS)
    expected = predict_landmarks(model, features, Landmarks(points[schedule], 64, FPS), _speaker(model)).points
    np.testing.assert_allclose(_streamed(model, audio, video, window_frames, schedule=schedule), expected, atol=1e-4)
    # one reference per output frame, without a schedule
    per_frame = Landmarks(_source_points(total, seed=1), crop_size=64, fps=FPS)
    expected = predict_landmarks(model, features, per_frame, _speaker(model)).points
    np.testing.assert_allclose(_streamed(model, audio, per_frame, window_frames), expected, atol=1e-4)


@pytest.mark.parametrize("window_frames", [1, 7])
def test_streamed_centred_motion_equals_the_whole_clip(window_frames):
    """Centring streams in two passes (mean_landmark_motion, then stream_landmarks with that offset) and
    gives what predict_landmarks gives with center_motion on the whole clip."""
    model = _random_a2l()
    audio = Audio(_speech(3.0), 16000)
    features = compute_audio_features(audio, FPS)
    points = _source_points(9)
    schedule = source_frame_schedule(len(points), len(features), "pingpong")
    video = Landmarks(points, crop_size=64, fps=FPS)
    windows = lambda: iter_audio_features(audio, FPS, window=model.config.feature_window, window_frames=window_frames)  # noqa: E731
    offset = mean_landmark_motion(model, windows(), video, _speaker(model), schedule=schedule)
    assert offset.shape == (68, 2) and np.abs(offset).max() > 1e-3  # a random model drifts: there is a mean to remove
    expected = predict_landmarks(model, features, Landmarks(points[schedule], 64, FPS), _speaker(model),
                                 center_motion=True, motion_scale=0.6).points
    streamed = _streamed(model, audio, video, window_frames, schedule=schedule, motion_offset=offset, motion_scale=0.6)
    np.testing.assert_allclose(streamed, expected, atol=1e-4)
    plain = predict_landmarks(model, features, Landmarks(points[schedule], 64, FPS), _speaker(model)).points
    assert np.abs(plain - expected).max() > 1e-2


def test_windows_predicted_on_their_own_would_differ():
    # The comparison above can fail: cutting the clip into independent windows (no carried LSTM state, no
    # smoother context across the cut) moves the landmarks by far more than its tolerance.
    model = _random_a2l()
    features = compute_audio_features(Audio(_speech(2.0), 16000), FPS)
    photo = Landmarks(_source_points(1), crop_size=64, fps=FPS)
    whole = predict_landmarks(model, features, photo, _speaker(model)).points
    cut = np.concatenate([
        predict_landmarks(model, replace(features, features=features.features[i:i + 7]), photo, _speaker(model)).points
        for i in range(0, len(features), 7)
    ])
    assert np.abs(cut - whole).max() > 1e-2


def test_streamed_landmarks_check_their_inputs():
    model = _random_a2l()
    audio = Audio(_speech(1.0), 16000)
    points = _source_points(4)
    video = Landmarks(points, crop_size=64, fps=FPS)
    with pytest.raises(LandmarkTalkError, match="reference: 30 frames for 25 audio frames"):
        list(stream_landmarks(model, iter_audio_features(audio, FPS, window_frames=7), video, _speaker(model),
                              schedule=np.zeros(30, np.int64)))
    with pytest.raises(LandmarkTalkError, match="schedule: indices must lie in 0..3"):
        list(stream_landmarks(model, iter_audio_features(audio, FPS), video, _speaker(model), schedule=np.arange(25)))
    with pytest.raises(LandmarkTalkError, match=r"speaker: expected a finite \[256\]"):
        list(stream_landmarks(model, iter_audio_features(audio, FPS), Landmarks(points[:1], 64, FPS),
                              _speaker(model)[:5]))


# ------------------------------------------------------------------------------------------- render


def _synthetic_track(points: np.ndarray) -> FaceTrack:
    count = len(points)
    return FaceTrack(landmarks=points, confidence=np.ones(count, np.float32),
                     transforms=np.tile(np.eye(2, 3, dtype=np.float32), (count, 1, 1)), crop_size=64,
                     frame_size=(64, 64), fps=FPS, filled=np.zeros(count, bool))


@pytest.fixture(scope="module")
def tiny_models():
    from pipelines.latents import face_autoencoder_codec
    from pipelines.models.face_autoencoder import FaceAutoencoder, FaceAutoencoderConfig
    from pipelines.models.l2v import L2VConfig, L2VDenoiser
    from pipelines.render import TalkingHeadModels

    torch.manual_seed(0)
    autoencoder = FaceAutoencoder(FaceAutoencoderConfig(image_size=32, block_channels=(8, 8, 8), norm_groups=4))
    codec = face_autoencoder_codec(autoencoder)
    l2v = L2VDenoiser(L2VConfig(image_size=32, latent_space=codec.name, block_channels=(16, 32), embed_dim=32,
                                landmark_tokens=4, landmark_hidden=32))
    a2l = _random_a2l(speaker_method="logmel")
    return TalkingHeadModels(a2l=a2l.eval(), l2v=l2v.eval(), codec=codec, speaker=_speaker(a2l))


@pytest.mark.parametrize("motion_scale, center_motion", [(1.0, False), (0.6, True)])
@pytest.mark.parametrize("sources", [1, 6])
def test_render_feeds_l2v_the_whole_clip_landmarks(tiny_models, sources, motion_scale, center_motion, monkeypatch):
    """The render's landmarks, streamed 7 frames of audio at a time and cut into 5-frame chunks, are those of
    one whole-clip prediction on the scheduled source frames, with the motion scaled and (a video only)
    centred as asked."""
    import pipelines.models.l2v as l2v_module
    from pipelines.face import crop_landmarks
    from pipelines.render import RenderSettings, render_talking_frames

    audio = Audio(_speech(2.2), 16000)
    points = _source_points(sources)
    frames = np.random.default_rng(0).integers(0, 255, (sources, 64, 64, 3), dtype=np.uint8)
    track = _synthetic_track(points)
    seen = []
    original = l2v_module.landmark_inputs
    monkeypatch.setattr(l2v_module, "landmark_inputs", lambda p, *a, **k: (seen.append(p), original(p, *a, **k))[1])
    settings = RenderSettings(steps=1, chunk_frames=5, landmark_chunk_frames=7, motion_scale=motion_scale,
                              center_motion=center_motion)
    video = np.concatenate(list(render_talking_frames(tiny_models, frames, track, audio, FPS, settings)))
    total = frame_count_for(audio.duration_s, FPS)
    assert len(video) == total == 55
    schedule = source_frame_schedule(sources, total, "pingpong")
    size = tiny_models.l2v.config.image_size
    reference = Landmarks(crop_landmarks(track, size).points[schedule], crop_size=size, fps=FPS)
    features = compute_audio_features(audio, FPS)
    # a photo (one source frame) has no mouth motion of its own to centre on
    expected = predict_landmarks(tiny_models.a2l, features, reference, tiny_models.speaker, motion_scale=motion_scale,
                                 center_motion=center_motion and sources > 1).points
    assert [len(p) for p in seen] == [5] * 11
    np.testing.assert_allclose(np.concatenate(seen), expected, atol=1e-4)


class _RecordingRefiner(torch.nn.Module):
    """A SOVQAE stand-in: records how many crops each call refines and returns them unchanged or filled."""

    def __init__(self, fill: float | None):
        super().__init__()
        from pipelines.models.sovqae import SOVQAEConfig

        self.config = SOVQAEConfig(image_size=32, block_channels=(16, 32), norm_groups=8, latent_dim=8,
                                   codebook_size=32)
        self.fill = fill
        self.calls: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(images))
        return images if self.fill is None else torch.full_like(images, self.fill)


def test_refiner_runs_on_every_generated_crop_before_paste_back(tiny_models):
    from pipelines.render import RenderSettings, render_talking_frames

    audio = Audio(_speech(0.9), 16000)
    points = _source_points(3)
    frames = np.random.default_rng(1).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    track = _synthetic_track(points)
    settings = RenderSettings(steps=1, chunk_frames=4, paste_region="face")

    def render(refiner):
        models = replace(tiny_models, refiner=refiner)
        return np.concatenate(list(render_talking_frames(models, frames, track, audio, FPS, settings)))

    plain = render(None)
    identity = _RecordingRefiner(fill=None)
    # A refiner that changes nothing leaves the render exactly as it was: it sees the decoded crops, uint8 in and out.
    np.testing.assert_array_equal(render(identity), plain)
    total = frame_count_for(audio.duration_s, FPS)
    assert identity.calls == [4] * (total // 4) + ([total % 4] if total % 4 else [])
    # What the refiner returns is what is pasted: a flat refiner flattens the pasted face (paste-back
    # matches its colour to the frame, so the tone moves) and leaves the corners alone.
    flat = render(_RecordingRefiner(fill=0.0))
    centre = flat[:, 24:40, 24:40].astype(np.float32)
    assert centre.std(axis=(1, 2)).max() < 2 and plain[:, 24:40, 24:40].std(axis=(1, 2)).min() > 10
    np.testing.assert_array_equal(flat[:, :2, :2], plain[:, :2, :2])


def test_load_talking_head_models_checks_the_refiner_file(tiny_models, tmp_path):
    from pipelines.checkpoint import save_checkpoint
    from pipelines.models.sovqae import SOVQAE
    from pipelines.render import load_talking_head_models

    save_checkpoint(tiny_models.a2l, tmp_path / "a2l.safetensors")
    save_checkpoint(tiny_models.l2v, tmp_path / "l2v.safetensors")
    save_checkpoint(tiny_models.codec.module, tmp_path / "face_autoencoder.safetensors")
    assert load_talking_head_models(tmp_path).refiner is None
    sovqae_dir = tmp_path / "sovqae"
    sovqae_dir.mkdir()
    save_checkpoint(SOVQAE(_RecordingRefiner(None).config), sovqae_dir / "sovqae.safetensors")
    loaded = load_talking_head_models(tmp_path, refiner=sovqae_dir / "sovqae.safetensors")
    assert isinstance(loaded.refiner, SOVQAE) and not loaded.refiner.training
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors.*belongs in .*sovqae"):
        load_talking_head_models(tmp_path, refiner=sovqae_dir / "missing.safetensors")
    with pytest.raises(LandmarkTalkError, match="holds a 'a2l' model, expected 'sovqae'"):
        load_talking_head_models(tmp_path, refiner=tmp_path / "a2l.safetensors")


def test_seed_search_renders_the_clip_with_the_seed_whose_mouth_follows_best(tiny_models, monkeypatch):
    """Each candidate renders exactly the probe's frames; the lowest mouth error's seed renders the clip, its probe
    chunks are kept, and the whole is exactly a plain render with that seed (progressive reference carried
    across the probe)."""
    import pipelines.face.detect as detect_module
    import pipelines.render as render_module
    from pipelines.render import RenderSettings, render_talking_frames

    audio = Audio(_speech(1.0), 16000)
    points = _source_points(3)
    frames = np.random.default_rng(2).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    track = _synthetic_track(points)
    size = tiny_models.l2v.config.image_size
    probed, scores = [], iter([3.0, 1.0, 2.0])

    def fake_error(crops, landmarks, detector=None):
        assert crops.shape[1:] == (size, size, 3) and landmarks.shape == (len(crops), 68, 2)
        probed.append(len(crops))
        return next(scores)

    monkeypatch.setattr(render_module, "mouth_following_error", fake_error)
    monkeypatch.setattr(detect_module, "load_landmark_detector", lambda *a, **k: None)
    calls = []
    base = RenderSettings(steps=1, chunk_frames=4, seed=5, progressive=0.5)

    def render(settings):
        return np.concatenate(list(render_talking_frames(tiny_models, frames, track, audio, FPS, settings,
                                                         progress=lambda done, total: calls.append(done))))

    searched = render(replace(base, seed_candidates=3, seed_probe_frames=8))
    assert probed == [8, 8, 8]
    total = frame_count_for(audio.duration_s, FPS)
    assert len(searched) == total and calls[-1] == total and calls[:3] == [0, 0, 0]
    np.testing.assert_array_equal(searched, render(replace(base, seed=6)))
    assert np.abs(searched.astype(int) - render(base).astype(int)).max() > 0
    # A probe that is not a whole number of chunks is chunked on its own: exactly its frames are scored.
    probed.clear()
    scores = iter([2.0, 1.0])
    assert len(render(replace(base, seed_candidates=2, seed_probe_frames=6))) == total and probed == [6, 6]
    with pytest.raises(LandmarkTalkError, match="seed search"):
        render(replace(base, seed_candidates=0))


def test_mouth_following_error_measures_how_far_the_drawn_mouth_is_from_the_landmarks(shared_data):
    """On real face crops, the error against the crops' own tracked landmarks is small, and moving the mouth
    asked for by 4 px raises it by about that: the detection is placed by the stable points, not the mouth."""
    from pipelines.face import align_faces, crop_landmarks, track_face
    from pipelines.media import read_video
    from pipelines.render import mouth_following_error

    frames, fps = read_video(shared_data / "clips" / "RD_Radio34_000.mp4", max_frames=6)
    track = track_face(frames, fps, crop_size=128)
    crops = align_faces(frames, track, 128)
    own = crop_landmarks(track, 128).points
    moved = own.copy()
    moved[:, 48:68, 1] += 4.0
    on_own = mouth_following_error(crops, own)
    assert on_own < 1.5
    assert 4.0 - on_own - 0.5 < mouth_following_error(crops, moved) < 4.0 + on_own + 0.5


# --------------------------------------------------------------------------------------------- muxing


def test_video_writer_muxes_a_decoded_file_to_the_audio_length(tmp_path):
    source = tmp_path / "speech.wav"
    sf.write(source, _speech(1.3, 22050, 2).T, 22050, subtype="PCM_16")
    decoded = decode_audio_file(source, tmp_path / "speech.f32")
    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=FPS, audio=decoded, preset="ultrafast") as writer:
        writer.write(np.zeros((10, 32, 32, 3), np.uint8))  # fewer frames than the audio: the last one repeats
        assert not out.exists()  # written to a temporary file until closed
    info = probe_media(out)
    assert info.frame_count == frame_count_for(1.3, FPS) == 33
    assert info.audio_codec == "aac" and info.audio_channels == 2
    assert abs(info.audio_duration_s - 1.3) < 0.03
    assert decoded.path.is_file()  # the writer reads the file, it does not own it
    with pytest.raises(LandmarkTalkError, match="missing or empty"):
        VideoWriter(tmp_path / "x.mp4", fps=FPS, audio=replace(decoded, path=tmp_path / "gone.f32"))


@pytest.mark.parametrize("field, value, message", [
    ("denoise", 0.0, r"denoise 0.0: give a sampling strength in \(0, 1\]"),
    ("denoise", 1.5, r"denoise 1.5: give a sampling strength in \(0, 1\]"),
    ("motion_scale", -0.1, r"motion scale -0.1: give a factor in \[0, 2\]"),
])
def test_out_of_range_settings_are_refused_before_any_work(tiny_models, monkeypatch, field, value, message):
    import pipelines.render as render
    from pipelines.render import RenderSettings, render_talking_frames

    # nothing is read or predicted before the check: A2L is never asked for landmarks
    monkeypatch.setattr(render, "_stream_clip_landmarks", lambda *a, **k: pytest.fail("A2L ran before the check"))
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    track = _synthetic_track(_source_points(1))
    with pytest.raises(LandmarkTalkError, match=message):
        next(render_talking_frames(tiny_models, frames, track, Audio(_speech(0.5), 16000), FPS,
                                   RenderSettings(steps=1, **{field: value})))


def test_denoise_strength_reaches_the_sampler_with_the_first_source_frame_as_start(tiny_models, monkeypatch):
    """RenderSettings.denoise is passed to every chunk's sampling, which starts from the clip's identity
    reference (the first source frame, encoded): at a small strength every frame's latent stays near it."""
    import pipelines.models.l2v as l2v_module
    from pipelines.face import align_faces
    from pipelines.render import RenderSettings, _select_track, _to_model_images, render_talking_frames

    audio = Audio(_speech(0.5), 16000)
    points = _source_points(3)
    frames = np.random.default_rng(4).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    track = _synthetic_track(points)
    seen = []
    original = l2v_module.render_latents

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((kwargs["denoise"], kwargs["identity"], out))
        return out

    monkeypatch.setattr(l2v_module, "render_latents", spy)
    base = RenderSettings(steps=4, chunk_frames=4)

    def distance_from_reference(settings) -> float:
        seen.clear()
        total = sum(map(len, render_talking_frames(tiny_models, frames, track, audio, FPS, settings)))
        assert total == frame_count_for(audio.duration_s, FPS) and len(seen) == -(-total // 4)
        assert all(d == settings.denoise for d, _, _ in seen)
        size = tiny_models.l2v.config.image_size
        first = align_faces(frames[:1], _select_track(track, np.array([0])), size)
        torch.testing.assert_close(seen[0][1], tiny_models.codec.encode(_to_model_images(first, "cpu")))
        return float(torch.cat([out - identity for _, identity, out in seen]).abs().mean())

    assert distance_from_reference(replace(base, denoise=0.02)) < 0.2 * distance_from_reference(base)
