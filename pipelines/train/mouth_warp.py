"""Landmark-consistent mouth warps: training crops whose lips were moved together with their landmarks.

A person-specific L2V model sees a few hundred frames of one clip, so it learns the lip shapes that clip
happens to show and, shown landmarks of another shape (a mouth pressed shut, a lower lip a few pixels
higher), draws the nearest shape it knows instead. Warping the lips of a training crop and moving the
lip landmarks by exactly the same displacement makes new (image, landmarks) pairs in which only the
landmarks tell where the lips are, which teaches the model to follow them to the pixel.

The warp moves the lower lip (with the chin), the upper lip and the mouth corners by small random
offsets proportional to the mouth width, keeps the inner lips from crossing, and leaves everything else
in place: the displacement field is a thin-plate spline through the moved lip points and the fixed
points (the rest of the landmarks and the crop border), applied with ``cv2.remap``.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["warp_mouths"]

_UPPER = [49, 50, 51, 52, 53, 61, 62, 63]
_LOWER = [55, 56, 57, 58, 59, 65, 66, 67]
_CORNERS = [48, 54, 60, 64]
_CHIN = [6, 7, 8, 9, 10]
_MOVED = _UPPER + _LOWER + _CORNERS + _CHIN
_FIXED = [i for i in range(68) if i not in _MOVED and i not in (5, 11)]  # jaw 5/11 float between chin and cheek
_GRID = 33  # the spline is evaluated on a coarse grid and resized: smooth fields need no per-pixel solve


def _moved_points(points: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Lip landmarks displaced at random (crop pixels), inner lips never crossing."""
    width = float(np.linalg.norm(points[54] - points[48]))
    lower, upper = rng.uniform(-1, 1) * strength * width, rng.uniform(-0.5, 0.5) * strength * width
    opening = float(np.mean(points[[65, 66, 67], 1] - points[[63, 62, 61], 1]))
    lower = max(lower, upper - max(opening, 0.0))  # the lower inner lip stays at or below the upper one
    spread = rng.uniform(-0.25, 0.25) * strength * width
    centre_x = 0.5 * (points[48, 0] + points[54, 0])
    moved = points.copy()
    moved[_UPPER, 1] += upper
    moved[_LOWER, 1] += lower
    moved[_CHIN, 1] += 0.6 * lower  # the jaw carries the lower lip
    moved[_CORNERS, 1] += 0.5 * (upper + lower)
    moved[_CORNERS, 0] += np.sign(points[_CORNERS, 0] - centre_x) * spread
    return moved


def _warp_one(image: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    from scipy.interpolate import RBFInterpolator

    size = image.shape[0]
    edge = np.linspace(0, size - 1, 9)
    border = np.concatenate([np.stack([edge, np.zeros_like(edge)], 1), np.stack([edge, np.full_like(edge, size - 1)], 1),
                             np.stack([np.zeros_like(edge), edge], 1), np.stack([np.full_like(edge, size - 1), edge], 1)])
    anchors = np.concatenate([target[_MOVED], source[_FIXED], border])
    # Backward map: where each output pixel reads from (moved points read from their old places).
    offsets = np.concatenate([source[_MOVED] - target[_MOVED], np.zeros((len(_FIXED) + len(border), 2))])
    spline = RBFInterpolator(anchors, offsets, kernel="thin_plate_spline", smoothing=1e-3)
    coarse = np.linspace(0, size - 1, _GRID)
    gx, gy = np.meshgrid(coarse, coarse)
    field = spline(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(_GRID, _GRID, 2).astype(np.float32)
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return cv2.remap(image, xs + field[..., 0], ys + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def warp_mouths(crops: np.ndarray, points: np.ndarray, rng: np.random.Generator,
                strength: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(warped crops uint8 [N, S, S, 3], their landmarks [N, 68, 2]) for crops and landmarks in crop pixels.

    ``strength``: the lower lip moves up to this fraction of the mouth width (the upper lip half as far,
    the corners a quarter).
    """
    crops = np.asarray(crops)
    points = np.asarray(points, dtype=np.float64)
    if crops.ndim != 4 or points.shape != (len(crops), 68, 2):
        raise ValueError(f"crops [N,S,S,3] and points [N,68,2] expected, got {crops.shape} and {points.shape}")
    out, moved = np.empty_like(crops), np.empty_like(points)
    for i, (image, source) in enumerate(zip(crops, points)):
        moved[i] = _moved_points(source, rng, strength)
        out[i] = _warp_one(image, source, moved[i])
    return out, moved.astype(np.float32)
