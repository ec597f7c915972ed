"""Aligned crops and paste-back: geometry, identity round trip on real clips, colour matching."""
from __future__ import annotations

import numpy as np
import pytest
from shared_media import SHARED_DATA, SKIP_REASON, shared_clips

from pipelines.errors import LandmarkTalkError
from pipelines.face import (
    align_faces, crop_landmarks, estimate_transforms, load_landmark_detector, paste_faces, paste_mask, track_face,
)
from pipelines.face._geometry import TEMPLATE
from pipelines.media import read_video
from pipelines.types import FaceTrack

needs_media = pytest.mark.skipif(not (SHARED_DATA / "README.md").is_file(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def short_clips():
    """The first 20 frames of every developer clip with their face track at 512 px crops."""
    detector = load_landmark_detector()
    clips = {}
    for clip in shared_clips():
        frames, fps = read_video(clip, max_frames=20)
        clips[clip.name] = (frames, track_face(frames, fps, detector=detector, crop_size=512))
    return clips


def _psnr(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    weight = np.repeat(weight[..., None], 3, axis=-1)
    mse = (((a.astype(np.float64) - b.astype(np.float64)) ** 2) * weight).sum() / weight.sum()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def _frame_masks(frames: np.ndarray, track: FaceTrack, size: int, region: str = "face") -> np.ndarray:
    """Where paste-back writes, in frame pixels: paste white crops onto black frames."""
    white = np.full((len(frames), size, size, 3), 255, np.uint8)
    return paste_faces(np.zeros_like(frames), white, track, colour_match=False, region=region)[..., 0] / 255.0


@needs_media
@pytest.mark.parametrize("clip", shared_clips(), ids=lambda p: p.name)
def test_identity_round_trip_is_lossless_inside_the_mask(clip, short_clips):
    frames, track = short_clips[clip.name]
    crops = align_faces(frames, track)
    pasted = paste_faces(frames, crops, track)
    mask = _frame_masks(frames, track, track.crop_size)
    assert (mask > 0.5).sum() > 0.05 * mask.size  # the mask really covers the face
    assert _psnr(pasted, frames, mask) >= 40.0
    # outside the mask not a single pixel changes
    np.testing.assert_array_equal(pasted[mask == 0], frames[mask == 0])


@needs_media
def test_crops_of_any_size_show_the_same_face(short_clips):
    frames, track = short_clips["WDA_KatieHill_000.mp4"]
    big = align_faces(frames[:3], track, 512)
    for size in (128, 256, 200):
        crops = align_faces(frames[:3], track, size)
        assert crops.shape == (3, size, size, 3)
        points = crop_landmarks(track, size).points
        np.testing.assert_allclose(points / size, crop_landmarks(track, 512).points / 512, atol=1e-5)
        # the small crop is the big one resampled: their means agree closely
        assert abs(crops.mean() - big.mean()) < 2.0


@needs_media
def test_crop_holds_the_whole_face_upright(short_clips):
    for frames, track in short_clips.values():
        points = crop_landmarks(track).points / track.crop_size  # [T, 68, 2] in crop widths
        eye_line = points[:, 45] - points[:, 36]
        assert np.abs(np.degrees(np.arctan2(eye_line[:, 1], eye_line[:, 0]))).max() < 5
        assert (points[:, 17:27, 1] > 0.25).all()  # room above the brows for the forehead
        assert (points[:, 8, 1] < 0.94).all()  # chin inside with margin
        assert (points[..., 0] > 0.15).all() and (points[..., 0] < 0.85).all()


def test_transforms_put_the_template_on_the_template():
    # a face that is the template rotated by 20°, scaled ×2 and moved: the transform undoes exactly that
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face = (TEMPLATE * 256) @ rotation.T * 2 + [300, 50]
    matrix = estimate_transforms(face[None], 256)[0]
    mapped = face @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, TEMPLATE * 256, atol=1e-3)


@needs_media
def test_colour_matching_removes_a_colour_shift_of_the_generated_crop(short_clips):
    frames, track = short_clips["RD_Radio34_000.mp4"]
    frames, crops = frames[:4], align_faces(frames[:4], track)
    # a generated crop that came back too red and too bright, as decoders drift
    tinted = np.clip(crops.astype(np.float32) * [1.15, 1.0, 0.9] + 12, 0, 255).astype(np.uint8)
    mask = _frame_masks(frames, track, track.crop_size)[:4]
    matched = paste_faces(frames, tinted, track, start=0)
    unmatched = paste_faces(frames, tinted, track, start=0, colour_match=False)
    inside = mask > 0.5
    shift = lambda out: np.abs(out[inside].astype(np.float64).mean(axis=0) - frames[inside].mean(axis=0)).max()
    assert shift(unmatched) > 8 and shift(matched) < 1.5, (shift(unmatched), shift(matched))
    assert _psnr(matched, frames, mask) > _psnr(unmatched, frames, mask) + 6


@needs_media
def test_lower_region_paste_leaves_the_eyes_alone(short_clips):
    frames, track = short_clips["vretalking_face_2.mp4"]
    frames = frames[:2]
    grey = np.full((2, 512, 512, 3), 128, np.uint8)
    pasted = paste_faces(frames, grey, track, region="lower", colour_match=False)
    eyes = np.rint(track.landmarks[:2, 36:48]).astype(int)
    mouth = np.rint(track.landmarks[:2, 48:68]).astype(int)
    for i in range(2):
        np.testing.assert_array_equal(pasted[i, eyes[i, :, 1], eyes[i, :, 0]], frames[i, eyes[i, :, 1], eyes[i, :, 0]])
        assert (pasted[i, mouth[i, :, 1], mouth[i, :, 0]] == 128).all()


@needs_media
def test_chunked_paste_uses_the_right_frames(short_clips):
    frames, track = short_clips["vretalking_face_1.mp4"]
    crops = align_faces(frames, track)
    whole = paste_faces(frames, crops, track)
    parts = np.concatenate([paste_faces(frames[i:i + 7], crops[i:i + 7], track, start=i) for i in range(0, 20, 7)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(align_faces(frames[7:14], track, start=7), crops[7:14])
    with pytest.raises(LandmarkTalkError, match="outside the face track of 20 frames"):
        align_faces(frames[:5], track, start=18)


def test_paste_mask_is_soft_inside_and_zero_at_the_border():
    face = TEMPLATE * 256
    mask = paste_mask(face, 256)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert mask[int(face[30, 1]), int(face[30, 0])] > 0.99  # nose tip
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 0.02 * mask.size  # a real feather, not a hard edge
    big = paste_mask(face * 2, 512)
    np.testing.assert_allclose(big[::2, ::2], mask, atol=0.08)  # the same mask at any resolution


@pytest.mark.parametrize("scale", [1.3, 0.6, 0.25])
def test_warps_sample_where_the_transform_says_even_when_shrinking(scale):
    from pipelines.face._geometry import invert_affine, warp_affine

    # A linear ramp survives area filtering and bilinear sampling exactly, so any half-pixel slip shows.
    ys, xs = np.mgrid[0:900, 0:1200].astype(np.float32)
    ramp = 0.3 * xs + 0.7 * ys
    angle = np.radians(12)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.concatenate([linear, [[-300 * scale], [-250 * scale]]], axis=1)  # window inside the image
    out = warp_affine(ramp, matrix, (160, 120))
    oy, ox = np.mgrid[0:120, 0:160].astype(np.float64)
    source = np.stack([ox, oy], -1) @ invert_affine(matrix)[:, :2].T + invert_affine(matrix)[:, 2]
    expected = 0.3 * source[..., 0] + 0.7 * source[..., 1]
    np.testing.assert_allclose(out[2:-2, 2:-2], expected[2:-2, 2:-2], atol=0.05 / min(scale, 1))
