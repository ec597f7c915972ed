"""Track one face through a video: landmarks on every frame, gaps filled, smoothed, crop transforms.

Per frame, streaming over chunks:
- every ``detect_every`` frames the face detector confirms the face (in a region around the tracked
  face; over the whole frame when there is none yet), and picks it up again after a loss;
- in between, the previous landmarks are carried to the new frame by Lucas–Kanade optical flow
  (a similarity fitted to the points that pass a forward–backward check) and refitted there by the
  landmark backend, which is several times cheaper than detection;
- frames without a face are filled by interpolation afterwards and reported.
Landmarks are then smoothed in time (Savitzky–Golay, zero phase) separately for the head pose and
the face shape, and the crop transforms are fitted to the smoothed landmarks, never to raw boxes.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import cv2
import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import savgol_filter

from ..errors import LandmarkTalkError
from ..types import FaceTrack
from ._geometry import apply_affine, fit_similarity, invert_affine, to_canonical
from .align import estimate_transforms
from .detect import LandmarkDetector, _choose_face, _detector_confidence, load_landmark_detector

__all__ = ["track_face", "smooth_landmarks"]

logger = logging.getLogger(__name__)

# Points followed by optical flow: well-textured corners (eyes, brows, nose, mouth corners, jaw).
_FLOW_POINTS = np.array([2, 4, 8, 12, 14, 17, 19, 21, 22, 24, 26, 27, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57])
_FLOW_REGION = 160  # px: the face is resampled to about this size for optical flow
_MIN_CONFIDENCE = 0.3  # below this a tracked fit is distrusted and the face detected again
# Point speed (crop widths per second) from which the shape gets the short smoothing window. Landmark
# jitter moves the long-window speed estimate by ~0.01/s; speaking lips move at 0.1–0.5/s.
_MOVING_SPEED = 0.05
_SPEED_WINDOW_S = 0.3


def _iterate_chunks(frames) -> Iterable[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise LandmarkTalkError(f"frames: expected uint8 [T, H, W, 3] RGB, got {frames.shape}")
        yield frames
        return
    for chunk in frames:
        chunk = np.asarray(chunk)
        yield chunk[None] if chunk.ndim == 3 else chunk


def _box_of(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.maximum(0, np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / max(union, 1e-6))


def _index_ranges(indices: np.ndarray) -> str:
    if not len(indices):
        return ""
    breaks = np.nonzero(np.diff(indices) > 1)[0]
    starts = np.concatenate([indices[:1], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], indices[-1:]])
    return ", ".join(str(s) if s == e else f"{s}-{e}" for s, e in zip(starts, ends))


class _Tracker:
    """Frame-by-frame state: the previous frame, landmarks and detector box of the face being followed."""

    def __init__(self, detector: LandmarkDetector, face, detect_every: int, source: str):
        self.detector = detector
        self.face = face
        self.detect_every = detect_every
        self.source = source
        self.previous_gray: np.ndarray | None = None
        self.previous_points: np.ndarray | None = None
        self.last_box: np.ndarray | None = None  # of the followed face, kept through losses
        self.since_detection = 0
        self.unconfirmed = 0
        self.choice: tuple[int, int, int, str] | None = None  # frame, faces, index, how
        self.most_faces = 0

    def step(self, frame: np.ndarray, index: int) -> tuple[np.ndarray | None, float]:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        tracked, confidence = None, 0.0
        if self.previous_points is not None and self.detect_every > 1:
            tracked, confidence = self._follow(frame, gray)
        due = self.since_detection + 1 >= self.detect_every or tracked is None or confidence < _MIN_CONFIDENCE
        if due:
            points, confidence = self._detect(frame, gray, index, tracked, confidence)
        else:
            points = tracked
            self.since_detection += 1
        self.previous_gray = gray
        self.previous_points = points
        if points is not None:
            self.last_box = _box_of(points)
        return points, confidence

    def _follow(self, frame: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray | None, float]:
        moved, flow_quality = self._flow(gray)
        if moved is None:
            return None, 0.0
        points, confidence = self.detector.fit_landmarks(frame, gray, previous=moved)
        return points, confidence * flow_quality

    def _flow(self, gray: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Carry the previous landmarks to this frame with pyramidal LK + forward–backward check."""
        previous = self.previous_points.astype(np.float64)
        box = _box_of(previous)
        side = float(max(box[2:] - box[:2]))
        scale = min(1.0, _FLOW_REGION / side)
        # The same window of both frames, shrunk so the face is ~160 px: flow cost follows the face size.
        x0, y0 = np.maximum(np.floor(box[:2] - side * 0.3), 0).astype(int)
        x1 = int(min(np.ceil(box[2] + side * 0.3), gray.shape[1]))
        y1 = int(min(np.ceil(box[3] + side * 0.3), gray.shape[0]))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None, 0.0
        size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
        before = cv2.resize(self.previous_gray[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        after = cv2.resize(gray[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        start = ((previous[_FLOW_POINTS] - (x0, y0)) * scale).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
        forward, ok_f, _ = cv2.calcOpticalFlowPyrLK(before, after, start, None, winSize=(15, 15), maxLevel=2,
                                                   criteria=criteria)
        backward, ok_b, _ = cv2.calcOpticalFlowPyrLK(after, before, forward, None, winSize=(15, 15), maxLevel=2,
                                                    criteria=criteria)
        error = np.linalg.norm(backward - start, axis=1)
        good = (ok_f[:, 0] == 1) & (ok_b[:, 0] == 1) & (error < 1.0)
        quality = float(good.mean())
        if good.sum() < max(6, len(_FLOW_POINTS) // 2):
            return None, 0.0
        motion = fit_similarity(start[good] / scale, forward[good] / scale)
        moved = apply_affine(motion, previous - (x0, y0)) + (x0, y0)
        return moved, quality

    def _detect(self, frame, gray, index, tracked, tracked_confidence) -> tuple[np.ndarray | None, float]:
        near = self.last_box if self.previous_points is not None and self.detect_every > 1 else None
        boxes, scores = self.detector.find_faces(gray, near=near)
        self.since_detection = 0
        if not len(boxes):
            # A tracked face the detector misses (a turned head) is kept for one more detection round.
            if tracked is not None and tracked_confidence >= 0.5 and self.unconfirmed < 1:
                self.unconfirmed += 1
                return tracked, tracked_confidence
            self.unconfirmed = 0
            return None, 0.0
        self.unconfirmed = 0
        self.most_faces = max(self.most_faces, len(boxes))
        if self.choice is None:
            try:
                chosen, how = _choose_face(boxes, self.face)
            except IndexError:
                raise LandmarkTalkError(
                    f"{self.source}: face {self.face} asked for, but frame {index} shows {len(boxes)} face(s) "
                    f"(counted left to right from 0); pick an index below {len(boxes)} or 'largest'") from None
            self.choice = (index, len(boxes), chosen, how)
            level = logging.INFO if len(boxes) > 1 else logging.DEBUG
            logger.log(level, "%s: %d face(s) at frame %d; following face %d (counted left to right), chosen by %s",
                       self.source, len(boxes), index, chosen, how)
        else:
            chosen, _ = _choose_face(boxes, self.face, self.last_box)
        box = boxes[chosen]
        detection_confidence = _detector_confidence(scores[chosen])
        # Keep the tracked fit when it sits on the detected face: refitting from the detector's box
        # every few frames would make the landmarks jump at that period.
        if tracked is not None and _overlap(_box_of(tracked), box) > 0.5 and tracked_confidence >= _MIN_CONFIDENCE:
            return tracked, max(tracked_confidence, detection_confidence * tracked_confidence)
        points, quality = self.detector.fit_landmarks(frame, gray, box=box)
        return points, detection_confidence * quality


def _savgol(values: np.ndarray, window_s: float, fps: float, order: int = 2, deriv: int = 0) -> np.ndarray:
    window = int(round(window_s * fps)) | 1  # odd
    window = min(window, len(values) if len(values) % 2 else len(values) - 1)
    if window <= order:
        return values if deriv == 0 else np.gradient(values, axis=0) * fps
    return savgol_filter(values, window, order, deriv=deriv, delta=1.0 / fps, axis=0, mode="interp")


def smooth_landmarks(points: np.ndarray, fps: float, *, window_s: float = 0.2, still_window_s: float = 0.6,
                     pose_window_s: float = 0.5) -> np.ndarray:
    """Zero-phase temporal smoothing of landmarks [T, 68, 2] (pixels) → float32 [T, 68, 2].

    The head pose (a similarity fitted on the stable points) is smoothed over ``pose_window_s``
    seconds. The face shape in that pose is smoothed per point and adaptively, as the One-Euro filter
    does but without its lag: a point at rest gets the long ``still_window_s`` window (jitter gone),
    a moving point the short ``window_s`` one (the lips keep their syllable-rate motion).
    Windows are in seconds, so any frame rate behaves alike.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise LandmarkTalkError(f"points: expected [T, 68, 2] landmarks, got {points.shape}")
    if len(points) < 3:
        return points.astype(np.float32)
    _, pose = to_canonical(points)
    pose = _savgol(pose.reshape(len(points), 6), pose_window_s, fps).reshape(-1, 2, 3)
    # Keep the smoothed linear part a similarity (rotation × scale).
    a = (pose[:, 0, 0] + pose[:, 1, 1]) / 2
    b = (pose[:, 1, 0] - pose[:, 0, 1]) / 2
    pose[:, 0, 0], pose[:, 0, 1], pose[:, 1, 0], pose[:, 1, 1] = a, -b, b, a
    shape = apply_affine(pose, points)  # template units: the crop is 1 wide
    moving = _savgol(shape, window_s, fps)
    still = _savgol(shape, still_window_s, fps)
    # Speed over a short window, then its running maximum: a lip turning round at full opening is
    # still "moving" though its velocity crosses zero there.
    speed = np.linalg.norm(_savgol(shape, _SPEED_WINDOW_S, fps, deriv=1), axis=-1, keepdims=True)
    envelope = maximum_filter1d(speed, size=max(1, int(round(_SPEED_WINDOW_S * fps)) | 1), axis=0)
    weight = np.clip(envelope / _MOVING_SPEED, 0.0, 1.0)
    shape = still + (moving - still) * weight
    return apply_affine(invert_affine(pose), shape).astype(np.float32)


def _fill_gaps(points: list, source: str) -> tuple[np.ndarray, np.ndarray]:
    found = np.array([p is not None for p in points])
    total = len(points)
    if not found.any():
        if total == 1:
            raise LandmarkTalkError(
                f"{source}: no face found; use a clearer, frontal photo in which the whole face is visible "
                f"and at least 80 px wide (the detector looks for frontal faces), or crop the photo around the face")
        raise LandmarkTalkError(
            f"{source}: no face found in any of {total} frames; use a video in which one face is frontal, "
            f"unobstructed and at least 80 px wide")
    known = np.nonzero(found)[0]
    stacked = np.stack([points[i] for i in known]).astype(np.float64)
    filled = ~found
    if filled.any():
        missing = np.nonzero(filled)[0]
        flat = stacked.reshape(len(known), -1)
        # Linear between the nearest tracked frames; held at the ends of the video.
        interpolated = np.stack([np.interp(missing, known, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        logger.warning("%s: no face in %d of %d frames, filled by interpolation (frames %s)",
                       source, len(missing), total, _index_ranges(missing))
        full = np.empty((total, 68, 2))
        full[known] = stacked
        full[missing] = interpolated.reshape(-1, 68, 2)
        return full, filled
    return stacked, filled


def track_face(
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    *,
    crop_size: int = 256,
    face: str | int = "largest",
    detect_every: int = 5,
    detector: LandmarkDetector | None = None,
    backend: str = "dlib",
    models_dir: str | None = None,
    window_s: float = 0.2,
    still_window_s: float = 0.6,
    pose_window_s: float = 0.5,
    source: str = "frames",
    progress: Callable[[int, int], None] | None = None,
) -> FaceTrack:
    """Landmarks, confidence and aligned-crop transforms for one face on every frame.

    ``frames``: uint8 RGB [T, H, W, 3] (one photo: [H, W, 3]) or an iterable of such chunks, e.g.
    ``read_video_frames(path)``; only landmarks are kept, so memory is flat in video length.
    ``face``: "largest" or an index counting faces left to right from 0, chosen where the face is
    first found and followed from there (the choice is logged). ``detect_every``: 1 runs the detector
    on every whole frame; k > 1 detects every k-th frame and tracks in between. ``source`` names the
    input in messages. ``progress(done, total)`` is called after each chunk (total 0 when unknown).
    """
    if detect_every < 1:
        raise LandmarkTalkError(f"detect_every {detect_every}: give 1 (detect on every frame) or more")
    if not fps or fps <= 0:
        raise LandmarkTalkError(f"fps {fps}: give the video's frame rate (frames per second, > 0)")
    detector = detector or load_landmark_detector(backend, models_dir=models_dir)
    total = len(frames) if isinstance(frames, np.ndarray) and frames.ndim == 4 else 0
    tracker = _Tracker(detector, face, detect_every, source)
    points: list[np.ndarray | None] = []
    confidence: list[float] = []
    frame_size = None
    for chunk in _iterate_chunks(frames):
        if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise LandmarkTalkError(f"frames: expected uint8 RGB chunks [t, H, W, 3], got {chunk.dtype} {chunk.shape}")
        if frame_size is None:
            frame_size = (int(chunk.shape[1]), int(chunk.shape[2]))
        elif chunk.shape[1:3] != frame_size:
            raise LandmarkTalkError(f"frames: size changes from {frame_size} to {chunk.shape[1:3]} mid-video")
        for frame in chunk:
            found, score = tracker.step(frame, len(points))
            points.append(found)
            confidence.append(score)
        if progress is not None:
            progress(len(points), total)
    if not points:
        raise LandmarkTalkError(f"{source}: holds no frames; give a video or image with at least one frame")
    conf = np.asarray(confidence, np.float32)
    raw, filled = _fill_gaps(points, source)
    conf = np.where(filled, 0.0, conf).astype(np.float32)
    if tracker.most_faces > 1 and tracker.choice is not None:
        at, count, index, how = tracker.choice
        logger.info("%s: followed face %d of %d (left to right, chosen by %s at frame %d)",
                    source, index, count, how, at)
    smoothed = smooth_landmarks(raw, fps, window_s=window_s, still_window_s=still_window_s,
                                pose_window_s=pose_window_s)
    return FaceTrack(
        landmarks=smoothed,
        confidence=conf,
        transforms=estimate_transforms(smoothed, crop_size),
        crop_size=int(crop_size),
        frame_size=frame_size,
        fps=float(fps),
        filled=filled,
        face_index=int(tracker.choice[2]) if tracker.choice is not None else 0,
        face_count=max(1, int(tracker.most_faces)),
    )
