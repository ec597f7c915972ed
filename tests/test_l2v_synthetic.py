"""A drawn talking face for the L2V tests: its mouth opening follows its own 68 landmarks, frame by frame.

``write_synthetic_face_cache`` writes a clip cache (``pipelines.cache.write_clip_cache``) of a cartoon
face that moves its head a little and opens its mouth by a known amount per frame; the tests here check
that the drawing really agrees with the landmarks and the opening, so learning tests built on it mean
what they claim.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from pipelines.cache import write_clip_cache
from pipelines.types import Audio, FaceTrack

FPS = 25.0
_SHIFT = 4  # cv2 fixed-point bits


def mouth_opening(num_frames: int) -> np.ndarray:
    """Opening in 0..1 per frame: two incommensurate sines, so distant frames differ."""
    t = np.arange(num_frames)
    return np.clip(0.5 + 0.35 * np.sin(2 * np.pi * t / 9.3) + 0.25 * np.sin(2 * np.pi * t / 23.1 + 1.0), 0, 1)


def face_landmarks(cx: float, cy: float, opening: float, size: int) -> np.ndarray:
    """[68, 2] iBUG-ordered points of the drawn face centred at (cx, cy) in a ``size``² crop."""
    s = float(size)
    p = np.zeros((68, 2), np.float32)
    a, b = 0.30 * s, 0.38 * s
    for k in range(17):  # jaw: left ear → chin → right ear
        theta = math.pi - math.pi * k / 16
        p[k] = (cx + a * math.cos(theta), cy + b * math.sin(theta))
    for k in range(5):  # brows
        x = 0.22 * s - 0.17 * s * k / 4
        arc = 0.015 * s * math.sin(math.pi * k / 4)
        p[17 + k] = (cx - x, cy - 0.17 * s - arc)
        p[26 - k] = (cx + x, cy - 0.17 * s - arc)
    for k in range(4):
        p[27 + k] = (cx, cy - 0.12 * s + 0.14 * s * k / 3)
    for k in range(5):
        p[31 + k] = (cx - 0.05 * s + 0.1 * s * k / 4, cy + 0.05 * s)
    for side, start in ((-1, 36), (1, 42)):
        ex, ey = cx + side * 0.13 * s, cy - 0.1 * s
        for k in range(6):
            theta = math.pi + 2 * math.pi * k / 6
            p[start + k] = (ex + 0.05 * s * math.cos(theta), ey + 0.02 * s * math.sin(theta))
    mx, my, w = cx, cy + 0.18 * s, 0.11 * s
    outer, inner = 0.025 * s + 0.06 * s * opening, 0.055 * s * opening
    for k in range(12):
        theta = math.pi + 2 * math.pi * k / 12
        p[48 + k] = (mx + w * math.cos(theta), my + outer * math.sin(theta))
    for k in range(8):
        theta = math.pi + 2 * math.pi * k / 8
        p[60 + k] = (mx + 0.8 * w * math.cos(theta), my + inner * math.sin(theta))
    return p


def draw_face(points: np.ndarray, size: int, skin=(220, 180, 150)) -> np.ndarray:
    """uint8 [size, size, 3] RGB drawing of the face whose landmarks are ``points``."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (np.linspace(70, 110, size)[:, None, None] * np.array([1.0, 1.1, 1.25])).astype(np.uint8)
    fix = lambda q: np.round(np.asarray(q) * (1 << _SHIFT)).astype(np.int32)  # noqa: E731
    jaw = points[:17]
    centre = jaw[[0, 16]].mean(axis=0)
    axes = (np.linalg.norm(jaw[16] - jaw[0]) / 2, jaw[8, 1] - centre[1])
    cv2.ellipse(image, tuple(fix(centre)), tuple(fix(axes)), 0, 0, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(image, tuple(fix(centre)), tuple(fix((axes[0], axes[1] * 1.1))), 0, 180, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    cv2.polylines(image, [fix(points[17:22]), fix(points[22:27])], False, (80, 50, 30), 2, cv2.LINE_AA, _SHIFT)
    cv2.polylines(image, [fix(points[27:31]), fix(points[31:36])], False, (170, 120, 100), 1, cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [fix(points[36:42]), fix(points[42:48])], (30, 30, 40), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [fix(points[48:60])], (175, 70, 80), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [fix(points[60:68])], (35, 10, 20), cv2.LINE_AA, _SHIFT)
    return image


def synthetic_face_clip(num_frames: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops uint8 [T,S,S,3], landmarks float32 [T,68,2] crop pixels, opening [T] in 0..1)."""
    opening = mouth_opening(num_frames)
    t = np.arange(num_frames)
    cx = size * (0.5 + 0.03 * np.sin(2 * np.pi * t / 37))
    cy = size * (0.45 + 0.02 * np.sin(2 * np.pi * t / 53))
    points = np.stack([face_landmarks(cx[i], cy[i], opening[i], size) for i in range(num_frames)])
    crops = np.stack([draw_face(points[i], size) for i in range(num_frames)])
    return crops, points.astype(np.float32), opening


def write_synthetic_face_cache(root, num_frames: int = 160, size: int = 64):
    """A clip cache of the drawn face; returns ``(cache, opening)``."""
    crops, points, opening = synthetic_face_clip(num_frames, size)
    transforms = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (num_frames, 1, 1))
    track = FaceTrack(landmarks=points, confidence=np.ones(num_frames, np.float32), transforms=transforms,
                      crop_size=size, frame_size=(size, size), fps=FPS, filled=np.zeros(num_frames, bool))
    audio = Audio(samples=np.zeros((1, int(num_frames / FPS * 16000)), np.float32), sample_rate=16000)
    cache = write_clip_cache(root, crops=crops, landmarks=points, track=track, audio=audio, fps=FPS,
                             source="synthetic-face")
    return cache, opening


def mouth_darkness(images: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean darkness (255 - value) in a fixed-size box on each frame's mouth: larger = mouth more open.

    The box spans the lip corners (48, 54) and ±8 % of the crop around the mouth centre, so its size
    does not depend on the opening.
    """
    size = images.shape[1]
    half = 0.08 * size
    out = []
    for image, p in zip(images, points):
        cy = p[48:60, 1].mean()
        x0, x1 = int(np.floor(p[48, 0])), int(np.ceil(p[54, 0]))
        y0, y1 = int(np.floor(cy - half)), int(np.ceil(cy + half))
        box = image[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].astype(np.float32)
        out.append(255.0 - box.mean())
    return np.asarray(out)


def test_drawn_mouth_follows_the_opening_and_the_landmarks():
    crops, points, opening = synthetic_face_clip(60, 64)
    darkness = mouth_darkness(crops, points)
    assert np.corrcoef(darkness, opening)[0, 1] > 0.9
    inner_gap = points[:, 66, 1] - points[:, 62, 1]  # lower − upper inner lip
    assert np.corrcoef(inner_gap, opening)[0, 1] > 0.99
    # The drawing has its dark mouth interior where the inner-lip landmarks are.
    widest = int(np.argmax(opening))
    cx, cy = np.round(points[widest, 60:68].mean(axis=0)).astype(int)
    assert crops[widest, cy, cx].max() < 60
    closed = int(np.argmin(opening))
    assert crops[closed, 0, 0].tolist() != crops[closed, cy, cx].tolist()


def test_reference_frames_60_apart_differ_in_mouth_and_position():
    _, points, opening = synthetic_face_clip(160, 64)
    assert np.abs(opening[60:] - opening[:-60]).mean() > 0.1
    assert np.abs(points[60:, 30] - points[:-60, 30]).max() > 1.0
