"""Train (or fine-tune) the Wav2Lip generator on clip caches: L1 reconstruction + a frozen SyncNet expert's sync loss.

As in the original ``wav2lip_train.py``: a sample is 5 consecutive frames; the generator sees each frame
with its lower half zeroed beside a reference frame from elsewhere in the clip, plus that frame's mel
window; the loss is ``(1 - w) · L1 + w · sync`` where ``sync`` is the expert's cosine-BCE on the
generated lower halves (w = ``--sync-weight``, only with ``--syncnet``). The GAN discriminator of
``hq_wav2lip_train.py`` is left out.

What a user needs: a generator from scratch wants many speakers and hours of video (the official
one used the LRS2 BBC corpus: tens of hours, many speakers) and a SyncNet expert trained first on
the same data (``train syncnet``); one clip teaches it one face only. On one person, fine-tune the
converted official weights instead (``--init wav2lip_gan.safetensors --syncnet lipsync_expert.safetensors``).
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from einops import rearrange
from torch.nn import functional as F

from ..cache import ClipCache, load_clip_caches
from ..checkpoint import load_checkpoint
from ..errors import LandmarkTalkError
from ..models.wav2lip import (
    DEFAULT_PADS, FACE_SIZE, MEL_PER_SECOND, MEL_STEPS, SYNC_FRAMES, Wav2Lip, Wav2LipConfig, cut_faces,
    face_boxes, generator_input, wav2lip_melspectrogram,
)
from .loop import TrainConfig

__all__ = ["Wav2LipClips", "Wav2LipTask", "sync_similarity", "add_data_arguments", "add_task_arguments", "build_training",
           "DEFAULT_TRAIN_CONFIG"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_CONFIG = TrainConfig(steps=3000, batch_size=4, learning_rate=1e-4, ema_decay=0.999, val_every=250,
                                   save_every=500)


class Wav2LipClips:
    """Clip caches as Wav2Lip sees them: 96² BGR face boxes cut from the aligned crops, and the mel.

    Boxes come from the cache's crop-space landmarks with the original's pads (converted from source
    to crop pixels), so training matches :func:`lipsync_frames` run on aligned crops.
    """

    def __init__(self, caches: list[ClipCache], holdout: float, *, pads: tuple[int, int, int, int] = DEFAULT_PADS):
        if not caches:
            raise LandmarkTalkError("--data: no clip caches; give a clip, a folder of clips or a prepared cache")
        self.faces: list[np.ndarray] = []
        self.mels: list[np.ndarray] = []
        self.fps: list[float] = []
        self.train_starts: list[np.ndarray] = []
        self.val_starts: list[np.ndarray] = []
        for cache in caches:
            track = cache.track()
            scale = float(np.sqrt(np.abs(np.linalg.det(track.transforms[:, :, :2]))).mean()) if len(track) else 1.0
            crop_pads = tuple(int(round(p * scale)) for p in pads)
            boxes = face_boxes(cache.landmarks(), (cache.crop_size, cache.crop_size), pads=crop_pads)
            self.faces.append(cut_faces(cache.crops(), boxes))
            mel = wav2lip_melspectrogram(cache.audio())
            self.mels.append(mel)
            self.fps.append(cache.fps)
            train, val = cache.train_val_frames(holdout)
            self.train_starts.append(self._window_starts(train, mel.shape[1], cache.fps))
            self.val_starts.append(self._window_starts(val, mel.shape[1], cache.fps))
        if sum(len(s) for s in self.train_starts) == 0:
            raise LandmarkTalkError(
                f"--data: no clip has {SYNC_FRAMES} frames with audio in its training part; give longer clips"
            )
        self.sources = [c.source for c in caches]

    @staticmethod
    def _window_starts(frames: range, mel_length: int, fps: float) -> np.ndarray:
        """Starts of 5-frame windows inside ``frames`` whose mel windows lie inside the audio."""
        last = frames.stop - SYNC_FRAMES
        return np.array([s for s in range(frames.start, last + 1)
                         if int(MEL_PER_SECOND * ((s + SYNC_FRAMES - 1) / fps)) + MEL_STEPS <= mel_length],
                        dtype=np.int64)

    def pick(self, generator: torch.Generator, split: str = "train") -> tuple[int, int]:
        """A random (clip, window start), clips weighted by their number of windows."""
        starts = self.train_starts if split == "train" else self.val_starts
        sizes = torch.tensor([len(s) for s in starts], dtype=torch.float64)
        clip = int(torch.multinomial(sizes, 1, generator=generator))
        return clip, int(starts[clip][int(torch.randint(len(starts[clip]), (1,), generator=generator))])

    def other_start(self, generator: torch.Generator, clip: int, start: int, split: str = "train") -> int:
        """Another window of the same clip, at least 5 frames away when the clip allows it."""
        starts = (self.train_starts if split == "train" else self.val_starts)[clip]
        for pool in (starts[np.abs(starts - start) >= SYNC_FRAMES], starts[starts != start]):
            if len(pool):
                break
        else:
            pool = np.array([start])
        return int(pool[int(torch.randint(len(pool), (1,), generator=generator))])

    def face_window(self, clip: int, start: int) -> torch.Tensor:
        """[3, 5, 96, 96] BGR 0..1."""
        window = torch.from_numpy(self.faces[clip][start:start + SYNC_FRAMES])
        return rearrange(window, "t h w c -> c t h w").float() / 255

    def mel_at(self, clip: int, frame: int) -> torch.Tensor:
        """[1, 80, 16] mel window of one frame."""
        begin = int(MEL_PER_SECOND * (frame / self.fps[clip]))
        return torch.from_numpy(self.mels[clip][:, begin:begin + MEL_STEPS].copy())[None]


class Wav2LipTask:
    """Generator training on :class:`Wav2LipClips`; ``syncnet`` (frozen) adds the expert's sync loss."""

    def __init__(self, clips: Wav2LipClips, *, syncnet: torch.nn.Module | None = None, sync_weight: float = 0.03):
        if not 0.0 <= sync_weight < 1.0:
            raise LandmarkTalkError(f"--sync-weight {sync_weight}: give a weight in [0, 1), e.g. 0.03")
        self.clips = clips
        self.syncnet = syncnet
        self.sync_weight = sync_weight if syncnet is not None else 0.0
        if syncnet is not None:
            syncnet.eval().requires_grad_(False)
        self._validation: list[dict] | None = None

    def _sample(self, clip: int, start: int, reference: int) -> dict[str, torch.Tensor]:
        target = self.clips.face_window(clip, start)
        faces = generator_input(rearrange(target, "c t h w -> t c h w"),
                                rearrange(self.clips.face_window(clip, reference), "c t h w -> t c h w"))
        return {
            "faces": rearrange(faces, "t c h w -> c t h w"),
            "indiv_mels": torch.stack([self.clips.mel_at(clip, start + k) for k in range(SYNC_FRAMES)]),
            "mel": self.clips.mel_at(clip, start),
            "target": target,
        }

    @staticmethod
    def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        samples = []
        for _ in range(batch_size):
            clip, start = self.clips.pick(generator)
            samples.append(self._sample(clip, start, self.clips.other_start(generator, clip, start)))
        return self._collate(samples)

    def validation_batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if self._validation is None:
            generator = torch.Generator().manual_seed(1234)
            samples = [self._sample(clip, int(start), self.clips.other_start(generator, clip, int(start), "val"))
                       for clip, starts in enumerate(self.clips.val_starts) for start in starts[::SYNC_FRAMES]]
            self._validation = [self._collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
        return self._validation

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        generated = model(batch["indiv_mels"], batch["faces"])
        reconstruction = F.l1_loss(generated.float(), batch["target"].float())
        parts = {"l1": reconstruction.detach()}
        if self.syncnet is None or self.sync_weight == 0:
            return reconstruction, parts
        similarity = sync_similarity(self.syncnet.to(generated.device), batch["mel"], generated)
        sync = F.binary_cross_entropy(similarity, torch.ones_like(similarity))
        parts["sync"] = sync.detach()
        return (1 - self.sync_weight) * reconstruction + self.sync_weight * sync, parts


def sync_similarity(syncnet: torch.nn.Module, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """SyncNet's audio–face cosine similarity in (0, 1): ``mel`` [B,1,80,16], ``faces`` [B,3,5,96,96] BGR 0..1."""
    lower = rearrange(faces[:, :, :, FACE_SIZE // 2:], "b c t h w -> b (t c) h w")  # frame-major, as the original
    audio, face = syncnet(mel, lower)
    # Both embeddings follow a ReLU, so the similarity is already ≥ 0; the clamp keeps the BCE finite.
    return F.cosine_similarity(audio.float(), face.float()).clamp(1e-6, 1 - 1e-6)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options shared by the Wav2Lip-family tasks."""
    parser.add_argument("--data", required=True, help="a clip cache, a folder of caches, a clip or a folder of clips")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction of each clip kept for validation")
    parser.add_argument("--crop-size", type=int, default=256, help="aligned crop size when clips are prepared")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--pads", type=int, nargs=4, default=list(DEFAULT_PADS), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                        help="face box padding in source pixels (the original's default 0 10 0 0)")
    parser.add_argument("--init", default=None, help="start from this checkpoint (e.g. converted official weights)")


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--syncnet", default=None, help="frozen SyncNet expert (.safetensors) for the sync loss")
    parser.add_argument("--sync-weight", type=float, default=0.03, help="sync loss weight (the original's 0.03)")
    parser.add_argument("--base-channels", type=int, default=16, help="generator width (16 = official)")


def build_training(args: argparse.Namespace):
    caches = load_clip_caches(args.data, crop_size=args.crop_size, cache_dir=args.cache_dir)
    clips = Wav2LipClips(caches, args.holdout, pads=tuple(args.pads))
    model = load_checkpoint(args.init, "wav2lip") if args.init else Wav2Lip(Wav2LipConfig(base_channels=args.base_channels))
    syncnet = load_checkpoint(args.syncnet, "syncnet") if args.syncnet else None
    if syncnet is None:
        logger.info("no --syncnet given: training with the L1 reconstruction loss only")
    task = Wav2LipTask(clips, syncnet=syncnet, sync_weight=args.sync_weight)
    metadata = {"trained_on": json.dumps(clips.sources), "holdout": str(args.holdout),
                "sync_weight": str(task.sync_weight)}
    return model.train(), task, metadata
