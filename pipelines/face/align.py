"""Aligned square face crops from frames, and generated crops pasted back into the frames.

A crop is the source frame seen through the track's similarity transform (frame → crop pixels), which
puts the face on a fixed canonical template: whole head from forehead to below the chin, eyes level.
Paste-back warps the crop through the inverse transform, blends it with a feathered mask and matches
its colour statistics to the frame (Lab mean/std) so no seam or colour shift shows.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ..types import FaceTrack, Landmarks
from ._geometry import STABLE_POINTS, TEMPLATE, apply_affine, fit_similarity, invert_affine, warp_affine
from .masks import paste_mask

__all__ = ["estimate_transforms", "align_faces", "crop_landmarks", "paste_faces"]

logger = logging.getLogger(__name__)


def estimate_transforms(points: np.ndarray, crop_size: int) -> np.ndarray:
    """Similarity transforms [T, 2, 3] float32 taking frame pixels onto a ``crop_size``² aligned crop.

    Fitted (least squares) on the landmarks that do not move with speech, so the crop does not
    follow the jaw. Give smoothed landmarks [T, 68, 2] (or one shape [68, 2]).
    """
    points = np.asarray(points, np.float64)
    return fit_similarity(points[..., STABLE_POINTS, :], TEMPLATE[STABLE_POINTS] * crop_size).astype(np.float32)


def _scaled(transforms: np.ndarray, track: FaceTrack, crop_size: int) -> np.ndarray:
    return transforms.astype(np.float64) * (crop_size / track.crop_size)


def _frame_range(track: FaceTrack, count: int, start: int) -> slice:
    if start < 0 or start + count > len(track):
        raise LandmarkTalkError(
            f"frames {start}..{start + count - 1}: outside the face track of {len(track)} frames; "
            f"track the same video the frames come from")
    return slice(start, start + count)


def align_faces(frames: np.ndarray, track: FaceTrack, crop_size: int | None = None, *, start: int = 0,
                interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Aligned crops uint8 [t, S, S, 3] for frames [t, H, W, 3] that are frames ``start``.. of ``track``.

    ``crop_size`` defaults to the track's; any size works (transforms are rescaled). Call it chunk by
    chunk with ``start`` for long videos.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    size = int(crop_size or track.crop_size)
    if frames.shape[1:3] != tuple(track.frame_size):
        raise LandmarkTalkError(
            f"frames: size {frames.shape[2]}x{frames.shape[1]} differs from the tracked video's "
            f"{track.frame_size[1]}x{track.frame_size[0]}; align the frames the track was made from")
    matrices = _scaled(track.transforms[_frame_range(track, len(frames), start)], track, size)
    crops = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, matrix) in enumerate(zip(frames, matrices)):
        crops[i] = warp_affine(frame, matrix, (size, size), interpolation)
    return crops


def crop_landmarks(track: FaceTrack, crop_size: int | None = None) -> Landmarks:
    """The track's landmarks in aligned-crop pixels as a :class:`Landmarks` sequence."""
    size = int(crop_size or track.crop_size)
    points = apply_affine(_scaled(track.transforms, track, size), track.landmarks.astype(np.float64))
    return Landmarks(points=points.astype(np.float32), crop_size=size, fps=track.fps)


def _lab_statistics(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = cv2.meanStdDev(image, mask=mask)
    return mean[:, 0], np.maximum(std[:, 0], 1e-3)


def _match_colour(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``generated`` (float32 RGB 0..1) to the Lab mean/std of ``original`` inside ``mask`` (uint8)."""
    gen_lab = cv2.cvtColor(generated, cv2.COLOR_RGB2Lab)
    # Statistics from a copy at most ~128 px across: the same numbers at a fraction of the cost.
    step = max(1, max(original.shape[:2]) // 128)
    org_lab = cv2.cvtColor(np.ascontiguousarray(original[::step, ::step]), cv2.COLOR_RGB2Lab)
    small_mask = np.ascontiguousarray(mask[::step, ::step])
    if not small_mask.any():
        return generated
    gen_mean, gen_std = _lab_statistics(np.ascontiguousarray(gen_lab[::step, ::step]), small_mask)
    org_mean, org_std = _lab_statistics(org_lab, small_mask)
    # Clamped so a generated mouth (teeth, shadow) that really differs is corrected, not repainted.
    ratio = np.clip(org_std / gen_std, 0.5, 2.0)
    matched = ((gen_lab - gen_mean) * ratio + org_mean).astype(np.float32)
    return np.clip(cv2.cvtColor(matched, cv2.COLOR_Lab2RGB), 0.0, 1.0)


def paste_faces(
    frames: np.ndarray,
    crops: np.ndarray,
    track: FaceTrack,
    *,
    start: int = 0,
    masks: np.ndarray | None = None,
    region: str = "face",
    colour_match: bool = True,
    interpolation: int = cv2.INTER_CUBIC,
) -> np.ndarray:
    """Paste generated crops [t, S, S, 3] back into frames [t, H, W, 3] (frames ``start``.. of ``track``).

    ``masks``: optional float [t or 1, S, S] 0..1 crop-space blend masks; by default a feathered
    :func:`~pipelines.face.masks.paste_mask` of ``region`` ("face" or "lower") from the track's landmarks.
    Returns new uint8 frames; pixels outside the mask are the input frames unchanged.
    """
    frames = np.asarray(frames)
    crops = np.asarray(crops)
    if frames.ndim == 3:
        frames, crops = frames[None], crops[None]
    if len(frames) != len(crops):
        raise LandmarkTalkError(f"crops: {len(crops)} crops for {len(frames)} frames; give one crop per frame")
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3:
        raise LandmarkTalkError(f"crops: expected [T, S, S, 3] square RGB crops, got {crops.shape}")
    size = crops.shape[1]
    window = _frame_range(track, len(frames), start)
    matrices = _scaled(track.transforms[window], track, size)
    if masks is None:
        points = apply_affine(matrices, track.landmarks[window].astype(np.float64))
        masks = paste_mask(points, size, region=region)
    masks = np.broadcast_to(np.asarray(masks, np.float32).reshape(-1, size, size), (len(frames), size, size))
    height, width = frames.shape[1:3]
    out = frames.copy()
    for i in range(len(frames)):
        to_frame = invert_affine(matrices[i])
        ys, xs = np.nonzero(masks[i] > 1e-3)
        if not len(xs):
            continue
        # Only the frame rectangle the mask reaches is warped and blended: cost follows the face, not the frame.
        corners = apply_affine(to_frame, np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()],
                                                   [xs.min(), ys.max() + 1], [xs.max() + 1, ys.max() + 1]], float))
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
        x1 = int(min(np.ceil(corners[:, 0].max()) + 2, width))
        y1 = int(min(np.ceil(corners[:, 1].max()) + 2, height))
        if x1 <= x0 or y1 <= y0:
            continue
        to_roi = to_frame.copy()
        to_roi[:, 2] -= (x0, y0)
        pasted = warp_affine(crops[i], to_roi, (x1 - x0, y1 - y0), interpolation).astype(np.float32) / 255.0
        weight = cv2.warpAffine(masks[i], to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        original = frames[i, y0:y1, x0:x1].astype(np.float32) / 255.0
        if colour_match:
            pasted = _match_colour(pasted, original, (weight > 0.5).astype(np.uint8))
        blended = original + (pasted - original) * np.clip(weight, 0.0, 1.0)[..., None]
        out[i, y0:y1, x0:x1] = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    return out
