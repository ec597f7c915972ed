"""Head motion for a photo from a driving face's landmarks: the photo moves the way the driving head does."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import LandmarkTalkError
from pipelines.face._geometry import TEMPLATE, apply_affine, fit_similarity
from pipelines.face.motion import apply_head_motion, head_motion_transforms


def _rotation(theta: float, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    linear = np.array([[c, -s], [s, c]])
    return np.concatenate([linear, (centre - linear @ centre + shift)[:, None]], axis=1)


def test_driving_roll_and_shift_carry_over_scaled_to_the_photo():
    photo = TEMPLATE * 200 + 50  # a face twice the driving face's size, elsewhere in its image
    start = TEMPLATE * 100 + 10
    centre = start.mean(axis=0)
    angles = np.linspace(0, 0.2, 6)
    shifts = np.stack([np.linspace(0, 8, 6), np.linspace(0, -4, 6)], axis=1)
    driving = np.stack([apply_affine(_rotation(a, centre, d), start) for a, d in zip(angles, shifts)])
    # the mouth of the driving face also opens: non-rigid motion must not move the head
    driving[:, 57, 1] += np.linspace(0, 6, 6)
    transforms = head_motion_transforms(photo, driving)
    assert transforms.shape == (6, 2, 3)
    np.testing.assert_allclose(transforms[0], np.eye(2, 3), atol=1e-9)
    for t in range(6):
        moved = apply_affine(transforms[t], photo)
        pose = fit_similarity(photo, moved)
        assert np.arctan2(pose[1, 0], pose[0, 0]) == pytest.approx(angles[t], abs=1e-6)
        # a shift of d pixels of the driving face is 2·d pixels of the twice-as-large photo face
        expected_centre = apply_affine(_rotation(angles[t], photo.mean(0), 2 * shifts[t]), photo).mean(0)
        np.testing.assert_allclose(moved.mean(axis=0), expected_centre, atol=1e-6)


def test_apply_head_motion_warps_every_frame():
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[20:30, 20:30] = 255
    shift = np.array([[[1, 0, 0], [0, 1, 0]], [[1, 0, 5], [0, 1, -3]]], dtype=np.float64)
    frames = apply_head_motion(photo, shift)
    assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], photo)
    assert frames[1][17:27, 25:35].min() == 255 and frames[1][20:30, 20:25].max() == 0


def test_bad_landmarks_are_named():
    with pytest.raises(LandmarkTalkError, match="68, 2"):
        head_motion_transforms(np.zeros((5, 2)), np.zeros((3, 68, 2)))
    bad = np.full((3, 68, 2), np.nan)
    with pytest.raises(LandmarkTalkError, match="NaN"):
        head_motion_transforms(TEMPLATE * 100, bad)
