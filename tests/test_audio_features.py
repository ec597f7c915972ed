"""Audio feature windows: frame counts at any fps, timing of the windows, and bad or unusual input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from pipelines.audio import compute_audio_features
from pipelines.audio.features import DEFAULT_WINDOW, SILENCE_LOGMEL
from pipelines.errors import LandmarkTalkError
from pipelines.types import Audio


def _noise(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> Audio:
    n = int(round(seconds * rate))
    return Audio(np.random.default_rng(seed).uniform(-0.3, 0.3, (channels, n)).astype(np.float32), rate)


def _read(path) -> Audio:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio(np.ascontiguousarray(data.T), rate)


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 60])
@pytest.mark.parametrize("num_samples", [16000, 16001, 12345, 7919, 47999])
def test_frame_count_follows_audio_duration(fps, num_samples):
    audio = Audio(np.zeros((1, num_samples), np.float32) + 0.01, 16000)
    features = compute_audio_features(audio, fps)
    assert features.features.shape == (round(num_samples / 16000 * fps), DEFAULT_WINDOW, 80)
    assert features.fps == fps and features.kind == "logmel80"
    assert features.features.dtype == np.float32


def test_window_is_centred_on_its_frame():
    # A 40 ms burst at 1.00–1.04 s; at 25 fps frame 25 covers 1.00–1.04 s, so its window centre is loud.
    samples = np.zeros(3 * 16000, np.float32)
    samples[16000:16640] = np.random.default_rng(1).uniform(-0.5, 0.5, 640)
    feats = compute_audio_features(Audio(samples[None], 16000), 25.0, window=20).features
    energy = feats.mean(axis=2)  # t w
    assert energy[25, 10] > SILENCE_LOGMEL + 1.0  # the frame's centre step hears the burst
    loud_frames = np.flatnonzero(energy[:, 10] > SILENCE_LOGMEL + 1.0)
    assert set(loud_frames) <= {24, 25, 26}
    np.testing.assert_allclose(feats[10], SILENCE_LOGMEL)  # 0.4 s: nothing there
    np.testing.assert_allclose(feats[0], SILENCE_LOGMEL)


def test_edges_are_padded_with_silence():
    feats = compute_audio_features(_noise(2.0), 25.0, window=20).features
    # Frame 0's window starts 80 ms before the audio; those steps read as silence, the rest as noise.
    assert np.allclose(feats[0, :2], SILENCE_LOGMEL)
    assert feats[0, 12].mean() > SILENCE_LOGMEL + 1.0
    assert np.allclose(feats[-1, -2:], SILENCE_LOGMEL)


def test_num_frames_override_pads_or_cuts():
    audio = _noise(1.0)
    assert compute_audio_features(audio, 25, num_frames=27).features.shape[0] == 27
    assert compute_audio_features(audio, 25, num_frames=20).features.shape[0] == 20


def test_empty_audio_is_an_error():
    with pytest.raises(LandmarkTalkError, match="speech.wav: is empty"):
        compute_audio_features(Audio(np.zeros((1, 0), np.float32), 16000), 25, name="speech.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_an_error_naming_the_input(bad):
    audio = _noise(1.0)
    audio.samples[0, 8000] = bad
    with pytest.raises(LandmarkTalkError, match=r"voice\.wav: 1 samples are NaN or infinite \(first at 0\.500 s\)"):
        compute_audio_features(audio, 25, name="voice.wav")


def test_bad_fps_and_window_are_errors():
    with pytest.raises(LandmarkTalkError, match="fps"):
        compute_audio_features(_noise(1.0), 0)
    with pytest.raises(LandmarkTalkError, match="window"):
        compute_audio_features(_noise(1.0), 25, window=0)
    with pytest.raises(LandmarkTalkError, match="kind"):
        compute_audio_features(_noise(1.0), 25, kind="mfcc")


def test_clipped_audio_works(shared_data):
    audio = _read(shared_data / "audio" / "clipped_16k.wav")
    feats = compute_audio_features(audio, 25).features
    assert feats.shape == (100, DEFAULT_WINDOW, 80)
    assert np.isfinite(feats).all() and feats.max() < 3.0


def test_8khz_mono_is_upsampled_with_a_warning(caplog):
    audio = _noise(1.5, rate=8000)
    with caplog.at_level(logging.WARNING, logger="pipelines.audio.features"):
        feats = compute_audio_features(audio, 30).features
    assert feats.shape == (45, DEFAULT_WINDOW, 80)
    assert "8000 Hz" in caplog.text
    # Mel bands above 4 kHz hold (almost) nothing after upsampling; the low bands hold the noise.
    middle = feats[5:-5]
    assert middle[..., -10:].mean() < middle[..., :40].mean() - 1.0


def test_too_low_rate_is_an_error():
    with pytest.raises(LandmarkTalkError, match="2000 Hz is too low"):
        compute_audio_features(_noise(1.0, rate=2000), 25)


def test_48khz_six_channels_downmix_to_the_mean(shared_data):
    # Six different channels at 48 kHz give the features of their mean, at the right length.
    speech = _read(shared_data / "audio" / "fayu.wav")  # 48 kHz stereo
    rng = np.random.default_rng(0)
    gains = rng.uniform(0.2, 1.0, (6, 1)).astype(np.float32)
    six = Audio(np.concatenate([speech.samples * g for g in gains[:3]] + [speech.samples[::-1] * g for g in gains[3:]])[:6], 48000)
    mean = Audio(six.samples.mean(axis=0, keepdims=True), 48000)
    a = compute_audio_features(six, 29.97).features
    b = compute_audio_features(mean, 29.97).features
    assert a.shape == (round(speech.duration_s * 29.97), DEFAULT_WINDOW, 80)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_resampled_input_matches_native_16k(shared_data):
    # The same speech at 48 kHz and at 16 kHz gives nearly the same features where there is sound.
    import librosa

    speech = _read(shared_data / "audio" / "RD_Radio31_000.wav")
    mono16 = speech.samples.mean(axis=0)
    mono48 = librosa.resample(mono16, orig_sr=16000, target_sr=48000)
    a = compute_audio_features(Audio(mono16[None], 16000), 25).features
    b = compute_audio_features(Audio(mono48[None], 48000), 25).features
    assert a.shape == b.shape == (200, DEFAULT_WINDOW, 80)
    loud = a > -0.5
    assert np.abs(a - b)[loud].mean() < 0.02


def test_speech_encoder_without_transformers_says_so(tmp_path, monkeypatch):
    import sys

    from pipelines.audio.encoders import load_speech_encoder

    with pytest.raises(FileNotFoundError, match="no such file"):
        load_speech_encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails, installed or not
    with pytest.raises(LandmarkTalkError, match="transformers` package is not installed"):
        load_speech_encoder(tmp_path)


def test_encoder_kind_needs_an_encoder():
    with pytest.raises(LandmarkTalkError, match="load_speech_encoder"):
        compute_audio_features(_noise(1.0), 25, kind="encoder")


def test_local_wav2vec2_encoder_gives_frame_windows(tmp_path):
    # Runs where transformers is installed: a tiny random wav2vec2 saved locally (nothing downloaded).
    transformers = pytest.importorskip("transformers")
    from pipelines.audio.encoders import load_speech_encoder

    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path)
    encoder = load_speech_encoder(tmp_path / "config.json")
    assert encoder.dim == 32 and encoder.step_s == pytest.approx(0.02)
    audio = _noise(3.0 + 77 / 48000, rate=48000, channels=2)
    feats = compute_audio_features(audio, 29.97, kind="encoder", encoder=encoder, window=8)
    assert feats.features.shape == (round(audio.duration_s * 29.97), 8, 32)
    assert feats.kind == f"encoder:{tmp_path.name}" and np.isfinite(feats.features).all()
