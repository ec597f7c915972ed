"""Landmark backends: dlib offline on the real portraits; face-alignment's weights found or asked for."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from shared_media import SHARED_DATA, SKIP_REASON

from pipelines.errors import LandmarkTalkError
from pipelines.face import detect_landmarks, load_landmark_detector
from pipelines.face.detect import _plausibility
from pipelines.media import read_image

needs_media = pytest.mark.skipif(not (SHARED_DATA / "README.md").is_file(), reason=SKIP_REASON)
PORTRAITS = sorted((SHARED_DATA / "images").glob("*.png"))


@pytest.fixture(scope="module")
def detector():
    return load_landmark_detector("dlib")


@needs_media
@pytest.mark.parametrize("path", PORTRAITS, ids=lambda p: p.name)
def test_dlib_finds_the_one_face_in_each_portrait(path, detector):
    image = read_image(path)
    found = detect_landmarks(image, detector=detector)
    assert found is not None, path.name
    assert found.landmarks.shape == (68, 2) and found.landmarks.dtype == np.float32
    assert (found.face_count, found.face_index, found.chosen_by) == (1, 0, "only")
    assert 0.4 < found.confidence <= 1.0
    x0, y0, x1, y1 = found.box
    # the landmarks sit on the detected face: inside the box grown by a quarter (the chin hangs below it)
    grow = 0.25 * (x1 - x0)
    assert (found.landmarks[:, 0] > x0 - grow).all() and (found.landmarks[:, 0] < x1 + grow).all()
    assert (found.landmarks[:, 1] > y0 - grow).all() and (found.landmarks[:, 1] < y1 + grow).all()
    # anatomy: eyes above the nose tip above the mouth above the chin, left eye left of the right one
    y = found.landmarks[:, 1]
    assert y[36:48].mean() < y[30] < y[48:68].mean() < y[8]
    assert found.landmarks[36:42, 0].mean() < found.landmarks[42:48, 0].mean()


def test_heatmap_decoding_finds_the_peaks():
    from pipelines.face.detect import _decode_heatmaps

    heatmaps = np.zeros((3, 64, 64), np.float32)
    heatmaps[0, 10, 20] = 1.0  # x=20, y=10, neighbours equal: exactly the pixel centre
    heatmaps[1, 40, 5], heatmaps[1, 40, 6] = 0.9, 0.5  # brighter right neighbour: a quarter pixel right
    heatmaps[2, 0, 63] = 0.7  # on the border: no refinement
    points, scores = _decode_heatmaps(heatmaps)
    np.testing.assert_allclose(points, [[20.5, 10.5], [5.75, 40.5], [63.5, 0.5]])
    np.testing.assert_allclose(scores, [1.0, 0.9, 0.7])


def test_plausibility_prefers_faces_to_scrambled_points():
    from pipelines.face._geometry import TEMPLATE

    rng = np.random.default_rng(0)
    face = TEMPLATE * 300 + 50
    assert _plausibility(face) > 0.99
    assert _plausibility(face + rng.normal(0, 3, face.shape)) > 0.8
    assert _plausibility(rng.permutation(face)) < 0.05


def test_unknown_backend_and_bad_image_are_clear_errors(detector):
    with pytest.raises(LandmarkTalkError, match="unknown landmark backend; use one of dlib, face_alignment"):
        load_landmark_detector("mediapipe2")
    with pytest.raises(LandmarkTalkError, match=r"image: expected uint8 \[H, W, 3\] RGB"):
        detect_landmarks(np.zeros((64, 64), np.uint8), detector=detector)
    assert detect_landmarks(np.full((200, 200, 3), 90, np.uint8), detector=detector) is None


def test_face_alignment_without_weights_says_which_file_goes_where(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    models = tmp_path / "models"
    with pytest.raises(FileNotFoundError) as error:
        load_landmark_detector("face_alignment", models_dir=models)
    message = str(error.value)
    assert "2DFAN4-11f355bf06.pth.tar" in message and str(models) in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert not models.exists() and not (tmp_path / "torch").exists()  # nothing created, nothing fetched


@needs_media
def test_face_alignment_backend_runs_on_weights_from_the_models_folder(tmp_path, monkeypatch):
    # Random weights: this checks the plumbing (file lookup, crop, heatmap decoding, mapping back),
    # not accuracy, which needs the real FAN weights.
    fa = pytest.importorskip("face_alignment.models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # One hourglass instead of four keeps this CPU test fast; the loading path is the same.
    full_network = fa.FAN
    monkeypatch.setattr(fa, "FAN", lambda modules: full_network(1))
    torch.manual_seed(0)
    torch.save(fa.FAN(4).state_dict(), tmp_path / "2DFAN4-11f355bf06.pth.tar")
    detector = load_landmark_detector("face_alignment", models_dir=tmp_path)
    image = read_image(SHARED_DATA / "images" / "happy.png")
    found = detect_landmarks(image, detector=detector)
    assert detector.backend == "face_alignment"
    assert found.landmarks.shape == (68, 2) and np.isfinite(found.landmarks).all()
    # heatmap maxima map back into FAN's input window around the detected face
    x0, y0, x1, y1 = found.box
    side = x1 - x0
    assert (found.landmarks[:, 0] > x0 - 0.6 * side).all() and (found.landmarks[:, 0] < x1 + 0.6 * side).all()
    assert 0.0 <= found.confidence <= 1.0
