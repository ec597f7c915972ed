"""Speaker identity embedding: GE2E (Wan et al. 2018) through the optional ``resemblyzer`` package.

``resemblyzer`` ships its pretrained weights inside the package, so nothing is downloaded. Install it with
``pip install webrtcvad-wheels && pip install --no-deps resemblyzer`` (its pinned ``webrtcvad`` needs a C
compiler). Without it, a weaker fallback is used with a warning: mean and spread of the log-mel bands of
the voiced steps, projected to the same size by a fixed random matrix. Both give a unit-length float32
vector of :data:`SPEAKER_DIM` values; a model records which method it was trained with.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import LandmarkTalkError
from ..types import Audio
from .features import _logmel, _mono_16k

__all__ = ["compute_speaker_embedding", "resolve_speaker_method", "SPEAKER_DIM"]

logger = logging.getLogger(__name__)

SPEAKER_DIM = 256
_METHODS = ("ge2e", "logmel")
_SILENT_RMS = 1e-4  # about -80 dBFS: nothing to identify a speaker from
_MIN_VOICED_S = 0.3


def _import_resemblyzer():
    with warnings.catch_warnings():
        # resemblyzer imports scipy.ndimage.morphology, deprecated in SciPy 1.x but still present.
        warnings.simplefilter("ignore", DeprecationWarning)
        import resemblyzer
    return resemblyzer


def resolve_speaker_method(method: str = "auto") -> str:
    """``"auto"`` → ``"ge2e"`` when resemblyzer imports, else ``"logmel"`` (with a warning)."""
    if method not in ("auto", *_METHODS):
        raise LandmarkTalkError(f"speaker method {method!r}: use 'auto', 'ge2e' or 'logmel'")
    if method != "auto":
        return method
    try:
        _import_resemblyzer()
        return "ge2e"
    except ImportError:
        logger.warning(
            "resemblyzer is not installed, so speaker embeddings fall back to log-mel statistics (weaker); "
            "install it with `pip install webrtcvad-wheels && pip install --no-deps resemblyzer`"
        )
        return "logmel"


def _ge2e(mono: np.ndarray) -> np.ndarray:
    try:
        resemblyzer = _import_resemblyzer()
    except ImportError as exc:
        raise LandmarkTalkError(
            "speaker method 'ge2e' needs the resemblyzer package: "
            "`pip install webrtcvad-wheels && pip install --no-deps resemblyzer`, or use method='logmel'"
        ) from exc
    import torch

    wav = resemblyzer.normalize_volume(mono, resemblyzer.audio.audio_norm_target_dBFS, increase_only=True)
    voiced = resemblyzer.trim_long_silences(np.clip(wav, -1.0, 1.0))
    if len(voiced) >= _MIN_VOICED_S * 16000:
        wav = voiced
    else:
        logger.info("speaker embedding: the voice detector kept %.2f s; using the whole recording", len(voiced) / 16000)
    encoder = resemblyzer.VoiceEncoder(device=torch.device("cpu"), verbose=False)
    return np.asarray(encoder.embed_utterance(wav.astype(np.float32)), dtype=np.float32)


def _logmel_statistics(mono: np.ndarray) -> np.ndarray:
    mel = _logmel(mono)
    loudness = mel.mean(axis=1)
    voiced = mel[loudness > loudness.max() - 1.0]  # steps within ~40 dB of the loudest
    stats = np.concatenate([voiced.mean(axis=0), voiced.std(axis=0)])
    # A fixed projection keeps the size equal to GE2E's so models and caches share one shape.
    projection = np.random.default_rng(20180415).standard_normal((stats.size, SPEAKER_DIM)) / np.sqrt(stats.size)
    vector = stats @ projection
    return (vector / (np.linalg.norm(vector) + 1e-8)).astype(np.float32)


def _save_atomic(vector: np.ndarray, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
        os.close(fd)
        np.save(tmp, vector)
        os.replace(tmp, path)
    except OSError:
        logger.debug("could not cache the speaker embedding at %s", path, exc_info=True)


def compute_speaker_embedding(
    audio: Audio, *, method: str = "auto", cache_path: str | os.PathLike | None = None, name: str = "audio"
) -> np.ndarray:
    """A unit-length float32 [SPEAKER_DIM] voice embedding; read from / written to ``cache_path`` (.npy) when given."""
    method = resolve_speaker_method(method)
    if cache_path is not None:
        cache_path = Path(cache_path)
        if cache_path.is_file():
            vector = np.load(cache_path)
            if vector.shape == (SPEAKER_DIM,) and np.isfinite(vector).all():
                return vector.astype(np.float32)
            logger.warning("%s: cached speaker embedding has shape %s; computing it again", cache_path, vector.shape)
    mono = _mono_16k(audio, name)
    if float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))) < _SILENT_RMS:
        raise LandmarkTalkError(f"{name}: is silent, so there is no voice to embed; give speech of the person")
    vector = _ge2e(mono) if method == "ge2e" else _logmel_statistics(mono)
    if vector.shape != (SPEAKER_DIM,) or not np.isfinite(vector).all():
        raise LandmarkTalkError(f"{name}: the {method} speaker embedding came out invalid (shape {vector.shape})")
    if cache_path is not None:
        _save_atomic(vector, cache_path)
    return vector
