"""Train the pack's face autoencoder (the L2V latent space when no ComfyUI VAE is used) on clip caches' crops.

Loss: L1 reconstruction + ``gradient_weight`` × L1 between image gradients (a cheap, LPIPS-free proxy
for edge sharpness) + ``kl_weight`` × the posterior's mean KL to N(0, I). Training draws random crops of
the training part of each clip (with horizontal flips); validation reconstructs the held-out tail from
the posterior means.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import ClipCache, load_clip_caches
from ..checkpoint import load_checkpoint
from ..models.face_autoencoder import FACE_AUTOENCODER_PRESETS, FaceAutoencoder
from .crops import CachedCrops
from .loop import TrainConfig

__all__ = ["FaceAutoencoderTask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(steps=5000, batch_size=16, learning_rate=2e-4, ema_decay=0.999, val_every=250,
                                   save_every=500)

_VALIDATION_FRAMES = 32


def _image_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


class FaceAutoencoderTask:
    """Aligned crops (resized to ``image_size``, -1..1) from the training part of each cache."""

    def __init__(self, caches: list[ClipCache], holdout: float, image_size: int, *, kl_weight: float = 1e-5,
                 gradient_weight: float = 0.5):
        self._data = CachedCrops(caches, holdout, image_size)
        self.image_size = image_size
        self.train_frames, self.val_frames = self._data.train_frames, self._data.val_frames
        self.kl_weight = kl_weight
        self.gradient_weight = gradient_weight
        self._validation: list[dict] | None = None

    def _images(self, frames: list[tuple[int, int]]) -> torch.Tensor:
        return self._data.batch(frames).float() / 127.5 - 1.0

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(self.train_frames), (batch_size,), generator=generator).tolist()
        images = self._images([self.train_frames[i] for i in picks])
        flip = torch.rand(batch_size, generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
        return {"images": images}

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            chosen = np.linspace(0, len(self.val_frames) - 1, min(_VALIDATION_FRAMES, len(self.val_frames)))
            frames = [self.val_frames[int(round(i))] for i in chosen] if self.val_frames else []
            self._validation = [{"images": self._images(frames[s:s + batch_size])}
                                for s in range(0, len(frames), batch_size)]
        return self._validation

    def compute_loss(self, model: FaceAutoencoder, batch: dict[str, torch.Tensor]):
        images = batch["images"]
        reconstruction, posterior = model(images)  # samples the posterior in training mode, its mean in eval
        reconstruction = reconstruction.float()
        l1 = F.l1_loss(reconstruction, images)
        (rx, ry), (ix, iy) = _image_gradients(reconstruction), _image_gradients(images)
        gradient = F.l1_loss(rx, ix) + F.l1_loss(ry, iy)
        kl = posterior.kl().float().mean() / posterior.mean[0].numel()
        loss = l1 + self.gradient_weight * gradient + self.kl_weight * kl
        return loss, {"l1": l1.detach(), "gradient": gradient.detach(), "kl": kl.detach()}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation")
    parser.add_argument("--crop-size", type=int, default=256, help="aligned crop size when clips are prepared")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--preset", choices=sorted(FACE_AUTOENCODER_PRESETS), default="cpu128",
                        help="model size: cpu128 (128² crops, trains on a CPU) or 256 (GPU)")
    parser.add_argument("--image-size", type=int, default=None, help="override the preset's training crop side")
    parser.add_argument("--init", default=None, help="continue from this face autoencoder checkpoint")
    parser.add_argument("--kl-weight", type=float, default=1e-5, help="weight of the per-element KL term")
    parser.add_argument("--gradient-weight", type=float, default=0.5, help="weight of the image-gradient L1 term")


def build_training(args: argparse.Namespace):
    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    if args.init:
        model = load_checkpoint(args.init, "face_autoencoder")
    else:
        config = FACE_AUTOENCODER_PRESETS[args.preset]
        if args.image_size:
            config = replace(config, image_size=args.image_size)
        model = FaceAutoencoder(config)
    task = FaceAutoencoderTask(caches, args.holdout, model.config.image_size, kl_weight=args.kl_weight,
                               gradient_weight=args.gradient_weight)
    metadata = {"trained_on": json.dumps([c.source for c in caches]), "holdout": str(args.holdout),
                "loss_weights": json.dumps({"kl": args.kl_weight, "gradient": args.gradient_weight})}
    return model.train(), task, metadata
