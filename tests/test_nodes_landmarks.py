"""Audio and landmark nodes with a tiny A2L model through the real loader (COMFYUI_DIR)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from comfy_harness import SKIP_REASON, comfy_audio, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)

CROP = 128


@pytest.fixture(scope="module")
def a2l_files(tmp_path_factory):
    """A tiny untrained A2L (its output heads start at zero: it returns the reference shape) and a fitted voice."""
    models_dir = use_scratch_folders(tmp_path_factory.mktemp("comfy"))
    a2l = pack_module("pipelines.models.a2l")
    config = replace(a2l.A2LConfig.preset("tiny"), speaker_method="logmel")
    (models_dir / "alice").mkdir()
    pack_module("pipelines.checkpoint").save_checkpoint(a2l.A2L(config), models_dir / "alice" / "a2l.safetensors")
    speaker = np.zeros(config.speaker_dim, np.float32)
    speaker[0] = 1.0
    np.save(models_dir / "alice" / "speaker.npy", speaker)
    pack_module("pipelines.checkpoint").save_checkpoint(a2l.A2L(config), models_dir / "voiceless.safetensors")
    return models_dir, speaker


@pytest.fixture(scope="module")
def speech():
    t = np.arange(16000 * 3 // 2) / 16000  # 1.5 s of a voiced-like tone with a syllable-rate envelope
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return comfy_audio(np.stack([wave, wave]), 16000)


@pytest.fixture(scope="module")
def reference():
    template = pack_module("pipelines.face._geometry").TEMPLATE
    return pack_module("pipelines.types").Landmarks(points=(template[None] * CROP).astype(np.float32), crop_size=CROP, fps=25.0)


def _nodes(name):
    return pack_module(f"nodes.{name}")


def test_load_a2l_lists_nested_files_and_brings_the_fitted_voice(a2l_files):
    _, speaker = a2l_files
    loader = _nodes("loaders").LandmarkTalkLoadA2L
    assert sorted(loader.define_schema().inputs[0].options) == ["alice/a2l.safetensors", "voiceless.safetensors"]
    patcher, fitted = loader.execute(model_name="alice/a2l.safetensors").result
    np.testing.assert_array_equal(fitted, speaker)
    assert loader.execute(model_name="voiceless.safetensors").result[1] is None


def test_audio_features_cover_the_speech_at_fps(speech):
    out = _nodes("audio").LandmarkTalkAudioFeatures.execute(audio=speech, fps=30.0, window=20)
    (features,) = out.result
    assert features.features.shape[:2] == (45, 20) and features.fps == 30.0
    assert out.ui["landmarktalk_summary"] == ["45 frames at 30 fps"]


def test_speech_encoder_node_lists_loads_and_feeds_audio_features(a2l_files, speech):
    transformers = pytest.importorskip("transformers")
    import torch

    models_dir, _ = a2l_files
    encoders = models_dir / "speech_encoders"
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(encoders / "tiny_w2v")
    (encoders / "not_a_model").mkdir()  # no config.json: not listed
    loader = _nodes("audio").LandmarkTalkLoadSpeechEncoder
    assert loader.define_schema().inputs[0].options == ["tiny_w2v"]
    (encoder,) = loader.execute(encoder_name="tiny_w2v").result
    features_node = _nodes("audio").LandmarkTalkAudioFeatures
    (encoded,) = features_node.execute(audio=speech, fps=25.0, window=10, speech_encoder=encoder).result
    (logmel,) = features_node.execute(audio=speech, fps=25.0, window=20).result
    assert encoded.kind == "encoder:tiny_w2v" and encoded.features.shape == (len(logmel.features), 10, 32)
    with pytest.raises(FileNotFoundError, match="'not_a_model' is not in models/landmarktalk/speech_encoders/"):
        loader.execute(encoder_name="not_a_model")


def test_smooth_audio_features_node_keeps_the_shape_and_calms_changes(speech):
    (features,) = _nodes("audio").LandmarkTalkAudioFeatures.execute(audio=speech, fps=25.0, window=20).result
    (smoothed,) = _nodes("audio").LandmarkTalkSmoothAudioFeatures.execute(
        features=features, half_window=3, sigma=2.0, similarity=0.0).result
    assert smoothed.features.shape == features.features.shape and smoothed.fps == 25.0
    step = lambda x: float(np.abs(np.diff(x, axis=0)).mean())  # noqa: E731
    assert step(smoothed.features) < 0.8 * step(features.features)
    (same,) = _nodes("audio").LandmarkTalkSmoothAudioFeatures.execute(features=features, half_window=0).result
    np.testing.assert_array_equal(same.features, features.features)


def test_speaker_embedding_uses_the_models_method(a2l_files, speech):
    (a2l, _) = _nodes("loaders").LandmarkTalkLoadA2L.execute(model_name="alice/a2l.safetensors").result
    (vector,) = _nodes("audio").LandmarkTalkSpeakerEmbedding.execute(a2l=a2l, audio=speech).result
    expected = pack_module("pipelines.audio").compute_speaker_embedding(
        pack_module("nodes._convert").audio_from_comfy(speech), method="logmel")
    np.testing.assert_allclose(vector, expected, rtol=1e-5)


def test_untrained_a2l_returns_the_reference_on_every_frame(a2l_files, speech, reference):
    a2l, fitted = _nodes("loaders").LandmarkTalkLoadA2L.execute(model_name="alice/a2l.safetensors").result
    (features,) = _nodes("audio").LandmarkTalkAudioFeatures.execute(audio=speech, fps=25.0).result
    (landmarks,) = _nodes("landmarks").LandmarkTalkPredictLandmarks.execute(
        a2l=a2l, features=features, reference=reference, speaker=fitted).result
    assert landmarks.points.shape == (round(1.5 * 25), 68, 2) and landmarks.crop_size == CROP
    np.testing.assert_allclose(landmarks.points, np.repeat(reference.points, len(landmarks), 0), atol=0.05)


def test_predict_landmarks_shapes_the_motion_as_asked(a2l_files, speech, reference, monkeypatch):
    landmarks = _nodes("landmarks")
    seen = []
    monkeypatch.setattr(landmarks, "predict_landmarks", lambda *a, **k: seen.append(k) or "out")
    a2l, fitted = _nodes("loaders").LandmarkTalkLoadA2L.execute(model_name="alice/a2l.safetensors").result
    (features,) = _nodes("audio").LandmarkTalkAudioFeatures.execute(audio=speech, fps=25.0).result
    landmarks.LandmarkTalkPredictLandmarks.execute(a2l=a2l, features=features, reference=reference, speaker=fitted)
    landmarks.LandmarkTalkPredictLandmarks.execute(a2l=a2l, features=features, reference=reference, speaker=fitted,
                                                   motion_scale=1.0, center_motion=False)
    # by default shaped as the Render node shapes it
    assert seen == [{"motion_scale": 0.75, "center_motion": True}, {"motion_scale": 1.0, "center_motion": False}]


def test_predict_landmarks_says_what_is_wrong(a2l_files, speech, reference):
    a2l, fitted = _nodes("loaders").LandmarkTalkLoadA2L.execute(model_name="voiceless.safetensors").result
    (features,) = _nodes("audio").LandmarkTalkAudioFeatures.execute(audio=speech, fps=25.0, window=12).result
    predict = _nodes("landmarks").LandmarkTalkPredictLandmarks.execute
    with pytest.raises(ValueError, match="speaker: .*Speaker Embedding"):
        predict(a2l=a2l, features=features, reference=reference, speaker=fitted)
    with pytest.raises(ValueError, match="window=20"):
        predict(a2l=a2l, features=features, reference=reference, speaker=np.ones(256, np.float32) / 16)


def test_smooth_landmarks_removes_jitter_and_keeps_a_still_face(reference):
    rng = np.random.default_rng(0)
    still = np.repeat(reference.points, 50, 0)
    noisy = replace(reference, points=(still + rng.normal(0, 1.0, still.shape)).astype(np.float32))
    (smoothed,) = _nodes("landmarks").LandmarkTalkSmoothLandmarks.execute(landmarks=noisy, window_s=0.4).result
    assert np.abs(np.diff(smoothed.points, axis=0)).mean() < 0.3 * np.abs(np.diff(noisy.points, axis=0)).mean()
    (same,) = _nodes("landmarks").LandmarkTalkSmoothLandmarks.execute(landmarks=replace(reference, points=still)).result
    np.testing.assert_allclose(same.points, still, atol=1e-3)
    assert same.crop_size == CROP and same.fps == 25.0
