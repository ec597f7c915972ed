"""Face masks from landmarks: the lower-face mask of the masked target frame, and the paste-back mask.

The lower-face region is drawn from the template's jaw line placed by the head pose (fitted on the
nose, eye corners and upper jaw), not from the frame's own jaw and lip points: its outline then says
nothing about how open the mouth is, so a model cannot read the answer off the mask, and an enlarged
margin keeps a wider-opened generated jaw inside it.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ._geometry import STABLE_POINTS, TEMPLATE, apply_affine, fit_similarity, invert_affine

__all__ = ["lower_face_mask", "paste_mask"]

# Top edge of the lower-face region, in template units: halfway from the nose tip (30) to its base (33).
_CUT_Y = float((TEMPLATE[30, 1] + TEMPLATE[33, 1]) / 2)
_SUBPIXEL_BITS = 4
_MASK_SIDE = 256
_MARGIN = 0.15


def _lower_face_polygon(margin: float) -> np.ndarray:
    """Template-unit polygon: the jaw line below the cut, enlarged about the cut's centre, closed along the cut."""
    jaw = TEMPLATE[:17]
    below = np.nonzero(jaw[:, 1] > _CUT_Y)[0]
    first, last = below[0], below[-1]

    def crossing(a: int, b: int) -> np.ndarray:
        t = (_CUT_Y - jaw[a, 1]) / (jaw[b, 1] - jaw[a, 1])
        return jaw[a] + t * (jaw[b] - jaw[a])

    outline = np.concatenate([crossing(first - 1, first)[None], jaw[below], crossing(last + 1, last)[None]])
    centre = np.array([0.5, _CUT_Y])
    # The chin drops when the jaw opens (by up to ~10 % of the crop), so the region grows 2.5 times as
    # much downwards as sideways.
    return centre + (outline - centre) * np.array([1.0 + margin, 1.0 + 2.5 * margin])


def _prepare(points: np.ndarray, size: int | tuple[int, int], source_size) -> tuple[np.ndarray, bool, tuple[int, int]]:
    points = np.asarray(points, np.float64)
    single = points.ndim == 2
    if points.shape[-2:] != (68, 2):
        raise LandmarkTalkError(f"points: expected [T, 68, 2] or [68, 2] landmarks, got {points.shape}")
    height, width = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if source_size is not None:
        points = points * (width / float(source_size))
    return points.reshape(-1, 68, 2), single, (height, width)


def _fill(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    scaled = [np.rint(p * (1 << _SUBPIXEL_BITS)).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, scaled, 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return canvas


def _lower_polygons(points: np.ndarray, margin: float) -> np.ndarray:
    to_pixels = invert_affine(fit_similarity(points[:, STABLE_POINTS], TEMPLATE[STABLE_POINTS]))
    return apply_affine(to_pixels, _lower_face_polygon(margin))


def lower_face_mask(points: np.ndarray, size: int | tuple[int, int], *, source_size: float | None = None,
                    margin: float = _MARGIN, feather: float = 0.0) -> np.ndarray:
    """Mask float32 [T, H, W] (or [H, W] for one shape) in 0..1 over the mouth and jaw, below the nose.

    ``points``: landmarks in pixels of the output (or of a ``source_size``-wide image, rescaled);
    ``size``: side or (height, width); ``margin``: enlargement as a fraction of the jaw region;
    ``feather``: Gaussian softening as a fraction of the image width (0 = hard edge).
    """
    points, single, shape = _prepare(points, size, source_size)
    polygons = _lower_polygons(points, margin)
    masks = np.stack([_fill([polygon], shape) for polygon in polygons]).astype(np.float32) / 255.0
    if feather > 0:
        sigma = feather * shape[1]
        masks = np.stack([cv2.GaussianBlur(m, (0, 0), sigma) for m in masks])
    return masks[0] if single else masks


def paste_mask(points: np.ndarray, size: int | tuple[int, int], *, region: str = "face",
               source_size: float | None = None, feather: float = 0.04) -> np.ndarray:
    """Feathered blend mask float32 [T, H, W] (or [H, W]) for pasting generated crops back.

    ``region``: "face" (landmark hull plus the enlarged lower face; the soft edge, ``feather`` × width,
    lies inside the hull) or "lower" (the :func:`lower_face_mask` region at full weight, softened
    outwards). The mask is zero at the image border.
    """
    if region not in ("face", "lower"):
        raise LandmarkTalkError(f"region {region!r}: use 'face' or 'lower'")
    points, single, full_shape = _prepare(points, size, source_size)
    # Drawn at most ~256 px across and resized up: the mask is smooth, and erosion/blur cost grows
    # with the square of the feather radius.
    factor = min(1.0, _MASK_SIDE / max(full_shape))
    shape = (max(1, round(full_shape[0] * factor)), max(1, round(full_shape[1] * factor)))
    points = points * factor
    lower = _lower_polygons(points, _MARGIN)
    radius = max(1, int(round(feather * shape[1])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    ramp_y = np.clip(np.minimum(np.arange(shape[0]), shape[0] - 1 - np.arange(shape[0])) / radius, 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(shape[1]), shape[1] - 1 - np.arange(shape[1])) / radius, 0, 1)
    border = np.outer(ramp_y, ramp_x).astype(np.float32)
    masks = np.empty((len(points),) + full_shape, np.float32)
    for i, (shape_points, lower_polygon) in enumerate(zip(points, lower)):
        if region == "face":
            hull = cv2.convexHull(np.concatenate([shape_points, lower_polygon]).astype(np.float32))[:, 0]
            hard = cv2.erode(_fill([hull], shape), kernel)
        else:
            # Feathered outwards: every pixel of the regenerated lower face is pasted at full weight.
            hard = cv2.dilate(_fill([lower_polygon], shape), kernel)
        soft = cv2.GaussianBlur(hard.astype(np.float32) / 255.0, (0, 0), radius / 2.0)
        soft = soft * border
        masks[i] = soft if shape == full_shape else cv2.resize(soft, full_shape[::-1], interpolation=cv2.INTER_LINEAR)
    return masks[0] if single else masks
