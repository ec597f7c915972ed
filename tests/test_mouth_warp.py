"""Mouth warps move the lips exactly as far as their landmarks and leave the rest of the face in place."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.train.mouth_warp import warp_mouths
from test_l2v_synthetic import write_synthetic_face_cache


def _blob_image(point, size: int = 128) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    cv2.circle(image, tuple(int(round(v * 16)) for v in point), 24, (255, 255, 255), -1, cv2.LINE_AA, 4)
    return image


def _centroid(image: np.ndarray, point, radius: int = 4) -> np.ndarray:
    x0, y0 = int(round(point[0])) - radius, int(round(point[1])) - radius
    patch = image[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1]
    return np.array([(patch * xs).sum(), (patch * ys).sum()]) / patch.sum()


@pytest.fixture(scope="module")
def face_points(tmp_path_factory):
    cache, _ = write_synthetic_face_cache(tmp_path_factory.mktemp("warp") / "cache", num_frames=8, size=128)
    return cache.landmarks().astype(np.float64)


@pytest.mark.parametrize("index, moves", [(57, True), (66, True), (51, True), (36, False), (30, False), (19, False)])
def test_image_content_follows_its_landmark(face_points, index, moves):
    points = face_points[:1]
    image = _blob_image(points[0, index])[None]
    before = _centroid(image[0], points[0, index])
    warped, moved = warp_mouths(image, points, np.random.default_rng(3), strength=0.15)
    shift = moved[0, index] - points[0, index]
    assert (np.abs(shift).max() > 0.5) == moves
    # the blob ends where its landmark went (the untouched blob's own rasterisation offset aside)
    assert np.abs(_centroid(warped[0], moved[0, index]) - (before + shift)).max() < 0.25


def test_inner_lips_never_cross_and_moves_scale_with_strength(face_points):
    rng = np.random.default_rng(0)
    crops = np.zeros((len(face_points), 128, 128, 3), np.uint8)
    gaps, sizes = [], {}
    for strength in (0.05, 0.15):
        moves = []
        for _ in range(10):
            _, moved = warp_mouths(crops, face_points, rng, strength=strength)
            gaps.append(moved[:, [65, 66, 67], 1] - moved[:, [63, 62, 61], 1])
            moves.append(np.abs(moved[:, 57, 1] - face_points[:, 57, 1]))
        sizes[strength] = np.concatenate(moves)
    assert np.concatenate(gaps).mean(axis=-1).min() >= -1e-3
    width = np.linalg.norm(face_points[:, 54] - face_points[:, 48], axis=-1).max()
    assert sizes[0.15].max() <= 0.15 * width + 1e-3 and sizes[0.15].mean() > 2 * sizes[0.05].mean()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="points"):
        warp_mouths(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((1, 68, 2)), np.random.default_rng(0))
