"""Face nodes (nodes/face.py) on a real photo, called with ComfyUI-shaped values (COMFYUI_DIR)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def face_nodes():
    return pack_module("nodes.face")


@pytest.fixture(scope="module")
def photo_frames(shared_data):
    """A 256² portrait repeated as a 4-frame 'video' IMAGE batch."""
    frame = pack_module("pipelines.media").read_image(shared_data / "images" / "happy.png")
    return torch.from_numpy(np.repeat(frame[None], 4, axis=0)).float() / 255


@pytest.fixture(scope="module")
def tracked(face_nodes, photo_frames, tmp_path_factory):
    use_scratch_folders(tmp_path_factory.mktemp("comfy"))
    return face_nodes.LandmarkTalkTrackFace.execute(images=photo_frames, fps=25.0, crop_size=128, face="largest",
                                                    detect_every=2, backend="dlib")


def test_track_face_finds_the_face_and_previews_it(tracked, photo_frames):
    (track,) = tracked.result
    assert len(track) == 4 and track.crop_size == 128 and track.frame_size == (256, 256)
    x, y = track.landmarks[0, :, 0], track.landmarks[0, :, 1]
    assert 40 < x.min() < x.max() < 216 and 40 < y.min() < y.max() < 256  # on the face, not the corners
    ui = tracked.ui
    assert len(ui["images"]) == 4 and ui["images"][0]["type"] == "temp"
    assert ui["landmarktalk_summary"][:3] == ["4 frames", "0 filled", "face 1 of 1"]


def test_preview_draws_the_outline_on_the_frame(face_nodes, tracked, photo_frames):
    (track,) = tracked.result
    raster = pack_module("pipelines.face").rasterize_landmarks(track.landmarks[:1], 256, thickness=2)
    drawn = face_nodes.outline_overlay(photo_frames[:1], raster)
    on_line = torch.from_numpy(raster[0, 0] > 0.99)
    assert torch.allclose(drawn[0][on_line], torch.tensor([0.15, 1.0, 0.35]), atol=0.01)
    assert torch.equal(drawn[0][~torch.from_numpy(raster[0, 0] > 0)], photo_frames[0][~torch.from_numpy(raster[0, 0] > 0)])


def test_align_faces_gives_upright_crops_and_crop_landmarks(face_nodes, tracked, photo_frames):
    (track,) = tracked.result
    crops, landmarks = face_nodes.LandmarkTalkAlignFaces.execute(images=photo_frames, face_track=track,
                                                                 crop_size=96).result
    assert crops.shape == (4, 96, 96, 3) and crops.dtype == torch.float32 and 0 <= crops.min() <= crops.max() <= 1
    assert landmarks.crop_size == 96 and landmarks.points.shape == (4, 68, 2)
    eyes = landmarks.points[0, 36:48]
    assert abs(eyes[:6, 1].mean() - eyes[6:, 1].mean()) < 3  # eyes level in the aligned crop
    assert 20 < landmarks.points[0, :, 0].mean() < 76


def test_paste_faces_round_trip_and_region(face_nodes, tracked, photo_frames):
    (track,) = tracked.result
    crops, _ = face_nodes.LandmarkTalkAlignFaces.execute(images=photo_frames, face_track=track, crop_size=0).result
    (same,) = face_nodes.LandmarkTalkPasteFaces.execute(images=photo_frames, crops=crops, face_track=track,
                                                        region="face", colour_match=False).result
    assert same.shape == photo_frames.shape
    assert (same - photo_frames).abs().mean() < 0.01  # its own crops go back where they came from
    black = torch.zeros_like(crops)
    (pasted,) = face_nodes.LandmarkTalkPasteFaces.execute(images=photo_frames, crops=black, face_track=track,
                                                          region="lower", colour_match=False).result
    changed = (pasted - photo_frames).abs().amax(dim=-1)[0] > 0.05
    ys, xs = np.nonzero(changed.numpy())
    mouth = track.landmarks[0, 48:68]
    assert changed.any() and mouth[:, 1].min() - 40 < ys.mean() and abs(xs.mean() - mouth[:, 0].mean()) < 20
    assert not changed[:60].any()  # the top of the head is untouched


def test_draw_landmarks_over_crops_and_on_black(face_nodes, tracked, photo_frames):
    (track,) = tracked.result
    crops, landmarks = face_nodes.LandmarkTalkAlignFaces.execute(images=photo_frames, face_track=track,
                                                                 crop_size=0).result
    out = face_nodes.LandmarkTalkDrawLandmarks.execute(landmarks=landmarks, size=64, colour=False)
    (drawn,) = out.result
    assert drawn.shape == (4, 64, 64, 3) and drawn.max() > 0.9 and (drawn.sum(-1) == 0).float().mean() > 0.8
    assert out.ui["landmarktalk_summary"][0] == "4 frames" and len(out.ui["images"]) == 4
    (over,) = face_nodes.LandmarkTalkDrawLandmarks.execute(landmarks=landmarks, size=64, colour=True,
                                                           background=crops[:1]).result
    assert (over.sum(-1) == 0).float().mean() < 0.05  # the crop shows through
    with pytest.raises(ValueError, match="background"):
        face_nodes.LandmarkTalkDrawLandmarks.execute(landmarks=landmarks, size=64, background=crops[:2])


def test_paste_faces_needs_one_crop_per_frame(face_nodes, tracked, photo_frames):
    (track,) = tracked.result
    with pytest.raises(ValueError, match="crops: 3 crops for 4 frames"):
        face_nodes.LandmarkTalkPasteFaces.execute(images=photo_frames, crops=torch.zeros(3, 64, 64, 3), face_track=track)


def test_align_and_paste_stop_between_chunks_on_cancel(face_nodes, tracked, monkeypatch):
    import comfy.model_management as mm

    (track,) = tracked.result
    frames = torch.rand(40, 256, 256, 3)
    long_track = type(track)(**{**track.__dict__, "landmarks": np.repeat(track.landmarks[:1], 40, 0),
                                "confidence": np.ones(40, np.float32), "transforms": np.repeat(track.transforms[:1], 40, 0),
                                "filled": np.zeros(40, bool)})
    calls = []
    align = face_nodes.align_faces
    monkeypatch.setattr(face_nodes, "align_faces", lambda *a, **k: calls.append(k["start"]) or align(*a, **k))
    face_nodes.LandmarkTalkAlignFaces.execute(images=frames, face_track=long_track)
    assert calls == [0, 16, 32]
    calls.clear()
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            face_nodes.LandmarkTalkAlignFaces.execute(images=frames, face_track=long_track)
    finally:
        mm.interrupt_current_processing(False)
    assert calls == [0]  # stopped after the first chunk
