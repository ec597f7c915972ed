"""Train a person's SOVQAE detail restorer on clip caches: degraded aligned crops in, sharp crops out.

Each step draws training-part frames, damages them with :func:`pipelines.refine.degrade_faces`
(Wav2Lip-like 96² resampling, blur, noise, JPEG) and scores the restoration (L1 + image-gradient L1)
plus the codebook terms (commitment, robustness = degraded latents onto the sharp crop's codes,
usage). Validation restores the held-out tail with fixed degradations. Parameter EMA is off by
default: the codebook is itself a moving average of the live encoder's latents, and pairing it
with an averaged encoder would mismatch them.
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch

from ..cache import ClipCache, load_clip_caches
from ..checkpoint import load_checkpoint
from ..models.sovqae import SOVQAE, SOVQAE_PRESETS
from ..refine import degrade_faces
from .crops import CachedCrops
from .loop import TrainConfig

__all__ = ["SOVQAETask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(steps=4000, batch_size=8, learning_rate=2e-4, ema_decay=0.0, val_every=250,
                                   save_every=500)

_VALIDATION_FRAMES = 32


class SOVQAETask:
    """Random degraded/sharp crop pairs from the training part of each cache, resized to ``image_size``."""

    def __init__(self, caches: list[ClipCache], holdout: float, image_size: int, *, clean_probability: float = 0.15,
                 loss_weights: dict[str, float] | None = None):
        self._data = CachedCrops(caches, holdout, image_size)
        self.image_size = image_size
        self.train_frames, self.val_frames = self._data.train_frames, self._data.val_frames
        self.clean_probability = clean_probability
        self.loss_weights = dict(loss_weights or {})
        self._validation: list[dict] | None = None

    def _sharp(self, frames: list[tuple[int, int]]) -> torch.Tensor:
        return self._data.batch(frames).float() / 255

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(self.train_frames), (batch_size,), generator=generator).tolist()
        sharp = self._sharp([self.train_frames[i] for i in picks])
        return {"degraded": degrade_faces(sharp, generator, clean_probability=self.clean_probability), "sharp": sharp}

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            chosen = np.linspace(0, len(self.val_frames) - 1, min(_VALIDATION_FRAMES, len(self.val_frames)))
            frames = [self.val_frames[int(round(i))] for i in chosen] if self.val_frames else []
            generator = torch.Generator().manual_seed(2024)
            self._validation = []
            for start in range(0, len(frames), batch_size):
                sharp = self._sharp(frames[start:start + batch_size])
                self._validation.append({"degraded": degrade_faces(sharp, generator, clean_probability=0.0),
                                         "sharp": sharp})
        return self._validation

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        return model(batch["degraded"], batch["sharp"], **self.loss_weights)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation")
    parser.add_argument("--crop-size", type=int, default=256, help="aligned crop size when clips are prepared")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--preset", choices=sorted(SOVQAE_PRESETS), default="256",
                        help="model size: 256 (GPU) or cpu128 (128² crops, trains on a CPU)")
    parser.add_argument("--codebook-size", type=int, default=None, help="override the preset's number of codes")
    parser.add_argument("--init", default=None, help="continue from this SOVQAE checkpoint")
    parser.add_argument("--clean-probability", type=float, default=0.15, help="share of undamaged training inputs")
    parser.add_argument("--commitment", type=float, default=0.25, help="commitment loss weight")
    parser.add_argument("--robustness", type=float, default=1.0, help="codebook regulariser weight")
    parser.add_argument("--usage", type=float, default=0.1, help="codebook usage (entropy) weight")
    parser.add_argument("--edge", type=float, default=0.5, help="image-gradient L1 weight")


def build_training(args: argparse.Namespace):
    from dataclasses import replace

    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    if args.init:
        model = load_checkpoint(args.init, "sovqae")
    else:
        config = SOVQAE_PRESETS[args.preset]
        if args.codebook_size:
            config = replace(config, codebook_size=args.codebook_size)
        model = SOVQAE(config)
    weights = {"commitment_weight": args.commitment, "robustness_weight": args.robustness,
               "usage_weight": args.usage, "edge_weight": args.edge}
    task = SOVQAETask(caches, args.holdout, model.config.image_size, clean_probability=args.clean_probability,
                      loss_weights=weights)
    metadata = {"trained_on": json.dumps([c.source for c in caches]), "holdout": str(args.holdout),
                "loss_weights": json.dumps(weights)}
    return model.train(), task, metadata
