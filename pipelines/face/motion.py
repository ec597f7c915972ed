"""Head motion for a photo, taken from a driving video's landmarks.

The driving face's rigid motion (eye corners and nose, which move with the skull) is measured per frame
as a similarity relative to its first frame, carried into the photo's coordinates (through the
similarity that lays the driving face's first frame onto the photo's face) and applied to the photo.
This gives in-plane motion only (translation, roll, scale, i.e. nodding toward/away from the camera);
yaw and pitch would need a 3-D face model. The whole photo moves, background included, as when a
camera follows the head.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ._geometry import fit_similarity

__all__ = ["head_motion_transforms", "apply_head_motion"]

# Skull-fixed points: nose bridge and base, eye corners (not the lids, which blink, nor the jaw).
_RIGID = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    out = np.zeros(matrix.shape[:-2] + (3, 3))
    out[..., :2, :] = matrix
    out[..., 2, 2] = 1.0
    return out


def head_motion_transforms(photo_points: np.ndarray, driving_points: np.ndarray) -> np.ndarray:
    """[T, 2, 3] similarities moving the photo the way the driving face moves from its first frame.

    ``photo_points`` [68, 2]: the photo's landmarks; ``driving_points`` [T, 68, 2]: the driving video's,
    both in their own image pixels. Frame 0 is the identity.
    """
    photo = np.asarray(photo_points, dtype=np.float64)
    driving = np.asarray(driving_points, dtype=np.float64)
    if photo.shape != (68, 2) or driving.ndim != 3 or driving.shape[1:] != (68, 2) or len(driving) == 0:
        raise LandmarkTalkError(
            f"head motion: need photo landmarks [68, 2] and driving landmarks [T, 68, 2], got {photo.shape} "
            f"and {driving.shape}"
        )
    if not (np.isfinite(photo).all() and np.isfinite(driving).all()):
        raise LandmarkTalkError("head motion: the landmarks hold NaN or inf; track the photo and the driving video again")
    rigid = driving[:, _RIGID]
    motion = _homogeneous(fit_similarity(np.broadcast_to(rigid[0], rigid.shape), rigid))  # driving frame 0 → frame t
    to_photo = _homogeneous(fit_similarity(driving[0, _RIGID], photo[_RIGID]))  # driving space → photo space
    return (to_photo @ motion @ np.linalg.inv(to_photo))[:, :2, :]


def apply_head_motion(photo: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """uint8 frames [T, H, W, 3]: ``photo`` [H, W, 3] warped by each [2, 3] transform (edges replicated)."""
    height, width = photo.shape[:2]
    return np.stack([
        cv2.warpAffine(photo, matrix.astype(np.float64), (width, height), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        for matrix in transforms
    ])
