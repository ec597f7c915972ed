"""Audio-to-landmark model (A2L): speech features → 68 face landmarks per frame, from clip caches.

Batches are random windows of consecutive training frames (2–4 s by default) of one clip, each with a
random reference frame of the same clip and the clip's speaker embedding; validation is the held-out
tail of every clip, with three fixed references. Targets are laid onto their reference by a similarity
over skull-fixed points. Loss (in canonical units of 1/10 inter-ocular distance): point MSE with the
mouth weighted up and the jaw outline down, a velocity term on frame-to-frame motion, the same MSE on
the context network's intermediate landmarks, and, on silent windows, an L1 term on the inner-lip gap. Log-mel windows get a random gain (±6 dB) and one masked band
of mel channels (SpecAugment-style), since a few minutes of one voice overfit fast. Silence augmentation
replaces a window's audio by digital silence and its target by the speaker's closed-mouth shape, with a
larger loss weight, so silence learns to close the mouth without any hard-coded energy gate.

Every sample also carries the speaker's mean training shape laid onto its reference (``mean_shape``), the
starting point of ``mouth_start="mean_shape"`` models; :meth:`A2LTask.shape_basis` gives the PCA basis of
the training mouths for ``mouth_components > 0`` models. ``inner_holdout`` carves a validation split out of
the training part (its tail) so settings can be chosen without touching the held-out tail at all.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..audio.features import LOGMEL_PER_DB, SILENCE_LOGMEL, compute_audio_features
from ..audio.speaker import compute_speaker_embedding, resolve_speaker_method
from ..cache import ClipCache, load_clip_caches
from ..errors import LandmarkTalkError
from ..models.a2l import (ENCODER_FEATURE_WINDOW, A2L, A2LConfig, align_to_reference, feature_options, lip_opening,
                          to_canonical)
from ..types import Audio
from .loop import TrainConfig

__all__ = ["A2LTask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(
    steps=1200, batch_size=16, learning_rate=1e-3, weight_decay=1e-4, warmup_steps=100, ema_decay=0.995,
    val_every=200, save_every=500,
)
_UNITS = 10.0  # losses in 1/10 inter-ocular distance, so they read near 1 instead of 1e-3
_MOUTH = slice(48, 68)
_JAW = slice(0, 17)
_CLOSED_PERCENTILE = 10.0
_GAIN_DB = 6.0
_MAX_MASKED_BANDS = 8


def _augment_logmel(windows: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Random gain on everything above the silence floor, and one band of mel channels set to its mean."""
    gain = (float(torch.rand(1, generator=generator)) * 2 - 1) * _GAIN_DB * LOGMEL_PER_DB
    sound = windows > SILENCE_LOGMEL + 1e-6
    out = np.where(sound, np.maximum(windows + gain, SILENCE_LOGMEL), windows).astype(np.float32)
    width = int(torch.randint(0, _MAX_MASKED_BANDS + 1, (1,), generator=generator))
    if width:
        start = int(torch.randint(0, out.shape[-1] - width + 1, (1,), generator=generator))
        out[..., start:start + width] = out[..., start:start + width].mean()
    return out


@dataclass
class _Clip:
    name: str
    features: np.ndarray  # T W D
    canonical: np.ndarray  # T 68 2
    speaker: np.ndarray  # S
    train: range
    val: range
    closed_shape: np.ndarray  # 68 2: mean canonical shape of the training frames with the mouth closed
    aligned_train: np.ndarray  # N 68 2: training frames laid onto the first one (for mean shapes and PCA)


def _clip_speaker(cache: ClipCache, frames: range, method: str) -> np.ndarray:
    """Speaker embedding of the training part of the clip's audio, cached beside the cache."""
    audio = cache.audio()
    start = int(round(frames.start / cache.fps * audio.sample_rate))
    stop = int(round(frames.stop / cache.fps * audio.sample_rate))
    part = Audio(samples=audio.samples[:, start:stop], sample_rate=audio.sample_rate)
    path = cache.root / f"speaker_{method}_{frames.start}-{frames.stop}.npy"
    return compute_speaker_embedding(part, method=method, cache_path=path, name=f"{cache.source} audio")


def _prepare_clip(cache: ClipCache, holdout: float, config: A2LConfig, inner_holdout: float = 0.0,
                  speech_encoder=None) -> _Clip:
    train, val = cache.train_val_frames(holdout)
    if inner_holdout:
        if not 0.0 < inner_holdout < 1.0:
            raise LandmarkTalkError(f"inner holdout {inner_holdout}: give a fraction in (0, 1) of the training part, e.g. 0.25")
        # Validate on the tail of the training part; the held-out tail stays unseen.
        cut = train.stop - int(round(len(train) * inner_holdout))
        train, val = range(train.start, cut), range(cut, train.stop)
    if len(train) < 8:
        raise LandmarkTalkError(f"{cache.source}: only {len(train)} training frames; give a longer clip or a smaller --holdout")
    canonical, _ = to_canonical(cache.landmarks())
    features = compute_audio_features(
        cache.audio(), cache.fps, num_frames=cache.num_frames, name=f"{cache.source} audio",
        **feature_options(config, speech_encoder),
    ).features
    opening = lip_opening(canonical[train.start:train.stop])
    closed = opening <= np.percentile(opening, _CLOSED_PERCENTILE)
    closed_frames = canonical[train.start:train.stop][closed]
    closed_shape = align_to_reference(closed_frames, closed_frames[0]).mean(axis=0)
    return _Clip(
        name=cache.source, features=features, canonical=canonical, speaker=_clip_speaker(cache, train, config.speaker_method),
        train=train, val=val, closed_shape=closed_shape.astype(np.float32),
        aligned_train=align_to_reference(canonical[train.start:train.stop], canonical[train.start]),
    )


def _silence_window(config: A2LConfig, speech_encoder) -> np.ndarray:
    """[W, D] features of digital silence, what the silence augmentation feeds in place of speech."""
    if speech_encoder is None:
        return np.full((config.feature_window, config.feature_dim), SILENCE_LOGMEL, np.float32)
    # A speech encoder's silence is whatever it makes of zeros: take a window from the middle of one second.
    silent = compute_audio_features(Audio(np.zeros((1, 16000), np.float32), 16000), 25.0, name="silence",
                                    **feature_options(config, speech_encoder)).features
    return silent[len(silent) // 2]


def _mean_shape(clip: _Clip, reference: np.ndarray) -> np.ndarray:
    """The clip's training frames laid onto ``reference`` by their rigid points, averaged."""
    return align_to_reference(clip.aligned_train, reference).mean(axis=0).astype(np.float32)


def _lip_gap(points: torch.Tensor) -> torch.Tensor:
    """Inner-lip opening [..., T] of landmarks [..., T, 68, 2] (torch twin of ``lip_opening``)."""
    upper, lower = points[..., [61, 62, 63], :], points[..., [67, 66, 65], :]
    return (upper - lower).norm(dim=-1).mean(dim=-1)


def _silence_target(reference: np.ndarray, closed_shape: np.ndarray) -> np.ndarray:
    """The reference shape with its mouth and jaw replaced by the speaker's closed-mouth ones."""
    closed = align_to_reference(closed_shape, reference)
    target = reference.copy()
    target[_MOUTH] = closed[_MOUTH]
    target[_JAW] = closed[_JAW]
    return target


class A2LTask:
    """Training task over clip caches (see the module docstring)."""

    def __init__(
        self,
        caches: list[ClipCache],
        config: A2LConfig,
        *,
        holdout: float = 0.2,
        window_seconds: tuple[float, float] = (2.0, 4.0),
        mouth_weight: float = 3.0,
        jaw_weight: float = 0.25,
        velocity_weight: float = 1.0,
        opening_weight: float = 3.0,
        intermediate_weight: float = 0.3,
        silence_probability: float = 0.3,
        silence_weight: float = 5.0,
        augment: bool = True,
        inner_holdout: float = 0.0,
        speech_encoder=None,
    ):
        if not caches:
            raise LandmarkTalkError("--data: no clip caches to train on")
        self.config = config
        self.clips = [_prepare_clip(cache, holdout, config, inner_holdout, speech_encoder) for cache in caches]
        fps = min(cache.fps for cache in caches)
        shortest = min(len(clip.train) for clip in self.clips)
        low, high = sorted(window_seconds)
        self.window_frames = (min(max(4, int(round(low * fps))), shortest), min(max(4, int(round(high * fps))), shortest))
        weights = torch.ones(68)
        weights[_MOUTH] = mouth_weight
        # The tracked jaw outline slides with every head turn, which speech does not predict; at full
        # weight its error dominated the loss (measured: 7× the mouth's on held-out frames).
        weights[_JAW] = jaw_weight
        self.point_weights = weights / weights.mean()
        self.velocity_weight = velocity_weight
        self.opening_weight = opening_weight
        self.intermediate_weight = intermediate_weight
        self.silence_probability = silence_probability
        self.silence_weight = silence_weight
        self.augment = augment and config.feature_kind == "logmel80"
        self._train_sizes = torch.tensor([float(len(c.train)) for c in self.clips])
        self._silence = _silence_window(config, speech_encoder)
        logger.info(
            "A2L data: %d clips, %d training and %d validation frames, windows of %d–%d frames",
            len(self.clips), sum(len(c.train) for c in self.clips), sum(len(c.val) for c in self.clips), *self.window_frames,
        )

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        low, high = self.window_frames
        length = int(torch.randint(low, high + 1, (1,), generator=generator))
        clip_ids = torch.multinomial(self._train_sizes, batch_size, replacement=True, generator=generator)
        features, references, speakers, targets, weights, silents, means = [], [], [], [], [], [], []
        for clip_id in clip_ids.tolist():
            clip = self.clips[clip_id]
            start = clip.train.start + int(torch.randint(0, len(clip.train) - length + 1, (1,), generator=generator))
            ref_frame = clip.train.start + int(torch.randint(0, len(clip.train), (1,), generator=generator))
            reference = clip.canonical[ref_frame]
            silent = self._silence is not None and float(torch.rand(1, generator=generator)) < self.silence_probability
            if silent:
                features.append(np.broadcast_to(self._silence, (length, *self._silence.shape)))
                targets.append(np.broadcast_to(_silence_target(reference, clip.closed_shape), (length, 68, 2)))
            else:
                windows = clip.features[start:start + length]
                features.append(_augment_logmel(windows, generator) if self.augment else windows)
                # Lay every target onto the reference's rigid points: what is left is non-rigid (speech) motion.
                targets.append(align_to_reference(clip.canonical[start:start + length], reference))
            references.append(reference)
            means.append(_mean_shape(clip, reference))
            speakers.append(clip.speaker)
            weights.append(self.silence_weight if silent else 1.0)
            silents.append(float(silent))
        return {
            "features": torch.from_numpy(np.stack(features)).float(),
            "reference": torch.from_numpy(np.stack(references)).float(),
            "speaker": torch.from_numpy(np.stack(speakers)).float(),
            "mean_shape": torch.from_numpy(np.stack(means)).float(),
            "target": torch.from_numpy(np.stack(targets)).float(),
            "weight": torch.tensor(weights, dtype=torch.float32),
            "silent": torch.tensor(silents, dtype=torch.float32),
        }

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """One batch per clip: its whole held-out tail, three times, referenced by the first, middle and
        last training frame (one reference alone made the figure depend on that frame's mouth)."""
        batches = []
        for clip in self.clips:
            if len(clip.val) < 2:
                continue
            refs = [clip.train.start, (clip.train.start + clip.train.stop - 1) // 2, clip.train.stop - 1]
            truth = clip.canonical[clip.val.start:clip.val.stop]
            batches.append({
                "features": torch.from_numpy(clip.features[clip.val.start:clip.val.stop][None]).float().expand(3, -1, -1, -1),
                "reference": torch.from_numpy(clip.canonical[refs]).float(),
                "speaker": torch.from_numpy(clip.speaker[None]).float().expand(3, -1),
                "mean_shape": torch.from_numpy(np.stack([_mean_shape(clip, clip.canonical[r]) for r in refs])).float(),
                "target": torch.from_numpy(np.stack([align_to_reference(truth, clip.canonical[r]) for r in refs])).float(),
            })
        return batches

    def shape_basis(self, model: A2L) -> np.ndarray:
        """[K, 136] principal directions of the training shapes' driven points around each clip's mean,
        for ``model`` (K = its ``mouth_components``; set it with ``model.set_shape_basis``).

        Computed with the loss's point weights (so the jaw outline's pose-driven sliding does not outvote
        the lips) and mapped back to plain coordinates; non-driven points get zeros.
        """
        components = model.config.mouth_components
        driven = model.point_mask.detach().cpu().numpy() > 0
        scale = np.sqrt(self.point_weights.numpy())[:, None].repeat(2, axis=1).reshape(-1)
        rows = [(c.aligned_train - c.aligned_train.mean(axis=0)).reshape(len(c.train), -1) for c in self.clips]
        deviations = np.concatenate(rows) * driven * scale
        if not 0 < components <= min(deviations.shape):
            raise LandmarkTalkError(
                f"mouth components {components}: give 1..{min(deviations.shape)} (what the training frames provide)"
            )
        _, _, vt = np.linalg.svd(deviations, full_matrices=False)
        return (vt[:components] / scale).astype(np.float32)

    def _weighted_mse(self, predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        squared = ((predicted - target) * _UNITS).pow(2).sum(dim=-1)  # b t p
        per_sample = (squared * self.point_weights.to(squared.device)).mean(dim=(1, 2))
        return per_sample.mean() if weight is None else (per_sample * weight).sum() / weight.sum()

    def compute_loss(self, model: A2L, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        predicted, intermediate = model(batch["features"], batch["reference"], batch["speaker"], mean_shape=batch.get("mean_shape"),
                                        return_intermediate=True)
        target, weight = batch["target"], batch.get("weight")
        landmark = self._weighted_mse(predicted, target, weight)
        velocity = self._weighted_mse(predicted.diff(dim=1), target.diff(dim=1), weight)
        context = self._weighted_mse(intermediate, target, weight)
        # L1 on the inner-lip gap of silent windows: keeps pushing where an MSE on 1-pixel errors has all
        # but stopped (silence must close the mouth to the speaker's closed level, not just near it). On
        # speech windows it made held-out figures worse (measured), so it is for silence only.
        silent = batch.get("silent")
        if silent is not None and bool(silent.any()):
            gap = (_lip_gap(predicted) - _lip_gap(target)).abs().mean(dim=1) * _UNITS
            opening = (gap * silent).sum() / silent.sum()
        else:
            opening = predicted.new_zeros(())
        loss = landmark + self.velocity_weight * velocity + self.intermediate_weight * context + self.opening_weight * opening
        mouth_error = ((predicted - target)[:, :, _MOUTH] * _UNITS).norm(dim=-1).mean()
        return loss, {"landmark": landmark.detach(), "velocity": velocity.detach(), "opening": opening.detach(),
                      "mouth_error": mouth_error.detach()}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation (default %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE or ~/.cache/landmarktalk)")
    parser.add_argument("--crop-size", type=int, default=256, help="aligned crop size of prepared clips (default %(default)s)")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"], help="model size (default %(default)s)")
    parser.add_argument("--speaker", default="auto", choices=["auto", "ge2e", "logmel"],
                        help="speaker embedding: GE2E via resemblyzer, or the log-mel fallback (default %(default)s)")
    parser.add_argument("--window-seconds", type=float, nargs=2, default=(2.0, 4.0), metavar=("MIN", "MAX"),
                        help="length range of training windows (default %(default)s)")
    parser.add_argument("--mouth-weight", type=float, default=3.0, help="loss weight of mouth points vs the rest")
    parser.add_argument("--jaw-weight", type=float, default=0.25, help="loss weight of jaw-outline points")
    parser.add_argument("--velocity-weight", type=float, default=1.0, help="weight of the frame-to-frame motion loss")
    parser.add_argument("--opening-weight", type=float, default=3.0, help="weight of the L1 lip-gap loss on silent windows")
    parser.add_argument("--silence-probability", type=float, default=0.3, help="share of windows replaced by silence")
    parser.add_argument("--no-augment", action="store_true", help="turn off the log-mel gain and band-mask augmentation")
    parser.add_argument("--mouth-start", default="reference", choices=["reference", "mean_shape"],
                        help="start from the reference's mouth or the speaker's mean training mouth (default %(default)s)")
    parser.add_argument("--mouth-components", type=int, default=0,
                        help="predict this many PCA coefficients of the training mouths instead of free coordinates (0 = free)")
    parser.add_argument("--speech-encoder", default=None,
                        help="a local wav2vec2/HuBERT folder (save_pretrained) whose hidden states replace the log-mel "
                             "features (needs `transformers`; renders must then give the same folder)")
    parser.add_argument("--feature-window", type=int, default=None,
                        help=f"feature steps per frame window (default 20 log-mel steps, {ENCODER_FEATURE_WINDOW} encoder steps: 200 ms)")
    parser.add_argument("--init", default=None,
                        help="start from this A2L checkpoint (e.g. one trained on many clips) and fine-tune it; its "
                             "settings replace --preset and the model options")
    parser.add_argument("--inner-holdout", type=float, default=0.0,
                        help="validate on this tail fraction of the training part instead of the held-out tail (choosing settings)")


def build_training(args: argparse.Namespace) -> tuple[A2L, A2LTask, dict[str, str]]:
    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    features: dict = {}
    encoder = None
    if args.speech_encoder:
        from ..audio.encoders import load_speech_encoder

        encoder = load_speech_encoder(args.speech_encoder)
        features = {"feature_kind": f"encoder:{encoder.name}", "feature_dim": encoder.dim,
                    "feature_window": ENCODER_FEATURE_WINDOW}
    if args.feature_window is not None:
        if args.feature_window < 4:
            raise LandmarkTalkError(f"--feature-window {args.feature_window}: give at least 4 steps")
        features["feature_window"] = args.feature_window
    init = None
    if args.init:
        from ..checkpoint import load_checkpoint

        init = load_checkpoint(args.init, "a2l")
        config = init.config  # its features must be the ones computed below: checked when the clips are read
        logger.info("a2l: fine-tuning %s (its preset and model options are kept)", args.init)
    else:
        config = A2LConfig.preset(args.preset, speaker_method=resolve_speaker_method(args.speaker),
                                  mouth_start=args.mouth_start, mouth_components=args.mouth_components, **features)
    task = A2LTask(
        caches, config, holdout=args.holdout, window_seconds=tuple(args.window_seconds), mouth_weight=args.mouth_weight,
        jaw_weight=args.jaw_weight, velocity_weight=args.velocity_weight, opening_weight=args.opening_weight,
        silence_probability=args.silence_probability, augment=not args.no_augment, inner_holdout=args.inner_holdout,
        speech_encoder=encoder,
    )
    metadata = {"train_data": json.dumps([c.name for c in task.clips]), "holdout": str(args.holdout),
                "inner_holdout": str(args.inner_holdout)}
    if encoder is not None:
        metadata["speech_encoder"] = str(args.speech_encoder)
    if init is not None:
        metadata["init"] = str(args.init)
        return init.train(), task, metadata  # a PCA model keeps the basis its heads were trained on
    model = A2L(config)
    if config.mouth_components:
        model.set_shape_basis(task.shape_basis(model))
    return model, task, metadata
