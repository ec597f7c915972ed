"""Train the SyncNet lip-sync expert on clip caches: cosine-similarity BCE on in-sync vs off-sync pairs.

As in the original ``color_syncnet_train.py``: a sample is the mel window of frame s and the lower
halves of 5 consecutive 96² faces, either from s (label 1) or from another window of the same clip
(label 0). The expert needs many speakers to judge sync on new faces (the official one: LRS2); on one
person it learns that person's mouth only. Train it before the generator and pass it to
``train wav2lip --syncnet``.
"""
from __future__ import annotations

import argparse
import json
import logging

import torch
from torch.nn import functional as F

from ..cache import load_clip_caches
from ..checkpoint import load_checkpoint
from ..errors import LandmarkTalkError
from ..models.wav2lip import SYNC_FRAMES, SyncNet, SyncNetConfig
from .loop import TrainConfig
from .wav2lip_task import Wav2LipClips, add_data_arguments, sync_similarity

__all__ = ["SyncNetTask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(steps=3000, batch_size=16, learning_rate=1e-4, ema_decay=0.999, val_every=250,
                                   save_every=500)


class SyncNetTask:
    """Balanced in-sync / off-sync pairs from :class:`Wav2LipClips`."""

    def __init__(self, clips: Wav2LipClips):
        self.clips = clips
        self._validation: list[dict] | None = None

    def _sample(self, clip: int, start: int, face_start: int) -> dict[str, torch.Tensor]:
        return {
            "mel": self.clips.mel_at(clip, start),
            "faces": self.clips.face_window(clip, face_start),
            "label": torch.tensor(float(face_start == start)),
        }

    @staticmethod
    def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        samples = []
        for _ in range(batch_size):
            clip, start = self.clips.pick(generator)
            in_sync = float(torch.rand((), generator=generator)) < 0.5
            samples.append(self._sample(clip, start, start if in_sync else self.clips.other_start(generator, clip, start)))
        return self._collate(samples)

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            generator = torch.Generator().manual_seed(4321)
            samples = []
            for clip, starts in enumerate(self.clips.val_starts):
                for k, start in enumerate(starts[::2]):
                    other = int(start) if k % 2 == 0 else self.clips.other_start(generator, clip, int(start), "val")
                    samples.append(self._sample(clip, int(start), other))
            self._validation = [self._collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
        return self._validation

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        similarity = sync_similarity(model, batch["mel"], batch["faces"])
        loss = F.binary_cross_entropy(similarity, batch["label"].float())
        agreed = ((similarity.detach() > 0.5).float() == batch["label"]).float().mean()
        return loss, {"bce": loss.detach(), "accuracy": agreed}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--base-channels", type=int, default=32, help="expert width (32 = official)")


def build_training(args: argparse.Namespace):
    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    clips = Wav2LipClips(caches, args.holdout, pads=tuple(args.pads))
    if sum(len(s) for s in clips.train_starts) < 2 * SYNC_FRAMES:
        raise LandmarkTalkError("--data: too few frames for off-sync pairs; give clips of at least a few seconds")
    model = load_checkpoint(args.init, "syncnet") if args.init else SyncNet(SyncNetConfig(base_channels=args.base_channels))
    return model.train(), SyncNetTask(clips), {"trained_on": json.dumps(clips.sources), "holdout": str(args.holdout)}
