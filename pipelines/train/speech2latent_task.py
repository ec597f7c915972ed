"""Train DAE-Talker's Conformer speech2latent (audio features + head pose → z_sem) against a trained DAE.

Every crop of the caches is encoded once to ``z_sem`` by the DAE's semantic encoder (``--dae``); the
per-frame audio feature windows come from :func:`pipelines.audio.compute_audio_features` and the
pose (yaw, pitch, roll) from :func:`pipelines.dae.estimate_head_pose` on the cached landmarks. Each
step draws windows of ``context_frames`` consecutive training frames and scores the predicted,
normalised ``z_sem`` by L1 + MSE. Validation uses the held-out tails.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..cache import ClipCache, load_clip_caches
from ..errors import LandmarkTalkError
from ..models.dae import SPEECH2LATENT_PRESETS, DiffusionAutoencoder, Speech2LatentConfig, SpeechToLatent
from .loop import TrainConfig

__all__ = ["Speech2LatentTask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(steps=1500, batch_size=8, learning_rate=5e-4, weight_decay=0.01, ema_decay=0.99,
                                   warmup_steps=100, val_every=200, save_every=500)


class Speech2LatentTask:
    """Windows of (audio features, pose, z_sem) from the caches' training frames; tails for validation."""

    def __init__(self, caches: list[ClipCache], holdout: float, dae: DiffusionAutoencoder,
                 config: Speech2LatentConfig, *, encode_device: str = "cpu"):
        from ..audio import compute_audio_features
        from ..dae import encode_semantic_latents, estimate_head_pose, fill_pose_gaps

        if not caches:
            raise LandmarkTalkError("--data: no clip caches; give a clip, a folder of clips or a prepared cache")
        if dae.config.latent_dim != config.latent_dim:
            raise LandmarkTalkError(f"--dae: its z_sem has {dae.config.latent_dim} dims, the model {config.latent_dim}")
        self.config = config
        self.train_segments: list[dict[str, torch.Tensor]] = []
        self.val_segments: list[dict[str, torch.Tensor]] = []
        for cache in caches:
            features = compute_audio_features(cache.audio(), cache.fps, window=config.audio_window,
                                              num_frames=cache.num_frames).features
            if features.shape[2] != config.audio_dim:
                raise LandmarkTalkError(f"{cache.root}: audio features have {features.shape[2]} dims, "
                                        f"the model expects {config.audio_dim}")
            pose = fill_pose_gaps(estimate_head_pose(cache.landmarks()))
            z = encode_semantic_latents(dae.to(encode_device).eval(), cache.crops(), device=encode_device)
            clip = {"audio": torch.from_numpy(features), "pose": torch.from_numpy(pose), "latents": z}
            train, val = cache.train_val_frames(holdout)
            self.train_segments.append({k: v[train.start:train.stop] for k, v in clip.items()})
            if len(val):
                self.val_segments.append({k: v[val.start:val.stop] for k, v in clip.items()})
            logger.info("speech2latent: %s: %d training, %d validation frames", cache.source, len(train), len(val))
        self.train_segments = [s for s in self.train_segments if len(s["latents"])]
        if not self.train_segments:
            raise LandmarkTalkError("--data: the caches hold no training frames; lower --holdout or add clips")
        self._validation: list[dict] | None = None

    def statistics(self) -> dict[str, torch.Tensor]:
        """Per-dimension mean/std of the training z_sem and pose (the model's normalisation buffers)."""
        z = torch.cat([s["latents"] for s in self.train_segments])
        pose = torch.cat([s["pose"] for s in self.train_segments])
        return {"latent_mean": z.mean(0), "latent_std": z.std(0).clamp_min(1e-4),
                "pose_mean": pose.mean(0), "pose_std": pose.std(0).clamp_min(0.02)}

    def _window(self, segment: dict[str, torch.Tensor], start: int, length: int) -> dict[str, torch.Tensor]:
        return {k: v[start:start + length] for k, v in segment.items()}

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        length = min(self.config.context_frames, min(len(s["latents"]) for s in self.train_segments))
        windows = []
        for _ in range(batch_size):
            segment = self.train_segments[int(torch.randint(len(self.train_segments), (1,), generator=generator))]
            start = int(torch.randint(len(segment["latents"]) - length + 1, (1,), generator=generator))
            windows.append(self._window(segment, start, length))
        return {k: torch.stack([w[k] for w in windows]) for k in windows[0]}

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            self._validation = []
            length = self.config.context_frames
            windows = []
            for segment in self.val_segments:
                n = len(segment["latents"])
                starts = list(range(0, max(n - length, 0) + 1, length))
                windows += [self._window(segment, s, min(length, n)) for s in starts]
            by_length: dict[int, list] = {}
            for w in windows:
                by_length.setdefault(len(w["latents"]), []).append(w)
            for group in by_length.values():
                for s in range(0, len(group), batch_size):
                    part = group[s:s + batch_size]
                    self._validation.append({k: torch.stack([w[k] for w in part]) for k in part[0]})
        return self._validation

    def compute_loss(self, model: SpeechToLatent, batch: dict[str, torch.Tensor]):
        prediction = model(batch["audio"], batch["pose"]).float()
        target = model.normalize_latents(batch["latents"].float())
        l1 = F.l1_loss(prediction, target)
        l2 = F.mse_loss(prediction, target)
        return l1 + l2, {"l1": l1.detach(), "mse": l2.detach()}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation")
    parser.add_argument("--crop-size", type=int, default=128, help="aligned crop size when clips are prepared")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--dae", required=True, help="the trained DAE checkpoint (kind dae) whose z_sem to predict")
    parser.add_argument("--preset", choices=sorted(SPEECH2LATENT_PRESETS), default="tiny",
                        help="model size: tiny (2 Conformer blocks of 128) or base (4 of 256)")
    parser.add_argument("--context-frames", type=int, default=None, help="frames per training window")
    parser.add_argument("--encode-device", default="cpu", help="device for encoding the crops to z_sem (e.g. cuda)")


def build_training(args: argparse.Namespace):
    from ..checkpoint import load_checkpoint

    dae = load_checkpoint(args.dae, "dae")
    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    overrides = {"latent_dim": dae.config.latent_dim}
    if args.context_frames:
        overrides["context_frames"] = args.context_frames
    config = replace(SPEECH2LATENT_PRESETS[args.preset], **overrides)
    task = Speech2LatentTask(caches, args.holdout, dae, config, encode_device=args.encode_device)
    model = SpeechToLatent(config)
    for name, value in task.statistics().items():
        getattr(model, name).copy_(value)
    metadata = {"dae": str(args.dae), "trained_on": json.dumps([c.source for c in caches]),
                "holdout": str(args.holdout)}
    return model.train(), task, metadata
