"""Landmarks → landmark images (the L2V condition) and normalised coordinate tensors (its MLP embedding)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ..types import Landmarks
from ._geometry import GROUPS

__all__ = ["rasterize_landmarks", "landmark_coordinates"]

# One RGB colour per part for the colour-coded variant, so a network can tell lips from jaw at a glance.
_PART_COLOURS = {
    "jaw": (255, 255, 255),
    "right_brow": (255, 160, 0),
    "left_brow": (255, 160, 0),
    "nose_bridge": (0, 200, 255),
    "nose_base": (0, 200, 255),
    "right_eye": (0, 255, 0),
    "left_eye": (0, 255, 0),
    "outer_lips": (255, 0, 0),
    "inner_lips": (255, 0, 255),
}
_SUBPIXEL_BITS = 4


def _points_and_size(points, crop_size: float | None) -> tuple[np.ndarray, float | None]:
    if isinstance(points, Landmarks):
        return np.asarray(points.points, np.float64), crop_size or float(points.crop_size)
    return np.asarray(points, np.float64), crop_size


def rasterize_landmarks(points: np.ndarray | Landmarks, size: int, *, crop_size: float | None = None,
                        colour: bool = False, thickness: float | None = None) -> np.ndarray:
    """Draw the face outline (jaw, brows, nose, eyes, lips) as float32 [T, C, size, size] in 0..1.

    ``points``: [T, 68, 2] or [68, 2] pixels of a ``crop_size``² crop (default: ``size``; a
    :class:`Landmarks` brings its own); ``colour``: 3 channels, one colour per part, else 1 channel;
    ``thickness``: line width in output pixels, by default 1 px per 128 px of ``size``.
    """
    points, crop_size = _points_and_size(points, crop_size)
    single = points.ndim == 2
    points = points.reshape(-1, *points.shape[-2:])
    if points.shape[1:] != (68, 2):
        raise LandmarkTalkError(f"points: expected [T, 68, 2] landmarks, got {points.shape}")
    scale = size / float(crop_size or size)
    width = max(1, int(round(thickness if thickness is not None else size / 128)))
    channels = 3 if colour else 1
    images = np.zeros((len(points), size, size, channels), np.uint8)
    fixed = np.rint(points * scale * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    for image, shape in zip(images, fixed):
        for name, (first, last, closed) in GROUPS.items():
            value = _PART_COLOURS[name] if colour else (255,)
            cv2.polylines(image, [shape[first:last + 1]], closed, value, width, lineType=cv2.LINE_AA,
                          shift=_SUBPIXEL_BITS)
    out = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return out[0] if single else out


def landmark_coordinates(points: np.ndarray | Landmarks, crop_size: float | None = None, *,
                         signed: bool = False) -> np.ndarray:
    """Crop coordinates divided by the crop size: float32 [T, 68, 2] in 0..1, or -1..1 when ``signed``."""
    points, crop_size = _points_and_size(points, crop_size)
    if not crop_size:
        raise LandmarkTalkError("crop_size: give the side of the crop the points are in (or pass Landmarks)")
    normalised = points / float(crop_size)
    return (normalised * 2.0 - 1.0 if signed else normalised).astype(np.float32)
