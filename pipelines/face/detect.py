"""68-point face landmarks from one image, through interchangeable backends with the same output.

Backends (all offline; nothing is ever downloaded):
- ``"dlib"`` (default): dlib's frontal HOG face detector and its 68-point shape predictor, whose model
  file ships with the ``face-recognition-models`` package (or lies in ``models_dir``).
- ``"face_alignment"``: the FAN 2-D network of the ``face-alignment`` package on dlib's face boxes; its
  weights must already be in the torch hub cache or in ``models_dir``.

Landmarks are fitted in a normalised region of interest: the face is warped upright to a fixed size
first, so the fit is sub-pixel for small faces and independent of in-plane head rotation.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ._geometry import (
    DLIB_BOX, MIRROR, STABLE_POINTS, TEMPLATE, apply_affine, fit_similarity, invert_affine, shape_residual,
    warp_affine,
)

__all__ = ["FaceDetection", "LandmarkDetector", "load_landmark_detector", "detect_landmarks"]

logger = logging.getLogger(__name__)

BACKENDS = ("dlib", "face_alignment")
_DLIB_MODEL = "shape_predictor_68_face_landmarks.dat"
# First detection pass runs on a copy whose longer side is at most this (HOG finds faces from ~80 px).
_DETECT_MAX_SIDE = 512
# Side (px) a detector box is given in the normalised region where landmarks are fitted.
_MIN_FIT_BOX, _MAX_FIT_BOX = 128, 384
# Side of that region relative to the box: dlib's chin point lies ~12 % of the box below it.
_REGION = 1.4
# Template-unit shape residual at which plausibility falls to 1/e (developer media: median 0.018).
_RESIDUAL_SCALE = 0.06


@dataclass(frozen=True)
class FaceDetection:
    """One face found in an image.

    ``landmarks``: [68, 2] float32 image pixels (x, y), iBUG 300-W order; ``confidence``: 0..1 (detector
    score × shape plausibility); ``box``: [4] float32 detector box (x0, y0, x1, y1) in pixels;
    ``face_index``: which face it is, counting the faces found from left to right from 0;
    ``face_count``: how many faces the image held; ``chosen_by``: "only", "largest", "index" or "nearest".
    """

    landmarks: np.ndarray
    confidence: float
    box: np.ndarray
    face_index: int
    face_count: int
    chosen_by: str


class LandmarkDetector:
    """A loaded landmark backend. Build it with :func:`load_landmark_detector` and reuse it across frames."""

    def __init__(self, backend: str, hog, fit_box, fit_region):
        self.backend = backend
        self._hog = hog
        self._fit_box = fit_box  # (frame_rgb, gray, box) -> ([68,2] points, score)
        self._fit_region = fit_region  # (frame_rgb, gray, points) -> ([68,2] points, score)

    def find_faces(self, gray: np.ndarray, *, near: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes [n, 4] (x0, y0, x1, y1 pixels, left to right) and detector scores [n] in a grey image.

        With ``near`` (a previous box) only a region around it is searched, at a scale that makes the
        face about 100 px: detection cost then no longer depends on the frame size.
        """
        if near is not None:
            boxes, scores = self._find_near(gray, near)
            if len(boxes):
                return boxes, scores
        height, width = gray.shape
        scale = min(1.0, _DETECT_MAX_SIDE / max(height, width))
        passes = [(scale, 0)]
        if scale < 1.0:
            passes.append((1.0, 0))
        if max(height, width) <= 1024:
            passes.append((1.0, 1))  # upsampled once: finds faces down to ~40 px
        for pass_scale, upsample in passes:
            image = gray if pass_scale == 1.0 else cv2.resize(
                gray, (round(width * pass_scale), round(height * pass_scale)), interpolation=cv2.INTER_AREA)
            boxes, scores = self._run_hog(image, upsample)
            if len(boxes):
                return _sorted_left_to_right(boxes / pass_scale, scores)
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)

    def _find_near(self, gray: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side = float(max(box[2] - box[0], box[3] - box[1]))
        scale = min(2.0, 100.0 / side)  # small faces are enlarged: HOG needs ~80 px
        centre = (box[:2] + box[2:]) / 2
        half = side * 1.1
        x0, y0 = np.floor(np.maximum(centre - half, 0)).astype(int)
        x1 = int(min(np.ceil(centre[0] + half), gray.shape[1]))
        y1 = int(min(np.ceil(centre[1] + half), gray.shape[0]))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        region = gray[y0:y1, x0:x1]
        if scale != 1.0:
            region = cv2.resize(region, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        boxes, scores = self._run_hog(region, 0)
        boxes = boxes / scale + np.array([x0, y0, x0, y0], np.float32)
        return _sorted_left_to_right(boxes, scores)

    def _run_hog(self, image: np.ndarray, upsample: int) -> tuple[np.ndarray, np.ndarray]:
        rects, scores, _ = self._hog.run(np.ascontiguousarray(image), upsample, 0.0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        return boxes.reshape(-1, 4), np.asarray(scores, np.float32)

    def fit_landmarks(self, frame: np.ndarray, gray: np.ndarray, *, box: np.ndarray | None = None,
                      previous: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Landmarks [68, 2] and a 0..1 confidence for the face in ``box`` or around ``previous`` landmarks."""
        if previous is not None:
            points, score = self._fit_region(frame, gray, previous)
        elif box is not None:
            points, score = self._fit_box(frame, gray, box)
        else:
            raise LandmarkTalkError("fit_landmarks: give a face box or the previous landmarks")
        return points.astype(np.float32), float(score * _plausibility(points))


def _plausibility(points: np.ndarray) -> np.ndarray:
    """How face-like a 68-point shape is, 0..1, from its residual to the template after the pose fit."""
    return np.exp(-((shape_residual(points) / _RESIDUAL_SCALE) ** 2))


def _sorted_left_to_right(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


def _box_region(box: np.ndarray) -> tuple[np.ndarray, float]:
    """Similarity taking a detector box to an upright region where the box has a fixed side."""
    side = float(((box[2] - box[0]) + (box[3] - box[1])) / 2)
    fit_side = float(np.clip(side, _MIN_FIT_BOX, _MAX_FIT_BOX))
    k = fit_side / side
    centre = (box[:2] + box[2:]) / 2
    region = fit_side * _REGION
    matrix = np.array([[k, 0, region / 2 - k * centre[0]], [0, k, region / 2 - k * centre[1]]])
    return matrix, fit_side


def _landmark_region(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Similarity taking the face around ``points`` upright into a region with a detector-like box."""
    pose = fit_similarity(points[STABLE_POINTS], TEMPLATE[STABLE_POINTS])  # frame → template units
    side = DLIB_BOX[2] / float(np.sqrt(abs(np.linalg.det(pose[:, :2]))))
    fit_side = float(np.clip(side, _MIN_FIT_BOX, _MAX_FIT_BOX))
    k = fit_side / DLIB_BOX[2]
    region = fit_side * _REGION
    to_region = np.array([[k, 0, region / 2 - k * DLIB_BOX[0]], [0, k, region / 2 - k * DLIB_BOX[1]]])
    return _compose(to_region, pose), fit_side


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def _dlib_model_path(models_dir: str | os.PathLike | None) -> Path:
    candidates = []
    if models_dir is not None:
        candidates.append(Path(models_dir) / _DLIB_MODEL)
    # Located without importing the package: its __init__ pulls in the deprecated pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "models" / _DLIB_MODEL)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"dlib landmark model {_DLIB_MODEL} not found (looked in: {', '.join(map(str, candidates)) or 'nowhere'}); "
        f"`pip install face-recognition-models` or put the file in models_dir"
    )


def _load_dlib(models_dir):
    try:
        import dlib
    except ImportError as exc:
        raise LandmarkTalkError("backend 'dlib' needs the dlib package; `pip install dlib-bin`") from exc
    predictor = dlib.shape_predictor(str(_dlib_model_path(models_dir)))
    hog = dlib.get_frontal_face_detector()

    def fit_in(gray, matrix, fit_side):
        size = int(round(fit_side * _REGION))
        region = warp_affine(gray, matrix, (size, size))
        lo = int(round((size - fit_side) / 2))
        hi = lo + int(round(fit_side))
        rect = dlib.rectangle(lo, lo, hi - 1, hi - 1)
        points = np.array([(p.x, p.y) for p in predictor(region, rect).parts()], np.float64)
        # Averaged with the fit on the mirrored face: cancels the predictor's left/right bias and
        # cuts frame-to-frame jitter by ~10-20 % (measured on the developer clips) for one more fit.
        mirrored = np.ascontiguousarray(region[:, ::-1])
        flipped = np.array([(p.x, p.y) for p in predictor(mirrored, rect).parts()], np.float64)
        flipped[:, 0] = size - 1 - flipped[:, 0]
        points = (points + flipped[MIRROR]) / 2
        return apply_affine(invert_affine(matrix), points)

    def fit_box(frame, gray, box):
        matrix, fit_side = _box_region(np.asarray(box, np.float64))
        return fit_in(gray, matrix, fit_side), 1.0

    def fit_region(frame, gray, previous):
        matrix, fit_side = _landmark_region(np.asarray(previous, np.float64))
        return fit_in(gray, matrix, fit_side), 1.0

    return LandmarkDetector("dlib", hog, fit_box, fit_region)


def _fan_weights_path(models_dir: str | os.PathLike | None) -> Path:
    import torch
    from face_alignment.api import models_urls

    url = models_urls["2DFAN-4"]
    name = url.rsplit("/", 1)[-1]
    folders = [Path(models_dir)] if models_dir is not None else []
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"backend 'face_alignment': weights {name} not found in {' or '.join(map(str, folders))}; "
        f"download {url} once and put it in {folders[0]} (nothing is downloaded automatically), "
        f"or use backend='dlib'"
    )


def _decode_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak of each heatmap [N, h, w] → points [N, 2] (x, y, pixel centres) and peak values [N].

    FAN's convention: the argmax, moved a quarter pixel towards the higher neighbour on each axis.
    Done in numpy here; face-alignment's own decoder is numba-compiled (~15 s on first call).
    """
    count, height, width = heatmaps.shape
    flat = heatmaps.reshape(count, -1)
    index = flat.argmax(axis=1)
    y, x = np.divmod(index, width)
    rows = np.arange(count)
    inner_x = (x > 0) & (x < width - 1)
    inner_y = (y > 0) & (y < height - 1)
    right, left = heatmaps[rows, y, np.minimum(x + 1, width - 1)], heatmaps[rows, y, np.maximum(x - 1, 0)]
    below, above = heatmaps[rows, np.minimum(y + 1, height - 1), x], heatmaps[rows, np.maximum(y - 1, 0), x]
    dx = np.where(inner_x, right - left, 0)
    dy = np.where(inner_y, below - above, 0)
    points = np.stack([x + 0.5 + 0.25 * np.sign(dx), y + 0.5 + 0.25 * np.sign(dy)], axis=1)
    return points.astype(np.float64), flat[rows, index]


def _load_fan(models_dir, device):
    try:
        import dlib
        import torch
        from face_alignment.models import FAN
    except ImportError as exc:
        raise LandmarkTalkError(
            "backend 'face_alignment' needs the face-alignment and dlib packages; "
            "`pip install face-alignment dlib-bin`") from exc
    weights = _fan_weights_path(models_dir)
    network = FAN(4)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    network.eval().to(device)
    hog = dlib.get_frontal_face_detector()

    @torch.no_grad()
    def fit_in(frame, box_matrix, box_side):
        # FAN's training crops: a window of 2.05 × the detector box side, centred 12 % of the box
        # above its centre, resized to 256 px (face-alignment's centre/scale convention).
        k = 256.0 / (2.05 * box_side)
        shift = np.array([[k, 0, 128.0], [0, k, 128.0 + 0.12 * box_side * k]])
        centre = np.full(2, box_side * _REGION / 2)  # the box centre inside the fit region
        to_crop = _compose(shift, np.concatenate([np.eye(2), -centre[:, None]], axis=1))
        matrix = _compose(to_crop, box_matrix)
        crop = warp_affine(frame, matrix, (256, 256))
        batch = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).to(device)
        heatmaps = network(batch)
        heatmaps = (heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps).float().cpu().numpy()
        preds, scores = _decode_heatmaps(heatmaps[0])
        points = apply_affine(invert_affine(matrix), preds * (256.0 / heatmaps.shape[-1]))
        return points, float(np.clip(np.mean(scores), 0.0, 1.0))

    def fit_box(frame, gray, box):
        matrix, fit_side = _box_region(np.asarray(box, np.float64))
        return fit_in(frame, matrix, fit_side)

    def fit_region(frame, gray, previous):
        matrix, fit_side = _landmark_region(np.asarray(previous, np.float64))
        return fit_in(frame, matrix, fit_side)

    return LandmarkDetector("face_alignment", hog, fit_box, fit_region)


def load_landmark_detector(backend: str = "dlib", *, models_dir: str | os.PathLike | None = None,
                           device: str = "cpu") -> LandmarkDetector:
    """Load a landmark backend ("dlib" or "face_alignment"); ``models_dir`` is searched for its weights first."""
    if backend == "dlib":
        return _load_dlib(models_dir)
    if backend == "face_alignment":
        return _load_fan(models_dir, device)
    raise LandmarkTalkError(f"backend {backend!r}: unknown landmark backend; use one of {', '.join(BACKENDS)}")


def _detector_confidence(score: float) -> float:
    # HOG SVM margins: 0 is the detection threshold, good frontal faces score 1.5–3.
    return float(np.clip(0.5 + score / 4.0, 0.0, 1.0))


def _choose_face(boxes: np.ndarray, face: str | int, previous_box: np.ndarray | None = None) -> tuple[int, str]:
    """Index of the face to keep among left-to-right ``boxes`` and how it was chosen."""
    if len(boxes) == 1 and not isinstance(face, int):
        return 0, "only"
    if previous_box is not None:
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        distance = np.linalg.norm(centres - (previous_box[:2] + previous_box[2:]) / 2, axis=1)
        return int(np.argmin(distance)), "nearest"
    if isinstance(face, (int, np.integer)) and not isinstance(face, bool):
        if not 0 <= face < len(boxes):
            raise IndexError(face)
        return int(face), "index"
    if face == "largest":
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return int(np.argmax(areas)), "largest"
    raise LandmarkTalkError(f"face {face!r}: choose 'largest' or a face index (0 = leftmost face)")


def detect_landmarks(
    image: np.ndarray,
    *,
    detector: LandmarkDetector | None = None,
    backend: str = "dlib",
    face: str | int = "largest",
    previous: np.ndarray | None = None,
    models_dir: str | os.PathLike | None = None,
) -> FaceDetection | None:
    """Find the faces in one RGB uint8 image [H, W, 3] and fit 68 landmarks to the chosen one.

    ``face``: "largest" (default) or an index counting faces left to right from 0; with ``previous``
    landmarks [68, 2] the face nearest to them is taken instead. Returns None when no face is found;
    raises when ``face`` is an index beyond the faces found.
    """
    detector = detector or load_landmark_detector(backend, models_dir=models_dir)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LandmarkTalkError(f"image: expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    boxes, scores = detector.find_faces(gray)
    if not len(boxes):
        return None
    previous_box = None
    if previous is not None:
        previous = np.asarray(previous, np.float64)
        previous_box = np.concatenate([previous.min(axis=0), previous.max(axis=0)])
    try:
        index, chosen_by = _choose_face(boxes, face, previous_box)
    except IndexError:
        raise LandmarkTalkError(
            f"face {face}: only {len(boxes)} face(s) found (counted left to right from 0); "
            f"pick an index below {len(boxes)} or 'largest'") from None
    points, quality = detector.fit_landmarks(image, gray, box=boxes[index])
    if len(boxes) > 1:
        logger.info("%d faces found; took face %d (left to right) by %s", len(boxes), index, chosen_by)
    return FaceDetection(landmarks=points, confidence=_detector_confidence(scores[index]) * quality,
                         box=boxes[index], face_index=index, face_count=len(boxes), chosen_by=chosen_by)
