"""Train the L2V landmark-to-face latent diffusion renderer on clip caches, in a chosen codec's latent space.

The crops are encoded once (full frames and lower-face-masked frames) and kept in memory with the
landmark images and coordinates. Each step draws a target frame and a reference frame of the same clip
at least ``reference_gap`` frames away (DiffTalk §4.2.3; the farthest available when the clip is
shorter), noises the target latent with diffusers' ``DDPMScheduler.add_noise`` at a uniform random
timestep and scores the ε or v prediction by MSE. The landmark condition is dropped with probability
``condition_dropout`` so sampling can use classifier-free guidance. With ``mouth_warps`` > 0 each training
frame also appears as that many copies whose lips were moved together with their landmarks
(:mod:`pipelines.train.mouth_warp`), so the model learns to put the lips where the landmarks say rather
than in the shapes one clip happens to show. Validation uses the held-out tail of each clip as targets
(references from the training part) at fixed timesteps and noise.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

import cv2
import numpy as np
import torch

from ..cache import ClipCache, load_clip_caches
from ..errors import LandmarkTalkError
from ..face.masks import lower_face_mask
from ..models.l2v import L2V_PRESETS, L2VConfig, L2VDenoiser, encode_pose_latents, landmark_inputs
from ..sampling import make_scheduler
from .loop import TrainConfig

__all__ = ["L2VTask", "add_task_arguments", "build_training", "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

# lr 5e-4: on a CPU fit of the tiny preset (batch 8) 1e-4 left the landmark condition unused after 1500 steps
# (renders with A2L and with true landmarks were the same); 5e-4 reached a lower loss in 800 (docs/RESULTS.md).
DEFAULT_TRAIN_CONFIG = TrainConfig(steps=20000, batch_size=16, learning_rate=5e-4, ema_decay=0.999, warmup_steps=200,
                                   val_every=500, save_every=1000)

_VALIDATION_FRAMES = 32


class L2VTask:
    """Target/reference pairs from the clip caches, pre-encoded with ``codec`` at ``config.image_size``.

    ``config`` fixes the crop size and latent grid; ``audio_features`` (one [T, W, D] array per cache,
    optional) feeds the audio tokens of a model with ``audio_dim`` > 0.
    """

    def __init__(self, caches: list[ClipCache], holdout: float, codec, config: L2VConfig, *,
                 reference_gap: int = 60, condition_dropout: float = 0.1, mouth_weight: float = 3.0,
                 mouth_warps: int = 0, warp_strength: float = 0.1,
                 audio_features: list[np.ndarray] | None = None, encode_chunk: int = 16, seed: int = 0):
        if not caches:
            raise LandmarkTalkError("--data: no clip caches; give a clip, a folder of clips or a prepared cache")
        if config.image_size % codec.downscale:
            raise LandmarkTalkError(
                f"l2v: image_size {config.image_size} is not a multiple of the codec's downscale {codec.downscale}"
            )
        if audio_features is not None and len(audio_features) != len(caches):
            raise LandmarkTalkError(f"audio_features: {len(audio_features)} arrays for {len(caches)} caches")
        self.config = config
        self.reference_gap = reference_gap
        self.condition_dropout = condition_dropout
        self.mouth_weight = mouth_weight
        self.scheduler = make_scheduler("ddpm", num_train_timesteps=config.num_train_timesteps,
                                        beta_schedule=config.beta_schedule, prediction_type=config.prediction_type)
        size, latent = config.image_size, config.image_size // codec.downscale
        self.clips: list[dict[str, torch.Tensor]] = []
        # Row of a clip's tensors → its frame in the clip (rows past the clip's length are warped copies).
        self.frame_of: list[np.ndarray] = []
        self.train_frames: list[tuple[int, int]] = []
        self.val_frames: list[tuple[int, int]] = []
        self.train_ranges: list[range] = []
        rng = np.random.default_rng(seed)
        for index, cache in enumerate(caches):
            train, val = cache.train_val_frames(holdout)
            points = cache.landmarks() * (size / cache.crop_size)
            crops = cache.crops()
            latents, pose = self._encode_crops(codec, crops, points, encode_chunk)
            rows = np.arange(len(crops))
            if mouth_warps > 0 and len(train):
                from .mouth_warp import warp_mouths

                originals = np.tile(np.asarray(train), mouth_warps)
                parts = [(latents, pose, points)]
                for start in range(0, len(originals), 8 * encode_chunk):  # bounded memory on long clips
                    which = originals[start:start + 8 * encode_chunk]
                    warped, warped_points = warp_mouths(_resized_crops(crops[which], size), points[which], rng,
                                                        warp_strength)
                    parts.append((*self._encode_crops(codec, warped, warped_points, encode_chunk), warped_points))
                latents, pose = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                points = np.concatenate([p[2] for p in parts])
                rows = np.concatenate([rows, originals])
            logger.info("l2v: encoded %d frames of %s into %s (%d warped copies)", len(latents), cache.source,
                        codec.name, len(latents) - len(crops))
            landmark_image, coords = landmark_inputs(points, size, config.landmark_image_size)
            # Loss weights at latent resolution: the masked lower face is what the model must invent from
            # the landmarks (the rest is in the pose latent), and it is a small share of the crop, so a
            # plain MSE spends most of a short CPU fit on copying the upper face.
            mouth = torch.from_numpy(lower_face_mask(points, latent, source_size=size, feather=0.05))
            clip = {"latents": latents, "pose": pose, "landmark_image": landmark_image.half(),
                    "landmark_points": coords, "loss_weight": (1.0 + mouth_weight * mouth).half()}
            if audio_features is not None:
                feats = torch.as_tensor(np.asarray(audio_features[index]), dtype=torch.float32)
                if len(feats) != len(latents):
                    raise LandmarkTalkError(
                        f"audio_features[{index}]: {len(feats)} frames, the cache has {len(latents)}"
                    )
                clip["audio"] = feats
            self.clips.append(clip)
            self.frame_of.append(rows)
            self.train_ranges.append(train)
            self.train_frames += [(index, f) for f in train]
            self.train_frames += [(index, r) for r in range(len(crops), len(rows))]
            self.val_frames += [(index, f) for f in val]
        if not self.train_frames:
            raise LandmarkTalkError("--data: the caches hold no training frames; lower --holdout or add clips")
        self._validation: list[dict] | None = None

    def _encode_crops(self, codec, crops: np.ndarray, points: np.ndarray,
                      chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(full-frame latents, masked-frame latents) of crops, encoded ``chunk`` frames at a time, fp16 on CPU."""
        latents, pose = [], []
        for start in range(0, len(crops), chunk):
            part = _resized_crops(crops[start:start + chunk], self.config.image_size)
            images = torch.from_numpy(part).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            latents.append(codec.encode(images).cpu().half())
            pose.append(encode_pose_latents(codec, images, points[start:start + chunk]).half())
        return torch.cat(latents), torch.cat(pose)

    def latent_statistics(self) -> tuple[float, float]:
        """(mean, std) of the training targets' latents: the model's ``latent_shift`` and 1 / ``latent_scale``."""
        values = torch.cat([clip["latents"][list(self.train_ranges[i])].float().flatten()
                            for i, clip in enumerate(self.clips)])
        return float(values.mean()), float(values.std().clamp_min(1e-6))

    def _reference(self, clip: int, row: int, u: float) -> int:
        """A training frame of ``clip`` at least ``reference_gap`` away from ``row``'s frame, else one of the farthest."""
        frames = np.asarray(self.train_ranges[clip])
        distance = np.abs(frames - self.frame_of[clip][row])
        gap = min(self.reference_gap, int(distance.max()))
        candidates = frames[distance >= gap]
        return int(candidates[min(int(u * len(candidates)), len(candidates) - 1)])

    def _batch(self, pairs: list[tuple[int, int, int]], timesteps: torch.Tensor, noise: torch.Tensor,
               drop: torch.Tensor) -> dict[str, torch.Tensor]:
        def gather(key: str, which: int) -> torch.Tensor:
            return torch.stack([self.clips[c][key][p[which]] for c, *p in pairs]).float()

        targets = gather("latents", 0)
        batch = {"target": targets, "noise": noise, "timesteps": timesteps, "drop": drop,
                 "frames": torch.tensor([[c, t, r] for c, t, r in pairs]),  # (clip, target, reference), for logs/tests
                 "pose": gather("pose", 0), "identity": gather("latents", 1),
                 "landmark_image": gather("landmark_image", 0), "landmark_points": gather("landmark_points", 0),
                 "loss_weight": gather("loss_weight", 0)}
        if "audio" in self.clips[0]:
            batch["audio"] = gather("audio", 0)
        return batch

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(self.train_frames), (batch_size,), generator=generator).tolist()
        uniforms = torch.rand(batch_size, generator=generator).tolist()
        pairs = []
        for i, u in zip(picks, uniforms):
            clip, frame = self.train_frames[i]
            pairs.append((clip, frame, self._reference(clip, frame, u)))
        shape = (batch_size, *self.clips[0]["latents"].shape[1:])
        timesteps = torch.randint(self.config.num_train_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(shape, generator=generator)
        drop = torch.rand(batch_size, generator=generator) < self.condition_dropout
        return self._batch(pairs, timesteps, noise, drop)

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            self._validation = []
            if self.val_frames:
                chosen = np.linspace(0, len(self.val_frames) - 1, min(_VALIDATION_FRAMES, len(self.val_frames)))
                frames = [self.val_frames[int(round(i))] for i in chosen]
                generator = torch.Generator().manual_seed(1234)
                pairs = [(c, f, self._reference(c, f, float(torch.rand(1, generator=generator)))) for c, f in frames]
                # Timesteps spread evenly over the schedule: a low-variance estimate of the training loss.
                timesteps = torch.linspace(0, self.config.num_train_timesteps - 1, len(pairs)).round().long()
                noise = torch.randn((len(pairs), *self.clips[0]["latents"].shape[1:]), generator=generator)
                drop = torch.zeros(len(pairs), dtype=torch.bool)
                for s in range(0, len(pairs), batch_size):
                    part = slice(s, s + batch_size)
                    self._validation.append(self._batch(pairs[part], timesteps[part], noise[part], drop[part]))
        return self._validation

    def compute_loss(self, model: L2VDenoiser, batch: dict[str, torch.Tensor]):
        target = model.normalize_latents(batch["target"])
        noisy = self.scheduler.add_noise(target, batch["noise"], batch["timesteps"])
        if model.config.prediction_type == "v_prediction":
            goal = self.scheduler.get_velocity(target, batch["noise"], batch["timesteps"])
        else:
            goal = batch["noise"]
        prediction = model(
            noisy, batch["timesteps"], pose=model.normalize_latents(batch["pose"]),
            identity=model.normalize_latents(batch["identity"]), landmark_image=batch["landmark_image"],
            landmark_points=batch["landmark_points"], audio=batch.get("audio"), drop_condition=batch["drop"],
        )
        error = (prediction.float() - goal.float()).square()
        weight = batch["loss_weight"].unsqueeze(1).to(error.device)
        loss = (error * weight).mean() / weight.mean()
        return loss, {"mse": error.mean().detach()}


def _resized_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """A writable uint8 copy of ``crops`` [N, S, S, 3] at ``size``²."""
    if crops.shape[1] == size:
        return np.array(crops)
    interpolation = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(np.asarray(c), (size, size), interpolation=interpolation) for c in crops])


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation")
    parser.add_argument("--crop-size", type=int, default=256, help="aligned crop size when clips are prepared")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--codec", required=True,
                        help="latent space: a face_autoencoder .safetensors checkpoint or a folder with TAEF2 weights")
    parser.add_argument("--preset", choices=sorted(L2V_PRESETS), default="tiny",
                        help="model size: tiny or small (128² crops, CPU; small is the tiny fit's) or base (256² crops, GPU)")
    parser.add_argument("--image-size", type=int, default=None, help="override the preset's crop side")
    parser.add_argument("--prediction-type", choices=["v_prediction", "epsilon"], default=None,
                        help="what the UNet predicts (default: the preset's, v_prediction)")
    parser.add_argument("--landmark-raster-scale", type=int, default=None,
                        help="draw the landmark image at this many times the latent side, pixel-unshuffled onto "
                             "the latent grid (default: the preset's)")
    parser.add_argument("--init", default=None, help="continue from this L2V checkpoint (same codec)")
    parser.add_argument("--reference-gap", type=int, default=60, help="min frames between target and reference")
    parser.add_argument("--condition-dropout", type=float, default=0.1,
                        help="probability of dropping the landmark condition (for classifier-free guidance)")
    parser.add_argument("--mouth-weight", type=float, default=3.0,
                        help="extra loss weight inside the masked lower face (0 = plain MSE)")
    parser.add_argument("--mouth-warps", type=int, default=0,
                        help="warped copies of each training frame with the lips moved along with their landmarks "
                             "(0 = none; on a 3000-step tiny fit 2 copies made hold-out M-LMD worse: docs/RESULTS.md)")
    parser.add_argument("--warp-strength", type=float, default=0.1,
                        help="largest lower-lip move of a warped copy, as a fraction of the mouth width")
    parser.add_argument("--encode-device", default="cpu", help="device for pre-encoding the crops (e.g. cuda)")


def build_training(args: argparse.Namespace):
    from ..latents import load_latent_codec
    from ..models.l2v import load_l2v

    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    codec = load_latent_codec(args.codec, device=args.encode_device)
    if args.init:
        model = load_l2v(args.init, codec)
        config = model.config
    else:
        config = L2V_PRESETS[args.preset]
        overrides = {"latent_channels": codec.channels, "downscale": codec.downscale, "latent_space": codec.name}
        if args.image_size:
            overrides["image_size"] = args.image_size
        if args.prediction_type:
            overrides["prediction_type"] = args.prediction_type
        if args.landmark_raster_scale:
            overrides["landmark_raster_scale"] = args.landmark_raster_scale
        config = replace(config, **overrides)
    task = L2VTask(caches, args.holdout, codec, config, reference_gap=args.reference_gap,
                   condition_dropout=args.condition_dropout, mouth_weight=args.mouth_weight,
                   mouth_warps=args.mouth_warps, warp_strength=args.warp_strength, seed=getattr(args, "seed", 0))
    if not args.init:
        mean, std = task.latent_statistics()
        config = replace(config, latent_shift=mean, latent_scale=1.0 / std)
        model = L2VDenoiser(config)
        logger.info("l2v: latent space %s, latents mean %.3g std %.3g", codec.name, mean, std)
    task.config = config
    metadata = {"latent_space": codec.name, "trained_on": json.dumps([c.source for c in caches]),
                "holdout": str(args.holdout), "reference_gap": str(args.reference_gap),
                "condition_dropout": str(args.condition_dropout), "mouth_warps": str(args.mouth_warps),
                "warp_strength": str(args.warp_strength)}
    return model.train(), task, metadata
