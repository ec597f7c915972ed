"""Per-video-frame audio feature windows: log-mel (default) or a local speech encoder's hidden states.

Every input is downmixed to mono and resampled to 16 kHz first. Frame ``t`` of a video at ``fps`` shows
the interval ``[t/fps, (t+1)/fps)``; its window of ``W`` feature steps is centred on the middle of that
interval (DiffTalk §4.2.2 centres each audio window on its video frame). Steps outside the audio are
padded with the value digital silence produces, so edges read as silence rather than as repeated sound.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import LandmarkTalkError
from ..types import Audio, AudioFeatures, frame_count_for

__all__ = ["compute_audio_features", "FEATURE_RATE", "DEFAULT_WINDOW"]

logger = logging.getLogger(__name__)

FEATURE_RATE = 16000  # Hz; every feature kind works on 16 kHz mono
DEFAULT_WINDOW = 20  # log-mel steps of 10 ms → 200 ms centred on each frame
_HOP = 160  # 10 ms
_N_FFT = 512
_WIN = 400  # 25 ms
_N_MELS = 80
_FMIN, _FMAX = 55.0, 7600.0
# log-mel in dB of power, floored at -100 dB (what digital silence gives), mapped by a fixed affine so
# speech lands roughly in -1..1 (measured on the shared clips: 1st..99th percentile ≈ -75..+18 dB).
_DB_FLOOR = -100.0
_DB_OFFSET = 40.0
_DB_SCALE = 40.0
SILENCE_LOGMEL = (_DB_FLOOR + _DB_OFFSET) / _DB_SCALE
LOGMEL_PER_DB = 1.0 / _DB_SCALE  # a gain of g dB shifts every non-silent log-mel value by g * LOGMEL_PER_DB
_MIN_RATE = 4000  # below this there is too little speech band left to be worth upsampling


def _mono_16k(audio: Audio, name: str) -> np.ndarray:
    """Validate, downmix and resample to 16 kHz mono float32."""
    samples = np.asarray(audio.samples)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2:
        raise LandmarkTalkError(f"{name}: samples must be [channels, N], got shape {samples.shape}")
    rate = int(audio.sample_rate)
    if samples.shape[1] == 0 or samples.shape[0] == 0:
        raise LandmarkTalkError(f"{name}: is empty (0 samples); give a recording with sound in it")
    if rate < _MIN_RATE:
        raise LandmarkTalkError(f"{name}: {rate} Hz is too low for speech features; give 8 kHz or higher audio")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=0))
        raise LandmarkTalkError(
            f"{name}: {bad.size} samples are NaN or infinite (first at {bad[0] / rate:.3f} s); "
            "re-export the audio or replace the bad samples before computing features"
        )
    if rate < FEATURE_RATE:
        logger.warning(
            "%s: %d Hz audio is upsampled to %d Hz; mel bands above %d Hz stay empty and lip-sync may suffer",
            name, rate, FEATURE_RATE, rate // 2,
        )
    mono = samples.astype(np.float32, copy=False).mean(axis=0)
    if rate != FEATURE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=FEATURE_RATE).astype(np.float32)
    return mono


def _logmel(mono: np.ndarray) -> np.ndarray:
    """[F, 80] scaled log-mel at 100 steps per second; step i is centred at i * 10 ms."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=mono, sr=FEATURE_RATE, n_fft=_N_FFT, hop_length=_HOP, win_length=_WIN, n_mels=_N_MELS,
        fmin=_FMIN, fmax=_FMAX, center=True, pad_mode="constant", power=2.0,
    )
    db = np.maximum(10.0 * np.log10(np.maximum(mel, 1e-12)), _DB_FLOOR)
    return ((db.T + _DB_OFFSET) / _DB_SCALE).astype(np.float32)


def _frame_windows(
    sequence: np.ndarray, step_s: float, fps: float, num_frames: int, window: int, pad: float | None
) -> np.ndarray:
    """Gather ``window`` steps of ``sequence`` [F, D] around each frame centre; ``pad=None`` repeats edges."""
    centres = np.rint((np.arange(num_frames) + 0.5) / fps / step_s).astype(np.int64)
    index = centres[:, None] + np.arange(window)[None, :] - window // 2
    if pad is None:
        return sequence[np.clip(index, 0, len(sequence) - 1)]
    padded = np.concatenate([sequence, np.full((1, sequence.shape[1]), pad, sequence.dtype)])
    index = np.where((index < 0) | (index >= len(sequence)), len(sequence), index)
    return padded[index]


def compute_audio_features(
    audio: Audio,
    fps: float,
    *,
    window: int = DEFAULT_WINDOW,
    kind: str = "logmel80",
    encoder=None,
    num_frames: int | None = None,
    name: str = "audio",
) -> AudioFeatures:
    """Feature windows [T, W, D] for ``T = round(duration * fps)`` video frames.

    ``kind="logmel80"``: 80-band log-mel, 10 ms steps. ``kind="encoder"``: hidden states of ``encoder``
    (from :func:`pipelines.audio.encoders.load_speech_encoder`), ``window`` counts its steps (20 ms for
    wav2vec2/HuBERT). ``num_frames`` overrides T to line features up with an existing video whose
    stream is a few milliseconds longer or shorter (training caches); ``name`` is how errors refer to
    the input.
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise LandmarkTalkError(f"fps {fps!r}: give a positive frame rate such as 25 or 29.97")
    if int(window) < 1:
        raise LandmarkTalkError(f"window {window}: give at least 1 feature step per frame")
    mono = _mono_16k(audio, name)
    expected = frame_count_for(audio.duration_s, fps)
    if num_frames is None:
        num_frames = expected
    elif abs(int(num_frames) - expected) > max(2, 0.05 * expected):
        logger.warning("%s: lasts %d frames at %g fps but %d were asked for; the rest is padded or cut",
                       name, expected, fps, num_frames)
    num_frames = int(num_frames)
    if num_frames < 1:
        raise LandmarkTalkError(
            f"{name}: {audio.duration_s * 1000:.1f} ms is shorter than half a video frame at {fps:g} fps; give longer audio"
        )
    if kind == "logmel80":
        sequence, step_s, pad, label = _logmel(mono), _HOP / FEATURE_RATE, SILENCE_LOGMEL, "logmel80"
    elif kind == "encoder":
        if encoder is None:
            raise LandmarkTalkError("kind='encoder' needs encoder=load_speech_encoder(path)")
        from .encoders import encode_speech

        sequence, step_s = encode_speech(encoder, mono)
        pad, label = None, f"encoder:{encoder.name}"
    else:
        raise LandmarkTalkError(f"kind {kind!r}: unknown feature kind; use 'logmel80' or 'encoder'")
    features = _frame_windows(sequence, step_s, float(fps), num_frames, int(window), pad)
    return AudioFeatures(features=np.ascontiguousarray(features, dtype=np.float32), fps=float(fps), kind=label)
