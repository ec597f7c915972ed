"""Per-video-frame audio feature windows: log-mel (default) or a local speech encoder's hidden states.

Every input is downmixed to mono and resampled to 16 kHz first. Frame ``t`` of a video at ``fps`` shows
the interval ``[t/fps, (t+1)/fps)``; its window of ``W`` feature steps is centred on the middle of that
interval (DiffTalk §4.2.2 centres each audio window on its video frame). Steps outside the audio are
padded with the value digital silence produces, so edges read as silence rather than as repeated sound.

:func:`iter_audio_features` gives the same windows a stretch of frames at a time, reading only the audio
those frames hear, so a long speech never has its whole feature array (or spectrogram) in memory.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterator

import numpy as np

from ..errors import LandmarkTalkError
from ..types import Audio, AudioFeatures, frame_count_for

__all__ = ["compute_audio_features", "iter_audio_features", "FEATURE_RATE", "DEFAULT_WINDOW"]

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
# Log-mel steps are computed in blocks at fixed step indices (10 s each): a stretch of frames computed on
# its own then reads exactly the numbers the whole clip gives (FFT and matrix products round differently
# for different array lengths, by an ulp, so the blocks must be the same ones).
_BLOCK_STEPS = 1000


def _check_samples(samples: np.ndarray, rate: int, name: str, offset: int = 0) -> np.ndarray:
    """[C, N] (or [N]) samples as a 2-D array, after the checks every feature kind needs."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2:
        raise LandmarkTalkError(f"{name}: samples must be [channels, N], got shape {samples.shape}")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=0))
        raise LandmarkTalkError(
            f"{name}: {bad.size} samples are NaN or infinite (first at {(offset + bad[0]) / rate:.3f} s); "
            "re-export the audio or replace the bad samples before computing features"
        )
    return samples


def _check_rate(rate: int, num_samples: int, channels: int, name: str) -> None:
    if num_samples == 0 or channels == 0:
        raise LandmarkTalkError(f"{name}: is empty (0 samples); give a recording with sound in it")
    if rate < _MIN_RATE:
        raise LandmarkTalkError(f"{name}: {rate} Hz is too low for speech features; give 8 kHz or higher audio")
    if rate < FEATURE_RATE:
        logger.warning(
            "%s: %d Hz audio is upsampled to %d Hz; mel bands above %d Hz stay empty and lip-sync may suffer",
            name, rate, FEATURE_RATE, rate // 2,
        )


def _mono_16k(audio: Audio, name: str) -> np.ndarray:
    """Validate, downmix and resample to 16 kHz mono float32."""
    samples = np.asarray(audio.samples)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2:
        raise LandmarkTalkError(f"{name}: samples must be [channels, N], got shape {samples.shape}")
    rate = int(audio.sample_rate)
    _check_rate(rate, samples.shape[1], samples.shape[0], name)
    samples = _check_samples(samples, rate, name)
    mono = samples.astype(np.float32, copy=False).mean(axis=0)
    if rate != FEATURE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=FEATURE_RATE).astype(np.float32)
    return mono


def _mono_reader(audio, name: str) -> tuple[Callable[[int, int], np.ndarray], int]:
    """(read(start, stop) → 16 kHz mono float32 samples, how many there are) for an Audio or a decoded file.

    A file (:class:`pipelines.media.AudioFile`) already at 16 kHz is read a slice at a time; anything else
    is resampled whole first (resampling a slice would not give the same samples at its edges).
    """
    if isinstance(audio, Audio) or int(audio.sample_rate) != FEATURE_RATE:
        if not isinstance(audio, Audio):
            logger.debug("%s: %d Hz file read whole to resample it to %d Hz", name, audio.sample_rate, FEATURE_RATE)
            audio = audio.load()
        mono = _mono_16k(audio, name)
        return (lambda start, stop: mono[start:stop]), len(mono)
    _check_rate(FEATURE_RATE, int(audio.num_samples), int(audio.channels), name)

    def read(start: int, stop: int) -> np.ndarray:
        samples = _check_samples(audio.read(start, stop), FEATURE_RATE, name, offset=start)
        return samples.astype(np.float32, copy=False).mean(axis=0)

    return read, int(audio.num_samples)


def _logmel_block(read: Callable[[int, int], np.ndarray], num_samples: int, first: int, stop: int) -> np.ndarray:
    """Scaled log-mel [stop - first, 80] of steps ``first..stop-1``; outside the audio reads as zeros
    (what librosa's centred, constant-padded frames see)."""
    import librosa

    begin, end = first * _HOP - _N_FFT // 2, (stop - 1) * _HOP + _N_FFT // 2
    frames = np.zeros(end - begin, np.float32)
    inside_begin, inside_end = max(begin, 0), min(end, num_samples)
    if inside_end > inside_begin:
        frames[inside_begin - begin:inside_end - begin] = read(inside_begin, inside_end)
    mel = librosa.feature.melspectrogram(
        y=frames, sr=FEATURE_RATE, n_fft=_N_FFT, hop_length=_HOP, win_length=_WIN, n_mels=_N_MELS,
        fmin=_FMIN, fmax=_FMAX, center=False, power=2.0,
    )
    db = np.maximum(10.0 * np.log10(np.maximum(mel, 1e-12)), _DB_FLOOR)
    return ((db.T + _DB_OFFSET) / _DB_SCALE).astype(np.float32)


def _logmel_steps(read: Callable[[int, int], np.ndarray], num_samples: int, first: int, stop: int) -> np.ndarray:
    """Steps ``first..stop-1`` (within the clip's ``1 + num_samples // hop``) of the clip's log-mel."""
    if stop <= first:
        return np.zeros((0, _N_MELS), np.float32)
    total = 1 + num_samples // _HOP
    blocks = [
        _logmel_block(read, num_samples, block, min(block + _BLOCK_STEPS, total))
        for block in range(first // _BLOCK_STEPS * _BLOCK_STEPS, stop, _BLOCK_STEPS)
    ]
    start = first % _BLOCK_STEPS
    return np.concatenate(blocks)[start:start + stop - first]


def _logmel(mono: np.ndarray) -> np.ndarray:
    """[F, 80] scaled log-mel at 100 steps per second; step i is centred at i * 10 ms."""
    return _logmel_steps(lambda start, stop: mono[start:stop], len(mono), 0, 1 + len(mono) // _HOP)


def _window_steps(first: int, count: int, step_s: float, fps: float, window: int) -> np.ndarray:
    """[count, window] step indices of frames ``first..first+count-1``, each window around its frame centre."""
    centres = np.rint((np.arange(first, first + count) + 0.5) / fps / step_s).astype(np.int64)
    return centres[:, None] + np.arange(window)[None, :] - window // 2


def _gather(sequence: np.ndarray, offset: int, total: int, index: np.ndarray, pad: float | None) -> np.ndarray:
    """Rows ``index`` of a sequence of ``total`` steps of which ``sequence`` holds those from ``offset`` on;
    steps outside ``0..total-1`` read ``pad`` (``None`` repeats the edge steps)."""
    if pad is None:
        return sequence[np.clip(index, 0, total - 1) - offset]
    padded = np.concatenate([sequence, np.full((1, sequence.shape[1]), pad, sequence.dtype)])
    index = np.where((index < 0) | (index >= total), offset + len(sequence), index) - offset
    return padded[index]


def _frame_windows(
    sequence: np.ndarray, step_s: float, fps: float, num_frames: int, window: int, pad: float | None
) -> np.ndarray:
    """Gather ``window`` steps of ``sequence`` [F, D] around each frame centre; ``pad=None`` repeats edges."""
    return _gather(sequence, 0, len(sequence), _window_steps(0, num_frames, step_s, fps, window), pad)


def _check_request(fps, window: int) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise LandmarkTalkError(f"fps {fps!r}: give a positive frame rate such as 25 or 29.97")
    if int(window) < 1:
        raise LandmarkTalkError(f"window {window}: give at least 1 feature step per frame")


def _frame_count(duration_s: float, fps: float, num_frames: int | None, name: str) -> int:
    """Frames a feature request covers: the audio's own count, or ``num_frames`` (at least 1)."""
    expected = frame_count_for(duration_s, fps)
    if num_frames is None:
        num_frames = expected
    elif abs(int(num_frames) - expected) > max(2, 0.05 * expected):
        logger.warning("%s: lasts %d frames at %g fps but %d were asked for; the rest is padded or cut",
                       name, expected, fps, num_frames)
    if int(num_frames) < 1:
        raise LandmarkTalkError(
            f"{name}: {duration_s * 1000:.1f} ms is shorter than half a video frame at {fps:g} fps; give longer audio"
        )
    return int(num_frames)


def _check_kind(kind: str, encoder) -> None:
    if kind not in ("logmel80", "encoder"):
        raise LandmarkTalkError(f"kind {kind!r}: unknown feature kind; use 'logmel80' or 'encoder'")
    if kind == "encoder" and encoder is None:
        raise LandmarkTalkError("kind='encoder' needs encoder=load_speech_encoder(path)")


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
    _check_request(fps, window)
    _check_kind(kind, encoder)
    mono = _mono_16k(audio, name)
    num_frames = _frame_count(audio.duration_s, fps, num_frames, name)
    if kind == "logmel80":
        sequence, step_s, pad, label = _logmel(mono), _HOP / FEATURE_RATE, SILENCE_LOGMEL, "logmel80"
    else:
        from .encoders import encode_speech

        sequence, step_s = encode_speech(encoder, mono)
        pad, label = None, f"encoder:{encoder.name}"
    features = _frame_windows(sequence, step_s, float(fps), num_frames, int(window), pad)
    return AudioFeatures(features=np.ascontiguousarray(features, dtype=np.float32), fps=float(fps), kind=label)


def encode_audio(audio, encoder, *, name: str = "audio") -> tuple[np.ndarray, float]:
    """A speech encoder's hidden states [F, D] of ``audio`` (an Audio or a decoded file, any rate and channels)
    and their step in seconds."""
    from .encoders import encode_speech

    return encode_speech(encoder, _mono_16k(audio if isinstance(audio, Audio) else audio.load(), name))


def iter_audio_features(
    audio,
    fps: float,
    *,
    window: int = DEFAULT_WINDOW,
    kind: str = "logmel80",
    encoder=None,
    num_frames: int | None = None,
    window_frames: int = 1500,
    name: str = "audio",
    encoded: tuple[np.ndarray, float] | None = None,
) -> Iterator[AudioFeatures]:
    """:func:`compute_audio_features`, ``window_frames`` video frames at a time: consecutive windows
    [t, W, D] whose concatenation equals the whole-clip result exactly.

    ``audio``: an :class:`~pipelines.types.Audio` or a decoded file (:class:`pipelines.media.AudioFile`);
    a 16 kHz file is read one stretch at a time (plus the margin its first and last windows hear), so
    memory does not grow with the length of the speech. ``kind="encoder"`` computes the hidden states of
    the whole clip once (a transformer's states depend on all of it) and gathers each stretch's windows from
    them, so only the states are held (W times smaller than all the windows); ``encoded``, the result of
    :func:`encode_audio` for this audio, saves computing them again (a second pass over the same speech).
    """
    if int(window_frames) < 1:
        raise LandmarkTalkError(f"window_frames {window_frames}: give at least 1 frame per window")
    window_frames = int(window_frames)
    _check_request(fps, window)
    _check_kind(kind, encoder)
    if kind == "encoder":
        num_frames = _frame_count(audio.duration_s, fps, num_frames, name)
        sequence, step_s = encoded if encoded is not None else encode_audio(audio, encoder, name=name)
        for start in range(0, num_frames, window_frames):
            index = _window_steps(start, min(window_frames, num_frames - start), step_s, float(fps), int(window))
            features = _gather(sequence, 0, len(sequence), index, None)
            yield AudioFeatures(features=np.ascontiguousarray(features, dtype=np.float32), fps=float(fps),
                                kind=f"encoder:{encoder.name}")
        return
    read, num_samples = _mono_reader(audio, name)
    num_frames = _frame_count(audio.duration_s, fps, num_frames, name)
    step_s, window = _HOP / FEATURE_RATE, int(window)
    total_steps = 1 + num_samples // _HOP
    for start in range(0, num_frames, window_frames):
        index = _window_steps(start, min(window_frames, num_frames - start), step_s, float(fps), window)
        first, last = max(int(index.min()), 0), min(int(index.max()), total_steps - 1)
        steps = _logmel_steps(read, num_samples, first, max(last + 1, first))
        features = _gather(steps, first, total_steps, index, SILENCE_LOGMEL)
        yield AudioFeatures(features=np.ascontiguousarray(features, dtype=np.float32), fps=float(fps), kind="logmel80")
