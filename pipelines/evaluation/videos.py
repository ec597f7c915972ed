"""Score a generated video against its ground truth, on the full frame and on the aligned face crop.

Both videos are read at the ground truth's frame rate, so frame ``i`` of each shows time ``i / fps``
and videos of different rates or lengths are compared over their overlapping duration. The face crop
comes from the ground truth's landmarks and the same crop is cut from both videos, so a prediction
whose face drifts is penalised instead of being re-centred. Everything streams in chunks; only the
per-frame figures, running feature statistics and a few sample frames for the report are kept.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from ..errors import LandmarkTalkError
from ..types import FaceTrack, frame_count_for
from . import fid as _fid
from . import lpips as _lpips
from . import metrics as m
from . import syncnet as _syncnet

__all__ = ["evaluate_videos", "LandmarkFn"]

logger = logging.getLogger(__name__)

# (chunks of frames uint8 [t,H,W,3] covering the whole video, fps) → landmarks [T,68,2] in frame pixels
# (NaN rows where no face), or a FaceTrack. Called once per video, before the scoring pass.
LandmarkFn = Callable[[Iterable[np.ndarray], float], "np.ndarray | FaceTrack"]

PSNR_CAP_DB = 100.0  # identical frames have infinite PSNR; capped so averages and JSON stay finite
_SERIES_ONLY = ("lip_opening", "lip_opening_gt", "audio_rms")  # plotted, not averaged into the summary
_VIEWS = {"full": "", "face": "face_"}


def _default_landmark_fn(crop_size: int) -> LandmarkFn | None:
    try:
        from ..face import track_face
    except ImportError:
        logger.debug("pipelines.face.track_face unavailable", exc_info=True)
        return None
    return lambda chunks, fps: track_face(chunks, fps, crop_size=crop_size)


# ------------------------------------------------------------------------------------ face crops


def _fill_missing(transforms: np.ndarray) -> np.ndarray:
    """Frames without a face take the nearest earlier frame's transform (the first one found, at the start)."""
    valid = np.isfinite(transforms).all(axis=(1, 2))
    index = np.where(valid, np.arange(len(valid)), -1)
    earlier = np.maximum.accumulate(index)
    first = int(np.argmax(valid))
    return transforms[np.where(earlier >= 0, earlier, first)]


def _transform_points(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    return np.einsum("tij,tpj->tpi", transforms[:, :, :2], points) + transforms[:, None, :, 2]


def _warp(frames: np.ndarray, transforms: np.ndarray, crop_size: int) -> np.ndarray:
    return np.stack([
        cv2.warpAffine(frame, matrix.astype(np.float64), (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT)
        for frame, matrix in zip(frames, transforms)
    ])


def _resized(chunks, size: tuple[int, int]):
    """Chunks scaled to ``size`` (height, width) when they differ from it."""
    height, width = size
    for chunk in chunks:
        if chunk.shape[1:3] != (height, width):
            shrink = chunk.shape[1] > height
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
            chunk = np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in chunk])
        yield chunk


def _track_video(landmark_fn: LandmarkFn, path, fps: float, count: int, size, crop_size: int, chunk_frames: int,
                 required: bool):
    """Landmarks [count,68,2] (frame pixels of ``size``), crop transforms [count,2,3] and a found mask [count].

    Rows are NaN where the video has no face (a short result is padded so). Without ``required``, a
    video in which no face is found at all gives all-NaN rows instead of an error.
    """
    from ..face.align import estimate_transforms
    from ..media import read_video_frames

    stream = read_video_frames(path, fps=fps, chunk_frames=chunk_frames, max_frames=count)
    try:
        with contextlib.closing(stream):
            result = landmark_fn(_resized(stream, size), fps)
    except LandmarkTalkError:
        if required:
            raise
        logger.warning("%s: no face found; its landmark figures are empty", path, exc_info=True)
        result = np.full((count, 68, 2), np.nan)
    transforms, found = None, None
    if isinstance(result, FaceTrack):
        points = np.asarray(result.landmarks, np.float64)
        if result.crop_size and np.shape(result.transforms) == (len(points), 2, 3):
            transforms = np.asarray(result.transforms, np.float64) * (crop_size / float(result.crop_size))
        if np.shape(result.filled) == (len(points),):
            found = ~np.asarray(result.filled, bool)  # interpolated over a gap: tracked, but not found
    else:
        points = np.asarray(result, np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise LandmarkTalkError(f"landmark_fn: returned landmarks of shape {points.shape} for {path}; it must return "
                                "[T,68,2] frame pixels (NaN rows where no face) or a FaceTrack")
    if transforms is None:
        transforms = estimate_transforms(points, crop_size).astype(np.float64)
    if found is None:
        found = np.isfinite(points).all(axis=(1, 2))
    kept = min(count, len(points))
    padded = (np.full((count, 68, 2), np.nan), np.full((count, 2, 3), np.nan), np.zeros(count, bool))
    for target, source in zip(padded, (points, transforms, found)):
        target[:kept] = source[:kept]
    return padded


# -------------------------------------------------------------------------------------- weights


def _resolve_model(weights, model_type, find, load, expected: str, device):
    """(model, None) or (None, why it is skipped). A named file must exist; a folder only says where to look."""
    if isinstance(weights, model_type):
        return weights, None
    if weights is None:
        return None, f"no weights given; put {expected} in models/landmarktalk/ and pass that folder"
    if isinstance(weights, tuple):
        return load(weights, device=device), None
    path = Path(weights)
    if path.is_file():
        return load(path, device=device), None
    if path.suffix in (".safetensors", ".pth", ".model"):
        raise FileNotFoundError(f"{path}: no such weights file; give {expected}")
    if not path.is_dir():
        return None, f"no weights in {path} (the folder does not exist); put {expected} there"
    if find(path) is None:
        return None, f"no weights in {path}; put {expected} there"
    return load(path, device=device), None


# -------------------------------------------------------------------------------------- scoring


class _GaussianStats:
    """Feature vectors for FID: kept while fewer than their dimension (exact and fast), then running sums."""

    def __init__(self):
        self.count, self.rows, self.total, self.outer = 0, [], None, None

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        self.count += len(features)
        if self.rows is not None:
            self.rows.append(features)
            if self.count <= features.shape[1]:
                return
            features, self.rows = np.concatenate(self.rows), None
        if self.total is None:
            self.total, self.outer = np.zeros(features.shape[1]), np.zeros((features.shape[1],) * 2)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def distance(self, other: _GaussianStats) -> float:
        if self.rows is not None and other.rows is not None:
            return m.frechet_distance(np.concatenate(self.rows), np.concatenate(other.rows))
        return m.frechet_distance_from_stats(*self._mean_cov(), *other._mean_cov())

    def _mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rows is not None:
            rows = np.concatenate(self.rows)
            return rows.mean(axis=0), np.cov(rows, rowvar=False)
        mean = self.total / self.count
        return mean, (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)


class _ViewScorer:
    """Per-frame figures for one view (full frame or face crop), carrying state across chunks."""

    def __init__(self, prefix: str, lpips_net, fid_net):
        self.prefix, self.lpips_net, self.fid_net = prefix, lpips_net, fid_net
        self.series: dict[str, list[np.ndarray]] = {}
        self.previous = None  # last (pred, gt) frame of the preceding chunk
        self.previous_taps = None
        self.fid_stats = (_GaussianStats(), _GaussianStats()) if fid_net is not None else None

    def _add(self, name: str, values) -> None:
        self.series.setdefault(self.prefix + name, []).append(np.asarray(values, np.float64))

    def score(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._add("psnr", np.minimum(m.psnr_per_frame(pred, gt), PSNR_CAP_DB))
        self._add("ssim", m.ssim_per_frame(pred, gt))
        head = [np.nan] if self.previous is None else []
        with_pred = pred if self.previous is None else np.concatenate([self.previous[0], pred])
        with_gt = gt if self.previous is None else np.concatenate([self.previous[1], gt])
        self._add("pixel_mse", np.concatenate([head, m.temporal_pixel_mse(with_pred)]))
        self._add("pixel_mse_gt", np.concatenate([head, m.temporal_pixel_mse(with_gt)]))
        self.previous = (pred[-1:], gt[-1:])
        if self.lpips_net is not None:
            distance, change_pred, change_gt, self.previous_taps = _lpips.lpips_scores(
                self.lpips_net, pred, gt, previous=self.previous_taps)
            self._add("lpips", distance)
            self._add("tlp", np.abs(change_pred - change_gt))  # TecoGAN's tLP, per frame pair
        if self.fid_stats is not None:
            self.fid_stats[0].add(_fid.inception_features(self.fid_net, pred))
            self.fid_stats[1].add(_fid.inception_features(self.fid_net, gt))

    def results(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        per_frame = {k: np.concatenate(v) for k, v in self.series.items()}
        summary = {}
        if self.fid_stats is not None and self.fid_stats[0].count >= 2:
            summary[self.prefix + "fid"] = self.fid_stats[0].distance(self.fid_stats[1])
        return per_frame, summary


def _mean(values: np.ndarray) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _pair_chunks(pred_chunks, gt_chunks, size: tuple[int, int]):
    """Equal-length (pred, gt) chunks; pred resized to the ground truth's size; stops at the shorter video."""
    for pred, gt in zip(_resized(pred_chunks, size), gt_chunks):
        count = min(len(pred), len(gt))
        yield pred[:count], gt[:count]
        if count < max(len(pred), len(gt)):
            return


# ----------------------------------------------------------------------------------------- main


def evaluate_videos(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    *,
    report_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    crop_size: int = 256,
    max_frames: int | None = None,
    lpips_weights=None,
    fid_weights=None,
    syncnet_weights=None,
    landmark_fn: LandmarkFn | None | str = "auto",
    audio: str | os.PathLike | None = None,
    chunk_frames: int = 32,
    strip_frames: int = 4,
    label: str | None = None,
    device: str = "cpu",
) -> dict:
    """Score video ``pred`` against ``gt``; returns ``{"metrics": {...}, "skipped": {...}, "per_frame": {...}, ...}``.

    ``lpips_weights`` / ``fid_weights`` / ``syncnet_weights``: a folder (the metric is skipped with a
    message naming the expected files when it holds none), a weights file, or a loaded network.
    ``landmark_fn``: ``"auto"`` uses ``pipelines.face`` when available; ``None`` skips the face crop,
    landmark and lip-sync metrics. ``audio``: the speech the lips should follow (default: pred's audio
    track, else gt's). ``json_path`` / ``report_dir`` also write the summary JSON / an HTML page.
    ``device`` runs the networks (e.g. ``"cuda"``).
    """
    from ..media import probe_media, read_video_frames

    if crop_size < 16:
        raise LandmarkTalkError(f"crop_size={crop_size}: give 16 pixels or more (256 is usual)")
    gt_info, pred_info = probe_media(gt), probe_media(pred)
    for name, info in (("gt", gt_info), ("pred", pred_info)):
        if not info.has_video:
            raise LandmarkTalkError(f"{info.path}: {name} has no video stream; give a video file")
    fps = float(gt_info.fps)
    count = min(gt_info.frame_count or 0, frame_count_for(pred_info.video_duration_s or pred_info.duration_s, fps))
    if max_frames is not None:
        count = min(count, int(max_frames))
    if count < 2:
        raise LandmarkTalkError(f"{pred} vs {gt}: they overlap for {count} frame(s) at {fps:g} fps; need 2 or more")
    if pred_info.fps and abs(pred_info.fps - fps) > 1e-3:
        logger.info("pred is %.3f fps, gt %.3f fps: reading both at %.3f fps", pred_info.fps, fps, fps)
    if (pred_info.height, pred_info.width) != (gt_info.height, gt_info.width):
        logger.info("pred is %dx%d, gt %dx%d: pred is resized to the ground truth's size",
                    pred_info.width, pred_info.height, gt_info.width, gt_info.height)

    skipped: dict[str, str] = {}
    lpips_net, reason = _resolve_model(lpips_weights, _lpips.LPIPS, _lpips.find_lpips_weights, _lpips.load_lpips,
                                       _lpips.EXPECTED_FILES, device)
    if reason:
        skipped["lpips"] = f"LPIPS and tLP: {reason}"
    fid_net, reason = _resolve_model(fid_weights, _fid.FIDInception, _fid.find_fid_weights, _fid.load_fid_inception,
                                     _fid.EXPECTED_FILES, device)
    if reason:
        skipped["fid"] = f"FID: {reason}"
    sync_net, reason = _resolve_model(syncnet_weights, _syncnet.SyncNetV2, _syncnet.find_syncnet_weights,
                                      _syncnet.load_syncnet_v2, _syncnet.EXPECTED_FILES, device)
    if reason:
        skipped["lse"] = f"LSE-C/LSE-D: {reason}"
    if landmark_fn == "auto":
        landmark_fn = _default_landmark_fn(crop_size)
        if landmark_fn is None:
            skipped["landmarks"] = ("no face tracker available (pipelines.face); "
                                    "face-crop, landmark and lip metrics skipped")
    elif landmark_fn is None:
        skipped["landmarks"] = "landmark_fn=None; face-crop, landmark and lip metrics skipped"
    for reason in skipped.values():
        logger.info("skipped %s", reason)

    size = (gt_info.height, gt_info.width)
    tracks = None
    if landmark_fn is not None:
        tracks = {side: _track_video(landmark_fn, path, fps, count, size, crop_size, chunk_frames, side == "gt")
                  for side, path in (("gt", gt), ("pred", pred))}
        if not np.isfinite(tracks["gt"][1]).all(axis=(1, 2)).any():
            raise LandmarkTalkError(f"{gt}: no face found in the ground truth; give a clip that shows a face, "
                                    "or evaluate without landmarks")
        crop_transforms = _fill_missing(tracks["gt"][1])

    strip_at = set(np.unique(np.linspace(0, count - 1, max(strip_frames, 0)).round().astype(int)).tolist())
    strips: list[dict] = []
    scorers = {view: _ViewScorer(prefix, lpips_net, fid_net) for view, prefix in _VIEWS.items()}
    crop_points = {"pred": [], "gt": []}  # landmarks in gt's crop pixels
    done = 0
    pred_stream = read_video_frames(pred, fps=fps, chunk_frames=chunk_frames, max_frames=count)
    gt_stream = read_video_frames(gt, fps=fps, chunk_frames=chunk_frames, max_frames=count)
    with contextlib.closing(pred_stream), contextlib.closing(gt_stream):
        for pred_chunk, gt_chunk in _pair_chunks(pred_stream, gt_stream, size):
            views = {"full": (pred_chunk, gt_chunk)}
            if tracks is not None:
                span = slice(done, done + len(gt_chunk))
                transforms = crop_transforms[span]
                for side in ("pred", "gt"):
                    crop_points[side].append(_transform_points(tracks[side][0][span], transforms))
                views["face"] = (_warp(pred_chunk, transforms, crop_size), _warp(gt_chunk, transforms, crop_size))
            for view, (p, g) in views.items():
                scorers[view].score(p, g)
            for i in range(len(gt_chunk)):
                if done + i in strip_at:
                    strip = {"index": done + i, "gt": gt_chunk[i].copy(), "pred": pred_chunk[i].copy()}
                    if "face" in views:
                        strip["gt_face"], strip["pred_face"] = views["face"][1][i].copy(), views["face"][0][i].copy()
                    strips.append(strip)
            done += len(gt_chunk)
    if done < 2:
        raise LandmarkTalkError(f"{pred} vs {gt}: only {done} frame(s) could be read from both; need 2 or more")
    if done < count:
        logger.info("compared %d frames (expected %d from the files' durations)", done, count)

    per_frame, summary = {}, {}
    for scorer in scorers.values():
        series, figures = scorer.results()
        per_frame.update(series)
        summary.update(figures)
    if fid_net is not None and done < 2048:
        logger.info("FID from %d frames: fewer than its 2048 feature dimensions, so biased upwards; "
                    "compare only runs of equal length", done)
    extra: dict[str, float] = {}
    if tracks is not None:
        points = {side: tracks[side][0][:done] for side in tracks}
        in_crop = {side: np.concatenate(crop_points[side]) for side in crop_points}
        per_frame["m_lmd"] = m.landmark_distance(in_crop["pred"], in_crop["gt"], points=m.MOUTH_POINTS)
        per_frame["f_lmd"] = m.landmark_distance(in_crop["pred"], in_crop["gt"])
        per_frame["pred_face_found"] = tracks["pred"][2][:done].astype(np.float64)
        per_frame["lip_opening"] = m.lip_opening(points["pred"])
        per_frame["lip_opening_gt"] = m.lip_opening(points["gt"])
        speech = _speech_for_lips(pred_info, gt_info, audio, skipped)
        if speech is not None:
            (samples, rate), (gt_samples, gt_rate) = speech
            per_frame["audio_rms"] = m.audio_rms_per_frame(samples, rate, fps, done)
            extra["lip_audio_corr"] = m.lip_audio_correlation(points["pred"], samples, rate, fps)
            extra["lip_audio_corr_gt"] = m.lip_audio_correlation(points["gt"], gt_samples, gt_rate, fps)
            if sync_net is not None:
                extra.update(_lip_sync_figures(sync_net, pred, gt, points, fps, done, speech, size, chunk_frames))
    elif sync_net is not None:
        skipped["lse"] = "LSE-C/LSE-D: need face landmarks to cut the mouth crops (no landmark_fn)"

    summary.update({name: _mean(values) for name, values in per_frame.items() if name not in _SERIES_ONLY})
    summary.update({k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in extra.items()})
    result = {
        "label": label or Path(pred).stem,
        "pred": str(pred), "gt": str(gt), "fps": fps, "frames": done,
        "frame_size": [gt_info.height, gt_info.width], "crop_size": crop_size,
        "metrics": summary, "skipped": skipped, "per_frame": per_frame,
    }
    if json_path is not None:
        _write_json(result, Path(json_path))
    if report_dir is not None:
        from .report import write_html_report

        write_html_report(result, report_dir, strips=strips)
    return result


def _speech_for_lips(pred_info, gt_info, audio, skipped):
    """((samples, rate) the prediction should follow, (samples, rate) of gt's own track), or None."""
    from ..media import read_audio

    source = audio if audio is not None else (pred_info.path if pred_info.has_audio else
                                             gt_info.path if gt_info.has_audio else None)
    if source is None:
        skipped["lip_audio"] = "lip-audio correlation and LSE: neither video has an audio track and no audio was given"
        logger.info("skipped %s", skipped["lip_audio"])
        return None
    speech = read_audio(source, mono=True)
    gt_speech = read_audio(gt_info.path, mono=True) if gt_info.has_audio else speech
    return (speech.samples[0], speech.sample_rate), (gt_speech.samples[0], gt_speech.sample_rate)


def _lip_sync_figures(net, pred, gt, points, fps, count, speech, size, chunk_frames) -> dict[str, float]:
    """LSE-C/D of pred against the speech it should follow, and of gt against its own track, at 25 fps."""
    import librosa

    from ..media import read_video_frames

    figures = {}
    frames_25 = frame_count_for(count / fps, _syncnet.SYNCNET_FPS)
    for side, path, (samples, rate), suffix in (("pred", pred, speech[0], ""), ("gt", gt, speech[1], "_gt")):
        if not np.isfinite(points[side]).all(axis=(1, 2)).any():
            logger.warning("%s: no face found, so no LSE-C/LSE-D for it", path)
            continue
        boxes = _syncnet.syncnet_crop_boxes(points[side])
        # Boxes were found at the evaluation rate; SyncNet reads 25 fps, so take the nearest frame's box.
        nearest = np.minimum(np.round(np.arange(frames_25) * fps / _syncnet.SYNCNET_FPS).astype(int), count - 1)
        boxes = boxes[nearest]
        stream = read_video_frames(path, fps=_syncnet.SYNCNET_FPS, chunk_frames=chunk_frames, max_frames=frames_25)
        with contextlib.closing(stream):
            crops = (_syncnet.cut_syncnet_crops(chunk, boxes[start:start + len(chunk)])
                     for start, chunk in _with_offsets(_resized(stream, size)))
            if rate != _syncnet.SYNCNET_SAMPLE_RATE:
                samples = librosa.resample(samples, orig_sr=rate, target_sr=_syncnet.SYNCNET_SAMPLE_RATE,
                                           res_type="soxr_hq")
            duration = round(frames_25 / _syncnet.SYNCNET_FPS * _syncnet.SYNCNET_SAMPLE_RATE)
            scores = _syncnet.lip_sync_scores(net, crops, samples[:duration])
        figures[f"lse_c{suffix}"], figures[f"lse_d{suffix}"] = scores["lse_c"], scores["lse_d"]
        figures[f"av_offset{suffix}"] = scores["av_offset"]
    return figures


def _with_offsets(chunks):
    start = 0
    for chunk in chunks:
        yield start, chunk
        start += len(chunk)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(result: dict, path: Path) -> None:
    """The summary (no per-frame series) as JSON; NaN becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "per_frame"}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    logger.info("wrote %s", path)
