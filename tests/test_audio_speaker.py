"""Speaker embeddings: fixed size, unit length, cached, same voice closer than other voices."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from pipelines.audio import compute_speaker_embedding
from pipelines.audio.speaker import SPEAKER_DIM, resolve_speaker_method
from pipelines.errors import LandmarkTalkError
from pipelines.types import Audio


def _read(path, start_s: float = 0.0, stop_s: float | None = None) -> Audio:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    stop = None if stop_s is None else int(stop_s * rate)
    return Audio(np.ascontiguousarray(data.T[:, int(start_s * rate):stop]), rate)


def _has_resemblyzer() -> bool:
    import importlib.util

    return importlib.util.find_spec("resemblyzer") is not None


@pytest.mark.parametrize("method", [
    "logmel",
    pytest.param("ge2e", marks=pytest.mark.skipif(not _has_resemblyzer(), reason="resemblyzer not installed")),
])
def test_same_speaker_is_closer_than_other_speakers(shared_data, method):
    audio = shared_data / "audio"
    first = compute_speaker_embedding(_read(audio / "RD_Radio31_000.wav", 0, 4), method=method)
    second = compute_speaker_embedding(_read(audio / "RD_Radio31_000.wav", 4, 8), method=method)
    other = compute_speaker_embedding(_read(audio / "vretalking_audio_1.wav"), method=method)
    for vector in (first, second, other):
        assert vector.shape == (SPEAKER_DIM,) and vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    assert float(first @ second) > float(first @ other) + 0.1


def test_silent_audio_is_an_error(shared_data):
    with pytest.raises(LandmarkTalkError, match="silence_16k.wav: is silent"):
        compute_speaker_embedding(_read(shared_data / "audio" / "silence_16k.wav"), method="logmel", name="silence_16k.wav")


def test_embedding_is_cached_and_reused(tmp_path):
    rng = np.random.default_rng(0)
    audio = Audio(rng.uniform(-0.3, 0.3, (1, 16000)).astype(np.float32), 16000)
    path = tmp_path / "speaker.npy"
    vector = compute_speaker_embedding(audio, method="logmel", cache_path=path)
    np.testing.assert_array_equal(np.load(path), vector)
    # A later call reads the file instead of recomputing (prove it by planting a different vector).
    planted = np.ones(SPEAKER_DIM, np.float32) / np.sqrt(SPEAKER_DIM)
    np.save(path, planted)
    np.testing.assert_array_equal(compute_speaker_embedding(audio, method="logmel", cache_path=path), planted)
    # A corrupt cache (wrong size) is recomputed.
    np.save(path, np.ones(3, np.float32))
    np.testing.assert_allclose(compute_speaker_embedding(audio, method="logmel", cache_path=path), vector)


def test_auto_falls_back_with_a_warning_when_resemblyzer_is_missing(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "resemblyzer":
            raise ImportError("no resemblyzer")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with caplog.at_level(logging.WARNING, logger="pipelines.audio.speaker"):
        assert resolve_speaker_method("auto") == "logmel"
    assert "resemblyzer is not installed" in caplog.text
    with pytest.raises(LandmarkTalkError, match="pip install webrtcvad-wheels"):
        compute_speaker_embedding(Audio(np.full((1, 16000), 0.1, np.float32), 16000), method="ge2e")
    with pytest.raises(LandmarkTalkError, match="speaker method"):
        resolve_speaker_method("xvector")
