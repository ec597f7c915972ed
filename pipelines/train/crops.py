"""Aligned face crops of clip caches, split by time and read at one size: the data of the image-model tasks."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..cache import ClipCache
from ..errors import LandmarkTalkError

__all__ = ["CachedCrops"]


class CachedCrops:
    """``train_frames`` / ``val_frames``: (clip, frame) pairs, the first (1 − holdout) of each clip / its tail.

    ``batch(frames)`` returns uint8 [B, 3, S, S] crops resized to ``image_size`` (area filter down, cubic up).
    """

    def __init__(self, caches: list[ClipCache], holdout: float, image_size: int):
        if not caches:
            raise LandmarkTalkError("--data: no clip caches; give a clip, a folder of clips or a prepared cache")
        self.image_size = image_size
        self._crops = [cache.crops() for cache in caches]
        self.train_frames: list[tuple[int, int]] = []
        self.val_frames: list[tuple[int, int]] = []
        for index, cache in enumerate(caches):
            train, val = cache.train_val_frames(holdout)
            self.train_frames += [(index, f) for f in train]
            self.val_frames += [(index, f) for f in val]
        if not self.train_frames:
            raise LandmarkTalkError("--data: the caches hold no training frames; lower --holdout or add clips")

    def batch(self, frames: list[tuple[int, int]]) -> torch.Tensor:
        out = []
        for clip, frame in frames:
            crop = np.array(self._crops[clip][frame])  # a writable copy of the memory-mapped frame
            if crop.shape[0] != self.image_size:
                interpolation = cv2.INTER_AREA if crop.shape[0] > self.image_size else cv2.INTER_CUBIC
                crop = cv2.resize(crop, (self.image_size, self.image_size), interpolation=interpolation)
            out.append(torch.from_numpy(crop))
        return torch.stack(out).permute(0, 3, 1, 2)
