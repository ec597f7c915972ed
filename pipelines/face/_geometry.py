"""Shared face geometry: the canonical 68-point template, landmark groups and batched similarity fits.

Private to ``pipelines.face``; the stage modules import from here so every one of them agrees on
what "canonical" means.
"""
from __future__ import annotations

import cv2
import numpy as np

# Mean frontal face, iBUG 300-W order, in aligned-crop units (0..1 across the crop). Derived for this
# project by generalised Procrustes over dlib 68-point fits on the developer clips and portraits,
# symmetrised with its mirror image, then placed so brows-to-chin spans half the crop with the chin at
# 0.87: the crop then holds the whole head from forehead to below the chin with room for an open jaw.
TEMPLATE = np.array([
    (0.2431, 0.4786), (0.2470, 0.5438), (0.2552, 0.6087), (0.2678, 0.6734), (0.2895, 0.7343), (0.3262, 0.7865),
    (0.3762, 0.8280), (0.4340, 0.8593), (0.5000, 0.8700), (0.5660, 0.8593), (0.6238, 0.8280), (0.6738, 0.7865),
    (0.7105, 0.7343), (0.7322, 0.6734), (0.7448, 0.6087), (0.7530, 0.5438), (0.7569, 0.4786), (0.2969, 0.3970),
    (0.3264, 0.3656), (0.3690, 0.3531), (0.4144, 0.3577), (0.4558, 0.3767), (0.5442, 0.3767), (0.5856, 0.3577),
    (0.6310, 0.3531), (0.6736, 0.3656), (0.7031, 0.3970), (0.5000, 0.4334), (0.5000, 0.4717), (0.5000, 0.5093),
    (0.5000, 0.5487), (0.4517, 0.5930), (0.4752, 0.6000), (0.5000, 0.6065), (0.5248, 0.6000), (0.5483, 0.5930),
    (0.3472, 0.4520), (0.3732, 0.4345), (0.4052, 0.4344), (0.4337, 0.4550), (0.4039, 0.4612), (0.3724, 0.4615),
    (0.5663, 0.4550), (0.5948, 0.4344), (0.6268, 0.4345), (0.6528, 0.4520), (0.6276, 0.4615), (0.5961, 0.4612),
    (0.4035, 0.6981), (0.4391, 0.6710), (0.4747, 0.6575), (0.5000, 0.6634), (0.5253, 0.6575), (0.5609, 0.6710),
    (0.5965, 0.6981), (0.5620, 0.7271), (0.5269, 0.7401), (0.5000, 0.7427), (0.4731, 0.7401), (0.4380, 0.7271),
    (0.4201, 0.6973), (0.4748, 0.6810), (0.5000, 0.6826), (0.5252, 0.6810), (0.5799, 0.6973), (0.5257, 0.7069),
    (0.5000, 0.7094), (0.4743, 0.7069),
], dtype=np.float64)

# Points that barely move with speech or expression (nose, eye corners, upper jaw): the pose is fitted
# on these only, so an opening mouth does not make the crop breathe.
STABLE_POINTS = np.array([0, 1, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])

# Where dlib's frontal HOG detector puts its box relative to the template (mean over the developer
# media; centre x, centre y, side): lets the tracker build a detector-like box from landmarks.
DLIB_BOX = (0.5003, 0.5506, 0.5162)

# Index of each point's mirror image (left ↔ right) in the 68-point layout.
MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)

# Polylines of the 68-point layout: (first, last inclusive, closed).
GROUPS = {
    "jaw": (0, 16, False),
    "right_brow": (17, 21, False),
    "left_brow": (22, 26, False),
    "nose_bridge": (27, 30, False),
    "nose_base": (30, 35, True),
    "right_eye": (36, 41, True),
    "left_eye": (42, 47, True),
    "outer_lips": (48, 59, True),
    "inner_lips": (60, 67, True),
}


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) taking ``src`` onto ``dst``.

    ``src``: [..., N, 2]; ``dst``: [N, 2] or [..., N, 2]. Returns [..., 2, 3] float64.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    src_mean = src.mean(axis=-2, keepdims=True)
    dst_mean = dst.mean(axis=-2, keepdims=True)
    a = src - src_mean
    b = dst - dst_mean
    variance = np.maximum((a ** 2).sum(axis=(-1, -2)), 1e-12)
    # For 2-D similarities the optimal rotation*scale is [[c, -s], [s, c]] with these closed forms.
    c = (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]).sum(axis=-1) / variance
    s = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(axis=-1) / variance
    linear = np.stack([np.stack([c, -s], axis=-1), np.stack([s, c], axis=-1)], axis=-2)
    translation = dst_mean[..., 0, :] - np.einsum("...ij,...j->...i", linear, src_mean[..., 0, :])
    return np.concatenate([linear, translation[..., None]], axis=-1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply [..., 2, 3] affine matrices to [..., N, 2] points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.einsum("...ij,...nj->...ni", matrix[..., :2], points) + matrix[..., None, :, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of [..., 2, 3] affine matrices."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[..., :2])
    translation = -np.einsum("...ij,...j->...i", linear_inv, matrix[..., 2])
    return np.concatenate([linear_inv, translation[..., None]], axis=-1)


def affine_scale(matrix: np.ndarray) -> np.ndarray:
    """Isotropic scale of [..., 2, 3] similarity matrices."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.sqrt(np.abs(np.linalg.det(matrix[..., :2])))


def to_canonical(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit pose on the stable points; return (points in template units [...,68,2], pose [...,2,3])."""
    pose = fit_similarity(np.asarray(points)[..., STABLE_POINTS, :], TEMPLATE[STABLE_POINTS])
    return apply_affine(pose, points), pose


def shape_residual(points: np.ndarray) -> np.ndarray:
    """RMS distance of each shape from the template after the pose fit, in crop units: [...]."""
    canonical, _ = to_canonical(points)
    return np.sqrt(((canonical - TEMPLATE) ** 2).sum(axis=-1).mean(axis=-1))


# Below this scale a warp first shrinks the source with an area filter (warpAffine alone aliases).
_AREA_BELOW = 0.75


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR,
                border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """``cv2.warpAffine`` reading only the source window the output needs, area-filtered when shrinking.

    ``size`` is (width, height). Cutting the window first keeps the cost tied to the output, not to
    the source frame (a 4K frame is never resized whole).
    """
    matrix = np.asarray(matrix, np.float64)
    width, height = size
    corners = apply_affine(invert_affine(matrix), np.array([[0, 0], [width, 0], [0, height], [width, height]], float))
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 3, image.shape[1])
    y1 = min(int(np.ceil(corners[:, 1].max())) + 3, image.shape[0])
    if x1 > x0 and y1 > y0:
        image = image[y0:y1, x0:x1]
        matrix = matrix.copy()
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    scale = float(affine_scale(matrix))
    if scale < _AREA_BELOW:
        source_height, source_width = image.shape[:2]
        image = cv2.resize(image, (max(1, round(source_width * scale)), max(1, round(source_height * scale))),
                           interpolation=cv2.INTER_AREA)
        # resize maps pixel centres, x_small = (x + 0.5) * r - 0.5: fold that exactly into the matrix.
        ratio = np.array([image.shape[1] / source_width, image.shape[0] / source_height])
        linear = matrix[:, :2] / ratio
        matrix = np.concatenate([linear, (matrix[:, 2] + matrix[:, :2] @ (0.5 / ratio - 0.5))[:, None]], axis=1)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), flags=interpolation, borderMode=border)
