"""Face tracking on the real developer clips: every frame, gap filling, face choice, jitter smoothing."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from scipy.signal import savgol_filter
from shared_media import SHARED_DATA, SKIP_REASON, shared_clips

from pipelines.errors import LandmarkTalkError
from pipelines.face import (
    align_faces, crop_landmarks, detect_landmarks, load_landmark_detector, lower_face_mask, smooth_landmarks,
    track_face,
)
from pipelines.face._geometry import TEMPLATE
from pipelines.media import probe_media, read_image, read_video, read_video_frames

needs_media = pytest.mark.skipif(not (SHARED_DATA / "README.md").is_file(), reason=SKIP_REASON)


@pytest.fixture(scope="session")
def detector():
    return load_landmark_detector("dlib")


@pytest.fixture(scope="session")
def clip_tracks(detector):
    """Every developer clip tracked once, streamed in 64-frame chunks: {name: (track, frames_read)}."""
    tracks = {}
    for clip in shared_clips():
        done = []
        track = track_face(read_video_frames(clip, chunk_frames=64), probe_media(clip).fps, detector=detector,
                           source=str(clip), progress=lambda n, total: done.append(n))
        tracks[clip.name] = (track, done[-1])
    return tracks


def _frame_to_frame(points: np.ndarray) -> np.ndarray:
    """Landmark motion between consecutive frames, [T-1, 68] pixels."""
    return np.linalg.norm(np.diff(points, axis=0), axis=-1)


@needs_media
@pytest.mark.parametrize("clip", shared_clips(), ids=lambda p: p.name)
def test_every_frame_of_every_clip_has_landmarks(clip, clip_tracks):
    track, frames_read = clip_tracks[clip.name]
    info = probe_media(clip)
    assert len(track) == frames_read == info.frame_count
    assert track.frame_size == (info.height, info.width)
    assert track.landmarks.shape == (len(track), 68, 2) and track.landmarks.dtype == np.float32
    assert np.isfinite(track.landmarks).all() and np.isfinite(track.transforms).all()
    # Every developer clip shows its face throughout: nothing may have been filled in.
    assert track.filled.shape == (len(track),) and int(track.filled.sum()) == 0
    assert ((track.confidence >= 0) & (track.confidence <= 1)).all()
    assert track.confidence.mean() > 0.6, f"mean confidence {track.confidence.mean():.2f}"
    # The landmarks sit inside the frame and inside the aligned crop, with the face where the template puts it.
    assert (track.landmarks >= -2).all() and (track.landmarks[..., 0] <= info.width + 2).all()
    crop = crop_landmarks(track).points / track.crop_size
    assert (crop > 0.05).all() and (crop < 0.95).all()
    assert np.abs(np.median(crop, axis=0) - TEMPLATE).mean() < 0.03


@needs_media
def test_tracking_between_detections_agrees_with_detection_on_every_frame(detector):
    clip = SHARED_DATA / "clips" / "WDA_KatieHill_000.mp4"
    frames, fps = read_video(clip, max_frames=60)
    raw = dict(window_s=0, still_window_s=0, pose_window_s=0)
    every_frame = track_face(frames, fps, detector=detector, detect_every=1, **raw)
    tracked = track_face(frames, fps, detector=detector, detect_every=5, **raw)
    face_width = np.linalg.norm(every_frame.landmarks[:, 16] - every_frame.landmarks[:, 0], axis=-1).mean()
    gap = np.linalg.norm(tracked.landmarks - every_frame.landmarks, axis=-1).mean(axis=1)
    # No drift: tracked landmarks stay within ~1 % of the face width of the per-frame detections.
    assert gap.max() < 0.03 * face_width and gap.mean() < 0.012 * face_width, (gap.mean(), gap.max(), face_width)


@needs_media
def test_chunked_and_whole_video_tracks_are_identical(detector):
    clip = SHARED_DATA / "clips" / "RD_Radio34_000.mp4"
    frames, fps = read_video(clip, max_frames=40)
    whole = track_face(frames, fps, detector=detector)
    chunked = track_face((frames[i:i + 16] for i in range(0, 40, 16)), fps, detector=detector)
    np.testing.assert_array_equal(whole.landmarks, chunked.landmarks)
    np.testing.assert_array_equal(whole.transforms, chunked.transforms)


@needs_media
def test_smoothing_halves_jitter_on_still_segments_of_a_real_clip(detector):
    # The developer clip with the least head motion; still segments are found from a 1-second
    # reference fit, independent of the smoother under test.
    clip = SHARED_DATA / "clips" / "vretalking_face_1.mp4"
    frames, fps = read_video(clip)
    raw = track_face(frames, fps, detector=detector, window_s=0, still_window_s=0, pose_window_s=0).landmarks
    smoothed = smooth_landmarks(raw, fps)
    reference = savgol_filter(raw.astype(np.float64), int(fps) | 1, 2, axis=0)
    still = _frame_to_frame(reference) < 0.3
    assert still.mean() > 0.2, f"only {still.mean():.0%} still (frame, point) pairs"
    ratio = _frame_to_frame(smoothed)[still].mean() / _frame_to_frame(raw)[still].mean()
    assert ratio <= 0.5, f"smoothed/raw jitter on still segments {ratio:.2f}"
    # and the default track is exactly this smoothing of this raw track
    np.testing.assert_allclose(track_face(frames, fps, detector=detector).landmarks, smoothed, atol=1e-4)


def _synthetic_track(fps: float = 25.0, seconds: float = 10.0, seed: int = 0):
    """A clean talking-face track: still 0–2 s, speaking (2–6 Hz lip motion) 2–6 s, swaying head 6–10 s."""
    t = np.arange(int(seconds * fps)) / fps
    clean = np.repeat((TEMPLATE * 300 + 106)[None], len(t), axis=0)
    speaking = (t >= 2) & (t < 6)
    phase = np.cumsum(2 * np.pi * (4 + 1.5 * np.sin(2 * np.pi * 0.7 * t)) / fps)
    phase -= phase[np.argmax(speaking)]
    envelope = np.clip(np.minimum(t - 2, 6 - t) / 0.25, 0, 1)  # speech fades in and out over 0.25 s
    opening = np.where(speaking, 12 * (0.5 - 0.5 * np.cos(phase)) * envelope, 0.0)
    lips = np.full(68, np.nan)
    lips[[48, 54, 60, 64]] = 0.4  # corners
    lips[[49, 50, 51, 52, 53, 61, 62, 63]] = -0.2  # upper lip rises a little
    lips[[55, 56, 57, 58, 59, 65, 66, 67]] = 1.0  # lower lip follows the jaw
    lips[5:12] = 0.6  # chin
    moving = ~np.isnan(lips)
    clean[:, moving, 1] += opening[:, None] * lips[moving][None]
    angle = np.where(t >= 6, 0.05 * np.sin(2 * np.pi * 0.5 * (t - 6)), 0.0)
    shift = np.where(t >= 6, 15 * np.sin(2 * np.pi * 0.3 * (t - 6)), 0.0)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    clean = np.einsum("tij,tnj->tni", rotation, clean - 256) + 256
    clean[..., 0] += shift[:, None]
    noisy = clean + np.random.default_rng(seed).normal(0, 1.0, clean.shape)
    return clean, noisy, t


def test_smoothing_synthetic_track_lowers_jitter_without_moving_away_from_truth():
    fps = 25.0
    clean, noisy, t = _synthetic_track(fps)
    smoothed = smooth_landmarks(noisy, fps)
    still = t[1:] < 2
    ratio = _frame_to_frame(smoothed)[still].mean() / _frame_to_frame(noisy)[still].mean()
    assert ratio <= 0.5, ratio
    error = lambda x: np.linalg.norm(x - clean, axis=-1)
    for name, part in (("still", t < 2), ("speaking", (t >= 2) & (t < 6)), ("swaying", t >= 6)):
        assert error(smoothed)[part].mean() <= error(noisy)[part].mean(), name
        # the lips while speaking too: smoothing must not flatten their motion into a larger error
        assert error(smoothed)[part][:, 48:].mean() <= error(noisy)[part][:, 48:].mean(), name


def test_smoothing_keeps_a_clean_track():
    clean, _, _ = _synthetic_track()
    smoothed = smooth_landmarks(clean, 25.0)
    error = np.linalg.norm(smoothed - clean, axis=-1)
    assert error.mean() < 0.2, error.mean()
    # The lips keep their 2–6 Hz opening and closing: same shape, nearly the same amplitude.
    gap = lambda x: np.linalg.norm(x[:, 66] - x[:, 62], axis=-1)
    assert np.corrcoef(gap(smoothed), gap(clean))[0, 1] > 0.98
    assert 0.85 < gap(smoothed).std() / gap(clean).std() < 1.1


def test_photo_without_a_face_is_an_error_naming_the_file(tmp_path, detector):
    path = tmp_path / "gradient.png"
    gradient = np.linspace(0, 255, 320, dtype=np.float32)
    image = np.stack([np.tile(gradient, (240, 1)), np.tile(gradient[:240, None], (1, 320)),
                      np.full((240, 320), 128.0)], axis=-1).astype(np.uint8)
    cv2.imwrite(str(path), image)
    with pytest.raises(LandmarkTalkError, match="gradient.png: no face found; use a clearer, frontal photo"):
        track_face(read_image(path), 25.0, detector=detector, source=str(path))


@needs_media
def test_frames_without_a_face_are_filled_and_reported(detector, caplog):
    frames, fps = read_video(SHARED_DATA / "clips" / "RD_Radio34_000.mp4", max_frames=50)
    frames = frames.copy()
    frames[20:28] = 0
    frames[45] = 255
    with caplog.at_level(logging.WARNING, logger="pipelines.face.track"):
        track = track_face(frames, fps, detector=detector, source="blanked.mp4")
    assert np.nonzero(track.filled)[0].tolist() == list(range(20, 28)) + [45]
    assert (track.confidence[track.filled] == 0).all() and (track.confidence[~track.filled] > 0.3).all()
    assert "blanked.mp4: no face in 9 of 50 frames" in caplog.text and "(frames 20-27, 45)" in caplog.text
    # filled landmarks lie between the tracked frames around the gap
    low = np.minimum(track.landmarks[19], track.landmarks[28]) - 3
    high = np.maximum(track.landmarks[19], track.landmarks[28]) + 3
    assert ((track.landmarks[20:28] >= low) & (track.landmarks[20:28] <= high)).all()


@pytest.fixture(scope="module")
def two_faces(shared_data):
    """Two real portraits side by side: a small face on the left, a large one on the right."""
    left = cv2.resize(read_image(shared_data / "images" / "people_0.png"), (300, 300), interpolation=cv2.INTER_AREA)
    right = cv2.resize(read_image(shared_data / "images" / "happy.png"), (300, 300), interpolation=cv2.INTER_CUBIC)
    return np.concatenate([left, right], axis=1)


@needs_media
def test_two_faces_largest_or_by_index_and_the_choice_is_reported(two_faces, detector, caplog):
    largest = detect_landmarks(two_faces, detector=detector)
    assert (largest.face_count, largest.face_index, largest.chosen_by) == (2, 1, "largest")
    assert largest.landmarks[:, 0].min() > 300
    first = detect_landmarks(two_faces, detector=detector, face=0)
    assert (first.face_index, first.chosen_by) == (0, "index") and first.landmarks[:, 0].max() < 300
    nearest = detect_landmarks(two_faces, detector=detector, previous=first.landmarks + 5)
    assert (nearest.face_index, nearest.chosen_by) == (0, "nearest")

    video = np.repeat(two_faces[None], 6, axis=0)
    with caplog.at_level(logging.INFO, logger="pipelines.face.track"):
        track = track_face(video, 25.0, detector=detector, face=0, source="pair.png")
    assert (track.landmarks[..., 0] < 300).all()
    assert "pair.png: 2 face(s) at frame 0; following face 0 (counted left to right), chosen by index" in caplog.text
    assert (track_face(video, 25.0, detector=detector).landmarks[..., 0] > 300).all()
    with pytest.raises(LandmarkTalkError, match=r"pair.png: face 2 asked for, but frame 0 shows 2 face\(s\)"):
        track_face(video, 25.0, detector=detector, face=2, source="pair.png")


@needs_media
def test_lower_face_mask_covers_the_mouth_on_every_frame_of_a_real_clip(clip_tracks):
    track, _ = clip_tracks["WDA_KatieHill_000.mp4"]
    landmarks = crop_landmarks(track)
    masks = lower_face_mask(landmarks.points, landmarks.crop_size)
    assert masks.shape == (len(track), track.crop_size, track.crop_size)
    x, y = np.rint(landmarks.points).astype(int).transpose(2, 0, 1)
    frame = np.arange(len(track))[:, None]
    assert (masks[frame, y[:, 48:68], x[:, 48:68]] == 1).all()  # mouth
    assert (masks[frame, y[:, 36:48], x[:, 36:48]] == 0).all()  # eyes


@needs_media
def test_aligned_crops_show_the_face_upright(clip_tracks, shared_data, detector):
    clip = shared_data / "clips" / "RD_Radio34_000.mp4"
    track, _ = clip_tracks[clip.name]
    frames, _ = read_video(clip, max_frames=5)
    crops = align_faces(frames, track, 128)
    assert crops.shape == (5, 128, 128, 3) and crops.dtype == np.uint8
    # The detector finds one face in the crop, at the template's place (eyes level, chin low).
    found = detect_landmarks(cv2.resize(crops[0], (256, 256)), detector=detector)
    assert found is not None
    assert np.abs(found.landmarks / 256 - TEMPLATE).mean() < 0.03
