"""Landmark images, coordinate tensors and the lower-face mask (synthetic shapes, no media needed)."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import LandmarkTalkError
from pipelines.face import landmark_coordinates, lower_face_mask, rasterize_landmarks
from pipelines.face._geometry import TEMPLATE
from pipelines.types import Landmarks


def _face(size: float = 256.0, angle_deg: float = 0.0, shift=(0.0, 0.0)) -> np.ndarray:
    angle = np.radians(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2])
    return (TEMPLATE * size - centre) @ rotation.T + centre + shift


def test_rasterizer_lights_the_given_points_and_nothing_far_from_them():
    face = _face()
    image = rasterize_landmarks(face, 256)
    assert image.shape == (1, 256, 256) and image.dtype == np.float32
    x, y = np.rint(face).astype(int).T
    assert (image[0, y, x] > 0.3).all()
    # pixels more than 4 px from every landmark line stay dark: sample the crop corners and the forehead
    assert image[0, :60].max() == 0 and image[0, :, :40].max() == 0
    assert 0.005 < (image > 0).mean() < 0.08  # thin lines, not fills


def test_rasterizer_draws_each_part_in_its_colour_and_scales_line_width():
    face = _face()
    image = rasterize_landmarks(face, 256, colour=True)
    assert image.shape == (3, 256, 256)
    lip = np.rint(face[51]).astype(int)  # top of the outer lip: red
    eye = np.rint(face[37]).astype(int)  # upper eyelid: green
    assert image[0, lip[1], lip[0]] > 0.3 and image[1, lip[1], lip[0]] == 0
    assert image[1, eye[1], eye[0]] > 0.3 and image[0, eye[1], eye[0]] == 0
    thin = (rasterize_landmarks(face, 256) > 0.5).sum()
    thick = (rasterize_landmarks(face * 2, 512, crop_size=512) > 0.5).sum()
    assert 3.0 < thick / thin < 5.5  # twice the size and twice the width: about 4x the pixels


def test_rasterizer_takes_sequences_and_landmarks_objects_in_crop_pixels():
    points = np.stack([_face(), _face(shift=(10, 0))]).astype(np.float32)
    images = rasterize_landmarks(Landmarks(points=points, crop_size=256, fps=25.0), 64)
    assert images.shape == (2, 1, 64, 64)
    # the second face is drawn 10 crop px (2.5 output px) to the right
    columns = lambda img: np.nonzero(img[0].max(axis=0) > 0)[0]
    assert columns(images[1]).min() - columns(images[0]).min() in (2, 3)
    with pytest.raises(LandmarkTalkError, match=r"expected \[T, 68, 2\]"):
        rasterize_landmarks(np.zeros((5, 2)), 64)


def test_landmark_coordinates_are_normalised_by_the_crop():
    face = _face(512)
    unit = landmark_coordinates(face, 512)
    signed = landmark_coordinates(Landmarks(points=face[None].astype(np.float32), crop_size=512, fps=25.0), signed=True)
    assert unit.dtype == np.float32 and signed.shape == (1, 68, 2)
    np.testing.assert_allclose(unit, TEMPLATE, atol=1e-6)
    np.testing.assert_allclose(signed[0], TEMPLATE * 2 - 1, atol=1e-6)
    assert unit.min() >= 0 and unit.max() <= 1


@pytest.mark.parametrize("angle, shift", [(0.0, (0, 0)), (15.0, (20, -10)), (-25.0, (-15, 5))])
def test_lower_face_mask_covers_the_mouth_and_not_the_eyes(angle, shift):
    face = _face(256, angle, shift)
    # an opened mouth: the lower lip and chin drop by 8 % of the crop
    opened = face.copy()
    down = np.array([-np.sin(np.radians(angle)), np.cos(np.radians(angle))]) * 0.08 * 256
    opened[[55, 56, 57, 58, 59, 65, 66, 67, 6, 7, 8, 9, 10]] += down
    for shape in (face, opened):
        mask = lower_face_mask(shape, 256)
        x, y = np.rint(shape).astype(int).T
        assert (mask[y[48:68], x[48:68]] == 1).all()  # every lip point
        assert (mask[y[36:48], x[36:48]] == 0).all() and (mask[y[17:27], x[17:27]] == 0).all()  # eyes, brows
        assert mask[y[30], x[30]] == 0  # nose tip is above the cut
        assert mask[y[8], x[8]] == 1  # chin
    # the outline follows the head pose only: an opened mouth does not change it
    np.testing.assert_array_equal(lower_face_mask(face, 256), lower_face_mask(opened, 256))


def test_lower_face_mask_feather_and_frame_sized_output():
    face = _face(256)
    hard = lower_face_mask(face, 256)
    soft = lower_face_mask(face, 256, feather=0.02)
    assert set(np.unique(hard)) - {0.0, 1.0} and ((hard > 0) & (hard < 1)).mean() < 0.01  # antialiased edge only
    assert ((soft > 0.05) & (soft < 0.95)).mean() > 3 * ((hard > 0.05) & (hard < 0.95)).mean()
    wide = lower_face_mask(face + [200, 0], (256, 640))
    assert wide.shape == (256, 640)
    np.testing.assert_array_equal(wide[:, 200:456], hard)
