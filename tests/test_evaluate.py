"""evaluate: metric values pinned against closed forms, LPIPS weights handling, video alignment, report and CLI."""
from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pytest
import torch

from pipelines import checkpoint, cli
from pipelines.errors import LandmarkTalkError
from pipelines.evaluation import evaluate_videos, format_comparison
from pipelines.evaluation import metrics as m
from pipelines.evaluation import syncnet as sn
from pipelines.evaluation.fid import FIDInception, inception_features, load_fid_inception
from pipelines.evaluation.lpips import LPIPS, convert_lpips_weights, load_lpips, lpips_scores
from pipelines.face.align import estimate_transforms
from pipelines.media import read_video, write_video

# ------------------------------------------------------------------------------------------ helpers


def _texture(seed: int = 0, size=(48, 64), count: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 200, (count, *size, 3), dtype=np.uint8)


def _face_template(center=(32.0, 24.0), scale=1.0) -> np.ndarray:
    """68 points with eyes, nose and mouth where a frontal face has them (a crude but valid geometry)."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([-16 * np.cos(t), -2 + 18 * np.sin(t) * 0.9], 1)
    brows = np.stack([np.r_[np.linspace(-13, -3, 5), np.linspace(3, 13, 5)], np.full(10, -12.0)], 1)
    nose = np.stack([np.r_[np.zeros(4), np.linspace(-4, 4, 5)], np.r_[np.linspace(-7, 0, 4), np.full(5, 2.0)]], 1)
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = np.concatenate([np.stack([c + 3 * np.cos(angles), -6 + 1.5 * np.sin(angles)], 1) for c in (-7.0, 7.0)])
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outer = np.stack([-np.cos(angles) * 8, 9 - np.sin(angles) * 3], 1)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    inner = np.stack([-np.cos(angles) * 5, 9 - np.sin(angles) * 1.5], 1)
    points = np.concatenate([jaw, brows, nose, eyes, outer, inner])
    assert points.shape == (68, 2)
    return points * scale + np.asarray(center)


@pytest.fixture
def tiny_lpips() -> LPIPS:
    torch.manual_seed(0)
    net = LPIPS().eval()
    for head in net.heads:  # LPIPS heads are non-negative after training; random ones must be too
        head.weight.data.abs_()
    return net


# ------------------------------------------------------------------------------------ frame metrics


@pytest.mark.parametrize("offset", [1, 5, 40])
def test_psnr_of_a_constant_offset_is_20_log10_255_over_k(offset):
    gt = _texture(count=3)
    pred = gt + np.uint8(offset)  # gt < 200, no wrap-around
    np.testing.assert_allclose(m.psnr_per_frame(pred, gt), 20 * math.log10(255 / offset), rtol=1e-12)
    # The same frames as floats in 0..1 give the same figure.
    np.testing.assert_allclose(m.psnr_per_frame(pred / 255.0, gt / 255.0), 20 * math.log10(255 / offset), rtol=1e-9)
    assert np.isinf(m.psnr_per_frame(gt, gt)).all()


def test_psnr_rejects_mismatched_shapes_with_both_shapes():
    with pytest.raises(LandmarkTalkError, match=r"pred \(1, 48, 64, 3\) and gt \(1, 48, 32, 3\)"):
        m.psnr_per_frame(_texture(), _texture(size=(48, 32)))


def test_ssim_is_one_for_identical_frames_and_falls_with_noise():
    gt = _texture(count=2)
    np.testing.assert_allclose(m.ssim_per_frame(gt, gt), 1.0)
    rng = np.random.default_rng(1)
    scores = []
    for sigma in (3, 12, 40):
        noisy = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).astype(np.uint8)
        scores.append(m.ssim_per_frame(noisy, gt).mean())
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_matches_scikit_images_gaussian_ssim():
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity

    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (2, 37, 23, 3), dtype=np.uint8)  # odd sizes exercise the border handling
    pred = np.clip(gt + rng.normal(0, 30, gt.shape), 0, 255).astype(np.uint8)
    expected = [structural_similarity(p, g, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False) for p, g in zip(pred, gt)]
    np.testing.assert_allclose(m.ssim_per_frame(pred, gt), expected, atol=2e-6)


def test_ssim_of_flat_frames_is_the_luminance_term_with_wangs_constants():
    a, b = np.full((1, 32, 32, 3), 100, np.uint8), np.full((1, 32, 32, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)
    np.testing.assert_allclose(m.ssim_per_frame(a, b), expected, rtol=1e-5)  # float32 arithmetic


def test_pixel_mse_is_zero_for_a_static_clip_and_step_squared_for_a_ramp():
    static = np.repeat(_texture(), 5, axis=0)
    np.testing.assert_array_equal(m.temporal_pixel_mse(static), np.zeros(4))
    ramp = np.stack([np.full((16, 16, 3), 10 * t, np.uint8) for t in range(6)])
    np.testing.assert_allclose(m.temporal_pixel_mse(ramp), np.full(5, (10 / 255) ** 2), rtol=1e-12)


# --------------------------------------------------------------------------------- landmark metrics


def test_lmd_of_landmarks_shifted_by_k_pixels_is_k():
    gt = np.repeat(_face_template()[None], 4, axis=0)
    shifted = gt + np.array([3.0, 4.0])  # a 5-pixel move
    np.testing.assert_allclose(m.landmark_distance(shifted, gt), 5.0)
    np.testing.assert_allclose(m.landmark_distance(shifted, gt, points=m.MOUTH_POINTS), 5.0)
    mouth_only = gt.copy()
    mouth_only[:, m.MOUTH_POINTS] += np.array([0.0, 2.0])
    np.testing.assert_allclose(m.landmark_distance(mouth_only, gt, points=m.MOUTH_POINTS), 2.0)
    np.testing.assert_allclose(m.landmark_distance(mouth_only, gt), 2.0 * 20 / 68)
    missing = shifted.copy()
    missing[1] = np.nan
    assert np.isnan(m.landmark_distance(missing, gt)[1])


def test_audio_rms_per_frame_of_a_sine_is_amplitude_over_root_two():
    rate, fps = 16000, 25.0
    t = np.arange(rate) / rate
    samples = 0.5 * np.sin(2 * np.pi * 200 * t)  # 8 whole periods per 40 ms frame
    rms = m.audio_rms_per_frame(samples[None], rate, fps, 27)
    np.testing.assert_allclose(rms[:25], 0.5 / math.sqrt(2), rtol=1e-6)
    assert np.isnan(rms[25:]).all()  # past the end of the audio


def test_lip_audio_correlation_is_positive_when_the_mouth_follows_the_energy():
    rate, fps, frames = 16000, 25.0, 100
    rng = np.random.default_rng(0)
    envelope = np.clip(np.sin(np.linspace(0, 6 * np.pi, frames)), 0, None) + 0.05
    samples = np.concatenate([rng.normal(0, e, rate // 25) for e in envelope])
    face = np.repeat(_face_template()[None], frames, axis=0)
    opening = envelope * 4.0
    following, opposite = face.copy(), face.copy()
    following[:, 66, 1] = face[:, 62, 1] + opening
    opposite[:, 66, 1] = face[:, 62, 1] + (opening.max() - opening)
    np.testing.assert_allclose(m.lip_opening(following), np.abs(opening) / np.linalg.norm(face[0, 36] - face[0, 45]))
    assert m.lip_audio_correlation(following, samples, rate, fps) > 0.9
    assert m.lip_audio_correlation(opposite, samples, rate, fps) < -0.9
    still = face.copy()
    still[:, 66, 1] = face[:, 62, 1] + 1.0 + rng.normal(0, 0.01, frames) + envelope * 0.01  # detector jitter
    assert math.isnan(m.lip_audio_correlation(still, samples, rate, fps))


def test_frechet_distance_is_zero_for_one_set_and_the_squared_mean_shift_otherwise():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 6))
    assert abs(m.frechet_distance(features, features)) < 1e-8
    assert m.frechet_distance(features, features + 0.5) == pytest.approx(6 * 0.25, rel=1e-6)
    # Fewer samples than dimensions takes the small-matrix route; it must agree with the covariance formula.
    few_a, few_b = rng.normal(size=(5, 12)), rng.normal(size=(7, 12)) * 1.5 + 0.3
    by_covariance = m.frechet_distance_from_stats(few_a.mean(0), np.cov(few_a, rowvar=False),
                                                  few_b.mean(0), np.cov(few_b, rowvar=False))
    assert m.frechet_distance(few_a, few_b) == pytest.approx(by_covariance, rel=1e-6)


# ------------------------------------------------------------------------------------------- LPIPS


def test_lpips_network_is_zero_for_equal_images_and_positive_for_different_ones(tiny_lpips):
    frames = _texture(count=2)
    other = _texture(seed=5, count=2)
    distance, _, _, _ = lpips_scores(tiny_lpips, frames, frames)
    np.testing.assert_allclose(distance, 0.0, atol=1e-7)
    distance, _, _, _ = lpips_scores(tiny_lpips, frames, other)
    assert (distance > 1e-4).all()


def test_tlp_is_zero_for_static_clips_and_positive_when_only_one_moves(tiny_lpips):
    static = np.repeat(_texture(), 4, axis=0)
    moving = np.stack([np.roll(static[0], 5 * t, axis=1) for t in range(4)])
    _, change_pred, change_gt, _ = lpips_scores(tiny_lpips, static, static + np.uint8(3))
    tlp = np.abs(change_pred - change_gt)[1:]
    np.testing.assert_allclose(tlp, 0.0, atol=1e-7)
    _, change_pred, change_gt, _ = lpips_scores(tiny_lpips, static, moving)
    assert np.isnan(change_pred[0]) and (np.abs(change_pred - change_gt)[1:] > 1e-4).all()


def test_lpips_scores_chunk_by_chunk_equal_one_pass(tiny_lpips):
    pred = np.stack([np.roll(_texture()[0], 3 * t, axis=0) for t in range(7)])
    gt = np.stack([np.roll(_texture()[0], 2 * t, axis=1) for t in range(7)])
    whole = lpips_scores(tiny_lpips, pred, gt, batch_size=3)
    first = lpips_scores(tiny_lpips, pred[:4], gt[:4], batch_size=2)
    second = lpips_scores(tiny_lpips, pred[4:], gt[4:], previous=first[3], batch_size=2)
    for i in range(3):
        np.testing.assert_allclose(np.concatenate([first[i], second[i]]), whole[i], rtol=1e-5, equal_nan=True)


def _write_official_lpips_files(net: LPIPS, folder):
    """What torchvision and the LPIPS repository publish: ImageNet AlexNet (with classifier) and Dropout+Conv heads."""
    trunk = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("features.")}
    trunk["classifier.1.weight"] = torch.zeros(4096, 9216)
    trunk["classifier.1.bias"] = torch.zeros(4096)
    torch.save(trunk, folder / "alexnet-owt-7be5be79.pth")
    heads = {f"lin{i}.model.1.weight": head.weight.detach().clone() for i, head in enumerate(net.heads)}
    torch.save(heads, folder / "alex.pth")


def test_lpips_loads_the_official_pair_and_its_converted_checkpoint(tmp_path, tiny_lpips, monkeypatch):
    _write_official_lpips_files(tiny_lpips, tmp_path)
    a, b = _texture(count=2), _texture(seed=3, count=2)
    expected = lpips_scores(tiny_lpips, a, b)[0]
    from_pair = load_lpips(tmp_path)
    np.testing.assert_allclose(lpips_scores(from_pair, a, b)[0], expected, rtol=1e-6)

    monkeypatch.setitem(checkpoint.MODEL_KINDS, "lpips", ".evaluation.lpips:LPIPS")
    out = convert_lpips_weights(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth",
                                tmp_path / "lpips_alex.safetensors")
    assert checkpoint.read_checkpoint_metadata(out)["landmarktalk.kind"] == "lpips"
    np.testing.assert_allclose(lpips_scores(load_lpips(out), a, b)[0], expected, rtol=1e-6)
    # The folder now holds the pack file, which is preferred over the pair.
    np.testing.assert_allclose(lpips_scores(load_lpips(tmp_path), a, b)[0], expected, rtol=1e-6)


def test_lpips_rejects_a_heads_file_of_another_network(tmp_path, tiny_lpips):
    _write_official_lpips_files(tiny_lpips, tmp_path)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(LandmarkTalkError, match="lin1.model.1.weight"):
        load_lpips(tmp_path)


# --------------------------------------------------------------------------------------------- FID


def _scaled_init(net: torch.nn.Module) -> torch.nn.Module:
    """He-normal convolutions and random BatchNorm statistics, so activations neither vanish nor explode."""
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def fid_net() -> FIDInception:
    return _scaled_init(FIDInception())


def test_fid_inception_has_torchvisions_inception_v3_trunk(fid_net):
    # torchvision documents 27,161,264 parameters for Inception-v3 with its auxiliary head (3,326,696) and a
    # 1000-class fc (2,049,000); FID uses neither, so the trunk has 21,785,568.
    assert sum(p.numel() for p in fid_net.parameters()) == 27_161_264 - 3_326_696 - 2_049_000


def test_fid_weights_load_from_pytorch_fids_file_and_give_its_features(tmp_path, fid_net):
    # pytorch-fid's file: torchvision names, a 1008-class fc, no BatchNorm step counters (saved by PyTorch 0.4).
    state = {k: v for k, v in fid_net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    loaded = load_fid_inception(tmp_path)
    for key, value in fid_net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value) or key.endswith("num_batches_tracked"), key
    features = inception_features(loaded, _texture(size=(40, 40)))
    assert features.shape == (1, 2048) and features.std() > 1e-3  # activations survive the whole trunk
    torch.save({"Mixed_5b.branch1x1.conv.weight": state["Mixed_5b.branch1x1.conv.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(LandmarkTalkError, match="partial.pth: not FID's Inception-v3.*Conv2d_1a_3x3"):
        load_fid_inception(tmp_path / "partial.pth")


# ----------------------------------------------------------------------------------------- SyncNet


def test_syncnet_v2_embeds_audio_and_lip_windows_with_the_published_layer_names():
    net = sn.SyncNetV2().eval()
    keys = set(net.state_dict())
    assert {"netcnnaud.0.weight", "netcnnaud.18.weight", "netcnnlip.0.weight", "netcnnlip.18.weight",
            "netfcaud.3.weight", "netfclip.1.running_var"} <= keys
    with torch.no_grad():
        assert net.embed_audio(torch.rand(2, 1, 13, 20)).shape == (2, 1024)
        assert net.embed_lips(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_syncnet_weights_load_from_the_published_model_file(tmp_path):
    net = _scaled_init(sn.SyncNetV2())
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "syncnet_v2.model")
    loaded = sn.load_syncnet_v2(tmp_path)
    mfcc = torch.rand(3, 1, 13, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_audio(mfcc), net.embed_audio(mfcc))


def test_syncnet_mfcc_matches_python_speech_features():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    pcm = (rng.normal(0, 3000, 16000) * np.sin(np.linspace(0, 20, 16000)) ** 2).astype(np.int16)
    np.testing.assert_allclose(sn._syncnet_mfcc(pcm.astype(np.float64)), psf.mfcc(pcm, 16000), rtol=1e-9, atol=1e-9)


def test_syncnet_crop_box_spans_the_face_and_the_mouth_below_in_bgr():
    ys, xs = np.mgrid[0:256, 0:256]
    frame = np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)  # R = x, G = y, B = 7
    crop = sn.cut_syncnet_crops(frame[None], np.array([[128.0, 100.0, 40.0]]))[0]
    # x from 128 - 1.4·40 to 128 + 1.4·40, y from 100 - 40 to 100 + 1.8·40; stored BGR like cv2.imread.
    assert crop[0, 0, 0] == 7 and abs(int(crop[0, 0, 2]) - 72) <= 1 and abs(int(crop[0, 0, 1]) - 60) <= 1
    assert abs(int(crop[-1, -1, 2]) - 183) <= 1 and abs(int(crop[-1, -1, 1]) - 171) <= 1


def test_syncnet_crop_boxes_fill_frames_without_a_face():
    face = _face_template(center=(100.0, 80.0))
    points = np.repeat(face[None], 20, axis=0)
    points[5:8] = np.nan
    boxes = sn.syncnet_crop_boxes(points)
    lo, hi = face.min(axis=0), face.max(axis=0)
    # Inside the sequence the median filter leaves a constant box unchanged (it zero-pads at the ends).
    np.testing.assert_allclose(boxes[6:14], [[(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (hi - lo).max() / 2]] * 8)


class _OracleSyncNet(sn.SyncNetV2):
    """Embeds a lip window as its 5 frame brightnesses and an audio window as its 5 mean log energies (z-scored)."""

    @staticmethod
    def _standardise(x):
        return (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-6)

    def embed_lips(self, frames):
        return self._standardise(frames.mean(dim=(1, 3, 4)))

    def embed_audio(self, mfcc):
        return self._standardise(mfcc[:, 0, 0].reshape(len(mfcc), 5, 4).mean(dim=2))


def test_lip_sync_scores_find_the_offset_and_score_a_synced_pair_better():
    rng = np.random.default_rng(0)
    frames = 60
    brightness = rng.uniform(40, 220, frames)
    crops = np.repeat(brightness[:, None, None, None], 224 * 224 * 3, axis=1).reshape(frames, 224, 224, 3)
    crops = crops.astype(np.uint8)

    def speech(lag):
        level = np.exp(np.roll(brightness, lag) / 60.0) / 2000.0  # log energy linear in brightness
        return np.concatenate([rng.normal(0, a, 640) for a in level])

    net = _OracleSyncNet().eval()
    in_sync = speech(0)
    synced = sn.lip_sync_scores(net, crops, in_sync)
    late = sn.lip_sync_scores(net, [crops[:17], crops[17:40], crops[40:]], speech(3))  # audio 3 frames late
    assert synced["av_offset"] == 0 and late["av_offset"] == -3
    assert synced["lse_c"] > 1.0 and synced["lse_d"] < 0.5 * (synced["lse_d"] + synced["lse_c"])
    chunked = sn.lip_sync_scores(net, [crops[:9], crops[9:]], in_sync)
    assert chunked == pytest.approx(synced)


# ------------------------------------------------------------------------------------------ videos


@pytest.fixture
def synthetic_pair(tmp_path):
    """gt: 10 frames at 25 fps (lossless); pred: the same frames at 50 fps with a garbage frame between each."""
    base = _texture(size=(48, 64))[0]
    frames = np.stack([np.roll(base, 3 * t, axis=1) for t in range(10)])
    gt = write_video(tmp_path / "gt.mp4", frames, fps=25, crf=0)
    interleaved = np.empty((20, 48, 64, 3), np.uint8)
    interleaved[0::2] = frames
    interleaved[1::2] = 255 - frames
    pred = write_video(tmp_path / "pred.mp4", interleaved, fps=50, crf=0)
    return pred, gt, frames


def test_videos_of_different_rates_are_compared_at_the_same_timestamps(synthetic_pair, caplog):
    pred, gt, _ = synthetic_pair
    with caplog.at_level(logging.INFO):
        result = evaluate_videos(pred, gt, landmark_fn=None)
    assert result["frames"] == 10 and result["fps"] == 25.0
    assert result["metrics"]["psnr"] == 100.0 and result["metrics"]["ssim"] == pytest.approx(1.0)
    assert result["metrics"]["pixel_mse"] == pytest.approx(result["metrics"]["pixel_mse_gt"])
    assert result["metrics"]["pixel_mse"] > 0
    # No LPIPS weights: skipped, and the message names the files and the folder to put them in.
    reason = result["skipped"]["lpips"]
    assert "lpips_alex.safetensors" in reason and "alexnet-owt-7be5be79.pth" in reason
    assert any("LPIPS and tLP" in r.getMessage() and "models/landmarktalk" in r.getMessage() for r in caplog.records)
    assert "lpips" not in result["metrics"] and "tlp" not in result["metrics"]


def test_missing_lpips_weights_in_a_folder_are_skipped_with_the_folder_named(synthetic_pair, tmp_path, caplog):
    pred, gt, _ = synthetic_pair
    empty = tmp_path / "models"
    empty.mkdir()
    with caplog.at_level(logging.INFO):
        result = evaluate_videos(pred, gt, landmark_fn=None, lpips_weights=empty, max_frames=3)
    assert str(empty) in result["skipped"]["lpips"] and "alex.pth" in result["skipped"]["lpips"]
    assert any(str(empty) in r.getMessage() for r in caplog.records)


def test_a_worse_prediction_scores_worse_on_every_frame_metric(tmp_path, synthetic_pair, tiny_lpips):
    pred, gt, frames = synthetic_pair
    rng = np.random.default_rng(2)
    noisy = np.clip(frames + rng.normal(0, 25, frames.shape), 0, 255).astype(np.uint8)
    bad = write_video(tmp_path / "bad.mp4", noisy, fps=25, crf=0)
    good = evaluate_videos(pred, gt, landmark_fn=None, lpips_weights=tiny_lpips)["metrics"]
    worse = evaluate_videos(bad, gt, landmark_fn=None, lpips_weights=tiny_lpips)["metrics"]
    assert good["lpips"] == pytest.approx(0.0, abs=1e-6) and good["tlp"] == pytest.approx(0.0, abs=1e-6)
    assert worse["psnr"] < 25 < good["psnr"] and worse["ssim"] < good["ssim"]
    assert worse["lpips"] > good["lpips"] and worse["tlp"] > good["tlp"]
    assert worse["pixel_mse"] > worse["pixel_mse_gt"]  # noise flickers


def test_fid_of_a_video_against_itself_is_zero(synthetic_pair, fid_net):
    pred, gt, _ = synthetic_pair
    result = evaluate_videos(pred, gt, landmark_fn=None, fid_weights=fid_net, max_frames=2)
    assert "fid" not in result["skipped"] and abs(result["metrics"]["fid"]) < 1e-3


def test_face_metrics_use_the_crop_cut_by_the_ground_truths_landmarks(tmp_path):
    """A change outside the face leaves the face-crop figures perfect; landmarks per frame come from landmark_fn."""
    size = (96, 128)
    gt_frames = np.repeat(_texture(size=size), 4, axis=0)
    gt_frames = np.stack([np.roll(f, t, axis=0) for t, f in enumerate(gt_frames)])
    template = _face_template(center=(64.0, 48.0), scale=0.8)
    pred_frames = gt_frames.copy()
    pred_frames[:, :, :12] = 0  # far left band, outside the face crop
    gt = write_video(tmp_path / "gt.mp4", gt_frames, fps=25, crf=0)
    pred = write_video(tmp_path / "pred.mp4", pred_frames, fps=25, crf=0)

    def landmark_fn(chunks, fps):
        # "Detects" the template, moved 2 px right in frames whose left band is black (the prediction).
        frames = np.concatenate(list(chunks))
        dark = frames[:, :, :12].reshape(len(frames), -1).max(axis=1) == 0
        return np.stack([template + (2.0 if d else 0.0) * np.array([1.0, 0.0]) for d in dark])

    result = evaluate_videos(pred, gt, landmark_fn=landmark_fn, crop_size=64)
    metrics = result["metrics"]
    assert metrics["psnr"] < 30 and metrics["face_psnr"] == 100.0 and metrics["face_ssim"] == pytest.approx(1.0)
    # LMD is measured in the pack's aligned-crop pixels: 2 frame pixels times that crop's scale.
    linear = estimate_transforms(template, 64)[:2, :2]
    assert metrics["m_lmd"] == pytest.approx(2.0 * math.sqrt(abs(np.linalg.det(linear))), rel=1e-4)
    assert metrics["f_lmd"] == pytest.approx(metrics["m_lmd"], rel=1e-5)
    assert metrics["pred_face_found"] == 1.0
    assert "lip_audio" in result["skipped"]  # the synthetic videos have no sound


def test_a_prediction_without_a_face_gets_empty_landmark_figures_not_an_error(tmp_path):
    gt_frames = np.repeat(_texture(size=(96, 128)), 3, axis=0)
    pred_frames = gt_frames.copy()
    pred_frames[:, :, :12] = 0
    gt = write_video(tmp_path / "gt.mp4", gt_frames, fps=25, crf=0)
    pred = write_video(tmp_path / "pred.mp4", pred_frames, fps=25, crf=0)

    def landmark_fn(chunks, fps):
        frames = np.concatenate(list(chunks))
        if frames[:, :, :12].max() == 0:
            raise LandmarkTalkError("pred: no face found in any of 3 frames")
        return np.repeat(_face_template(center=(64.0, 48.0), scale=0.8)[None], len(frames), axis=0)

    metrics = evaluate_videos(pred, gt, landmark_fn=landmark_fn, crop_size=64)["metrics"]
    assert metrics["pred_face_found"] == 0.0 and metrics["m_lmd"] is None and metrics["f_lmd"] is None
    assert metrics["face_psnr"] == 100.0  # the crop still comes from the ground truth's face
    with pytest.raises(LandmarkTalkError, match="no face found"):
        evaluate_videos(gt, pred, landmark_fn=landmark_fn, crop_size=64)  # no face in the ground truth: an error


def test_cli_writes_json_and_report_and_compares_runs(tmp_path, synthetic_pair, monkeypatch, capsys):
    monkeypatch.setitem(cli._COMMANDS, "evaluate", ".evaluate_cli:add_evaluate_command")
    pred, gt, frames = synthetic_pair
    rng = np.random.default_rng(4)
    bad = write_video(tmp_path / "bad.mp4", np.clip(frames + rng.normal(0, 20, frames.shape), 0, 255).astype(np.uint8),
                      fps=25, crf=0)
    report = tmp_path / "report"
    assert cli.main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--json", str(tmp_path / "a.json"),
                     "--report", str(report), "--no-landmarks", "--models", str(tmp_path)]) == 0
    assert cli.main(["evaluate", "--pred", str(bad), "--gt", str(gt), "--json", str(tmp_path / "b.json"),
                     "--no-landmarks", "--label", "noisy"]) == 0
    summary = json.loads((tmp_path / "a.json").read_text())
    assert summary["metrics"]["psnr"] == 100.0 and "per_frame" not in summary

    page = (report / "index.html").read_text()
    images = re.findall(r'src="([^"]+)"', page)
    assert "per_frame.png" in images and len([i for i in images if i.startswith("strip_")]) == 4
    for image in images:
        assert (report / image).stat().st_size > 1000
    assert (report / "per_frame.csv").read_text().count("\n") == 11  # header + 10 frames

    capsys.readouterr()
    assert cli.main(["evaluate", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "pred" in header and "noisy" in header
    psnr_row = next(line for line in table.splitlines() if line.startswith("psnr "))
    assert "100.00 *" in psnr_row  # the better run is marked
    for name in ("psnr", "ssim", "pixel_mse", "pixel_mse_gt"):
        assert any(line.startswith(name + " ") for line in table.splitlines())


def test_compare_names_a_file_that_is_not_an_evaluation(tmp_path):
    bogus = tmp_path / "x.json"
    bogus.write_text("{\"a\": 1}")
    with pytest.raises(LandmarkTalkError, match="x.json"):
        format_comparison([bogus])


# ------------------------------------------------------------------ real clip, pipelines.face tracker


def test_a_real_clip_against_itself_and_a_shifted_blurred_copy(shared_data, tmp_path):
    import cv2

    clip = shared_data / "clips" / "RD_Radio34_000.mp4"
    same = evaluate_videos(clip, clip, max_frames=10, report_dir=tmp_path / "same",
                           syncnet_weights=_scaled_init(sn.SyncNetV2()))
    metrics = same["metrics"]
    assert metrics["lse_c"] == pytest.approx(metrics["lse_c_gt"])
    assert metrics["lse_d"] == pytest.approx(metrics["lse_d_gt"])
    assert metrics["lse_d"] > 0 and "lse" not in same["skipped"]
    assert metrics["psnr"] == 100.0 and metrics["face_psnr"] == 100.0
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["face_ssim"] == pytest.approx(1.0)
    assert metrics["m_lmd"] == 0.0 and metrics["f_lmd"] == 0.0 and metrics["pred_face_found"] == 1.0
    assert metrics["lip_audio_corr"] == pytest.approx(metrics["lip_audio_corr_gt"])

    frames, fps = read_video(clip, max_frames=10)
    moved = np.stack([cv2.GaussianBlur(np.roll(f, (6, 8), axis=(0, 1)), (0, 0), 2.0) for f in frames])
    altered = write_video(tmp_path / "altered.mp4", moved, fps=fps)
    worse = evaluate_videos(altered, clip)["metrics"]  # landmarks from pipelines.face.track_face
    assert worse["psnr"] < 30 and worse["face_psnr"] < 30
    assert worse["ssim"] < 0.9 and worse["face_ssim"] < 0.9
    assert worse["f_lmd"] > 3.0 and worse["m_lmd"] > 3.0  # a 10 px move is several crop pixels
