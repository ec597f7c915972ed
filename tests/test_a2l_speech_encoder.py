"""A2L on a local speech encoder's hidden states (``--speech-encoder``): training, checks, render plumbing.

The encoder is a tiny random wav2vec2 saved with ``save_pretrained`` in the test's folder (nothing is
downloaded); no pretrained speech encoder is available here, so no quality is claimed for real ones.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.checkpoint import load_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.models.a2l import (
    ENCODER_FEATURE_WINDOW, A2L, A2LConfig, feature_options, predict_landmarks, speech_encoder_name,
)
from pipelines.types import AudioFeatures, Landmarks
from test_a2l import FPS, _write_cache, train_on_synthetic_clips
from test_render_streaming import tiny_models  # noqa: F401  (a fixture)

transformers = pytest.importorskip("transformers", reason="the speech-encoder path needs `transformers` (requirements-dev.txt)")


def save_tiny_wav2vec2(folder):
    """A random 32-dim wav2vec2 written with ``save_pretrained`` (a stand-in for a real local encoder)."""
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("encoders") / "tiny_w2v")


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    from pipelines.audio.encoders import load_speech_encoder

    return load_speech_encoder(encoder_dir)


def _encoder_config(encoder, **overrides) -> A2LConfig:
    fields = {"speaker_method": "logmel", "feature_kind": f"encoder:{encoder.name}", "feature_dim": encoder.dim,
              "feature_window": ENCODER_FEATURE_WINDOW}
    return A2LConfig.preset("tiny", **{**fields, **overrides})


def test_training_on_encoder_features_learns_the_mouth(tmp_path, encoder):
    task, start, result, r = train_on_synthetic_clips(tmp_path, _encoder_config(encoder), 240, 80,
                                                      speech_encoder=encoder)
    assert task.clips[0].features.shape[1:] == (ENCODER_FEATURE_WINDOW, encoder.dim)
    assert result.final_validation_loss < 0.6 * start
    assert speech_encoder_name(load_checkpoint(tmp_path / "a2l.safetensors", "a2l").config) == encoder.name
    assert r > 0.6


def test_streamed_encoder_windows_equal_the_whole_clip(encoder):
    from pipelines.audio import compute_audio_features
    from pipelines.audio.features import iter_audio_features
    from test_render_streaming import _speech
    from pipelines.types import Audio

    audio = Audio(_speech(2.3, rate=22050, channels=2), 22050)
    whole = compute_audio_features(audio, 29.97, kind="encoder", encoder=encoder, window=ENCODER_FEATURE_WINDOW)
    parts = list(iter_audio_features(audio, 29.97, kind="encoder", encoder=encoder, window=ENCODER_FEATURE_WINDOW,
                                     window_frames=7))
    assert [len(p) for p in parts[:-1]] == [7] * (len(parts) - 1) and all(p.kind == whole.kind for p in parts)
    np.testing.assert_array_equal(np.concatenate([p.features for p in parts]), whole.features)
    with pytest.raises(LandmarkTalkError, match="load_speech_encoder"):
        next(iter_audio_features(audio, 25.0, kind="encoder"))


def test_feature_options_name_the_encoder_a_model_needs(encoder, encoder_dir):
    assert encoder.path == str(encoder_dir.resolve())  # what the Fit node hands to fit_person
    logmel = A2LConfig.preset("tiny")
    assert feature_options(logmel) == {"window": 20, "kind": "logmel80"}
    with pytest.raises(LandmarkTalkError, match="reads log-mel features.*leave the speech encoder out"):
        feature_options(logmel, encoder)
    config = _encoder_config(encoder)
    assert feature_options(config, encoder) == {"window": ENCODER_FEATURE_WINDOW, "kind": "encoder", "encoder": encoder}
    with pytest.raises(LandmarkTalkError, match="speech encoder 'tiny_w2v' \\(32 dims\\).*--speech-encoder"):
        feature_options(config)
    with pytest.raises(LandmarkTalkError, match="trained on 'other_w2v'.*folder named 'other_w2v'"):
        feature_options(_encoder_config(encoder, feature_kind="encoder:other_w2v"), encoder)
    with pytest.raises(LandmarkTalkError, match="\\(32 dims\\).*\\(768 dims\\)"):
        feature_options(_encoder_config(encoder, feature_dim=768), encoder)
    # Log-mel windows handed to an encoder model say which features it wants.
    model = A2L(config)
    logmel_features = AudioFeatures(np.zeros((4, ENCODER_FEATURE_WINDOW, 32), np.float32), FPS, "logmel80")
    reference = Landmarks(np.zeros((1, 68, 2), np.float32) + np.arange(68)[None, :, None], crop_size=64, fps=FPS)
    with pytest.raises(LandmarkTalkError, match="with the speech encoder 'tiny_w2v'"):
        predict_landmarks(model, logmel_features, reference, np.zeros(256, np.float32))


def test_train_cli_records_the_speech_encoder(tmp_path, encoder_dir, caplog):
    from pipelines.cli import main
    from pipelines.checkpoint import read_checkpoint_metadata

    _write_cache(tmp_path / "caches" / "clip0", seconds=4.0)
    out = tmp_path / "a2l.safetensors"
    code = main(["train", "a2l", "--data", str(tmp_path / "caches"), "--out", str(out), "--preset", "tiny",
                 "--speaker", "logmel", "--steps", "3", "--batch-size", "2", "--val-every", "3",
                 "--speech-encoder", str(encoder_dir)])
    assert code == 0
    config = load_checkpoint(out, "a2l").config
    assert (config.feature_kind, config.feature_dim, config.feature_window) == ("encoder:tiny_w2v", 32, 10)
    assert read_checkpoint_metadata(out)["landmarktalk.speech_encoder"] == str(encoder_dir)
    code = main(["train", "a2l", "--data", str(tmp_path / "caches"), "--out", str(tmp_path / "b.safetensors"),
                 "--preset", "tiny", "--speaker", "logmel", "--steps", "1", "--feature-window", "2"])
    assert code == 2 and "--feature-window 2: give at least 4" in caplog.text
    assert not (tmp_path / "b.safetensors").exists()


def _random_encoder_a2l(encoder) -> A2L:
    from test_render_streaming import _random_a2l

    return _random_a2l(speaker_method="logmel", feature_kind=f"encoder:{encoder.name}", feature_dim=encoder.dim,
                       feature_window=ENCODER_FEATURE_WINDOW).eval()


def test_render_feeds_l2v_the_landmarks_of_the_encoder_features(tiny_models, encoder, monkeypatch):
    """The render computes the encoder's features (streamed, motion centred in two passes) and L2V gets the
    landmarks of one whole-clip prediction on them."""
    from dataclasses import replace

    import pipelines.models.l2v as l2v_module
    from pipelines.audio import compute_audio_features
    from pipelines.face import crop_landmarks
    from pipelines.render import RenderSettings, render_talking_frames
    from pipelines.schedule import source_frame_schedule
    from pipelines.types import Audio, frame_count_for
    from test_render_streaming import _source_points, _speech, _synthetic_track

    models = replace(tiny_models, a2l=_random_encoder_a2l(encoder), speech_encoder=encoder)
    audio = Audio(_speech(1.5), 16000)
    points = _source_points(6)
    frames = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    track = _synthetic_track(points)
    import pipelines.audio.encoders as encoders

    seen, encoded = [], []
    original = l2v_module.landmark_inputs
    monkeypatch.setattr(l2v_module, "landmark_inputs", lambda p, *a, **k: (seen.append(p), original(p, *a, **k))[1])
    encode = encoders.encode_speech
    monkeypatch.setattr(encoders, "encode_speech", lambda *a, **k: (encoded.append(1), encode(*a, **k))[1])
    settings = RenderSettings(steps=1, chunk_frames=5, landmark_chunk_frames=7, motion_scale=0.6, center_motion=True)
    video = np.concatenate(list(render_talking_frames(models, frames, track, audio, FPS, settings)))
    total = frame_count_for(audio.duration_s, FPS)
    assert len(video) == total
    assert len(encoded) == 1  # both centring passes read one run of the encoder
    size = models.l2v.config.image_size
    schedule = source_frame_schedule(6, total, "pingpong")
    reference = Landmarks(crop_landmarks(track, size).points[schedule], crop_size=size, fps=FPS)
    features = compute_audio_features(audio, FPS, kind="encoder", encoder=encoder, window=ENCODER_FEATURE_WINDOW)
    expected = predict_landmarks(models.a2l, features, reference, models.speaker, motion_scale=0.6, center_motion=True)
    np.testing.assert_allclose(np.concatenate(seen), expected.points, atol=1e-4)
    # Without the encoder the render stops before any work, naming the one it needs.
    seen.clear()
    with pytest.raises(LandmarkTalkError, match="speech encoder 'tiny_w2v'.*--speech-encoder"):
        list(render_talking_frames(replace(models, speech_encoder=None), frames, track, audio, FPS, settings))
    assert not seen


def test_models_folder_loads_the_encoder_its_fit_recorded(tiny_models, encoder, encoder_dir, tmp_path):
    import shutil

    from pipelines.checkpoint import save_checkpoint
    from pipelines.fit import FIT_RECORD
    from pipelines.render import load_talking_head_models

    save_checkpoint(_random_encoder_a2l(encoder), tmp_path / "a2l.safetensors")
    save_checkpoint(tiny_models.l2v, tmp_path / "l2v.safetensors")
    save_checkpoint(tiny_models.codec.module, tmp_path / "face_autoencoder.safetensors")
    with pytest.raises(LandmarkTalkError, match="a2l.safetensors reads the hidden states of the speech encoder 'tiny_w2v'"):
        load_talking_head_models(tmp_path)
    assert load_talking_head_models(tmp_path, speech_encoder=encoder_dir).speech_encoder.name == "tiny_w2v"
    moved = tmp_path / "elsewhere" / "tiny_w2v"
    shutil.copytree(encoder_dir, moved)
    (tmp_path / FIT_RECORD).write_text(json.dumps({"speech_encoder": str(moved)}))
    assert load_talking_head_models(tmp_path).speech_encoder.dim == 32  # found through the fit's record
    shutil.rmtree(moved)
    with pytest.raises(LandmarkTalkError, match="recorded at .*elsewhere/tiny_w2v, which is gone"):
        load_talking_head_models(tmp_path)
    # A log-mel A2L refuses an encoder; an encoder of another name is refused too.
    save_checkpoint(tiny_models.a2l, tmp_path / "a2l.safetensors", overwrite=True)
    with pytest.raises(LandmarkTalkError, match="reads log-mel features"):
        load_talking_head_models(tmp_path, speech_encoder=encoder_dir)
    save_checkpoint(_random_encoder_a2l(encoder), tmp_path / "a2l.safetensors", overwrite=True)
    renamed = tmp_path / "other_w2v"
    shutil.copytree(encoder_dir, renamed)
    with pytest.raises(LandmarkTalkError, match="trained on 'tiny_w2v'"):
        load_talking_head_models(tmp_path, speech_encoder=renamed)


def test_fit_refuses_a_kept_a2l_of_the_other_feature_kind(tiny_models, encoder, encoder_dir, tmp_path):
    from pipelines.checkpoint import save_checkpoint
    from pipelines.fit import _check_kept_a2l

    logmel, encoded = tmp_path / "logmel" / "a2l.safetensors", tmp_path / "encoded" / "a2l.safetensors"
    save_checkpoint(tiny_models.a2l, logmel)
    save_checkpoint(_random_encoder_a2l(encoder), encoded)
    _check_kept_a2l(logmel, None)
    _check_kept_a2l(encoded, encoder_dir)
    with pytest.raises(LandmarkTalkError, match="reads log-mel features, but this fit asks for the speech encoder 'tiny_w2v'.*delete a2l.safetensors"):
        _check_kept_a2l(logmel, encoder_dir)
    with pytest.raises(LandmarkTalkError, match="reads the speech encoder 'tiny_w2v', but this fit asks for log-mel"):
        _check_kept_a2l(encoded, None)
