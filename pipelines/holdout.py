"""Self-evaluation of a fit: render the held-out tail of the clip from its own audio and score it.

Beside our render, two baselines run in the same call: ``still`` (the tail's first face crop pasted back
on every frame: no lip motion at all) and ``gt_landmarks`` (L2V driven by the tail's tracked landmarks, which
isolates A2L's error). Each is written as an mp4 and scored against the truth by
:func:`pipelines.evaluation.evaluate_videos` (full frame and aligned face crop); a side-by-side video
(truth | ours | still | gt_landmarks) and ``holdout.json`` with every figure are written beside them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import LandmarkTalkError
from .render import SEED_SEARCH_PROBE_FRAMES
from .types import Audio, FaceTrack

__all__ = ["HoldoutTail", "evaluate_holdout", "load_holdout_tail"]

logger = logging.getLogger(__name__)

_RUNS = ("ours", "still", "gt_landmarks")
# Landmark distances are reported in pixels of 256² face crops whatever the model's size (the seeds' unit).
EVAL_CROP_SIZE = 256


def _tail_audio(audio: Audio, start_frame: int, end_frame: int, fps: float) -> Audio:
    start = int(round(start_frame / fps * audio.sample_rate))
    end = int(round(end_frame / fps * audio.sample_rate))
    if end > audio.samples.shape[-1]:
        pad = np.zeros((audio.samples.shape[0], end - audio.samples.shape[-1]), np.float32)
        samples = np.concatenate([audio.samples, pad], axis=-1)
    else:
        samples = audio.samples
    return Audio(samples=np.ascontiguousarray(samples[:, start:end]), sample_rate=audio.sample_rate)


def _side_by_side(videos: list[np.ndarray], height: int) -> np.ndarray:
    import cv2

    tiles = []
    for frames in videos:
        h, w = frames.shape[1:3]
        width = int(round(w * height / h)) // 2 * 2
        tiles.append(np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]))
    return np.concatenate(tiles, axis=2)


def _check_refiner_holdout(refiner: Path, record: dict) -> None:
    """A refiner fitted on the held-out tail would score frames it has memorised: refuse it."""
    from .fit import read_fit_record

    own = read_fit_record(refiner.parent)
    if own is None:
        logger.warning("--refiner %s: no fit.json beside it; make sure it was not trained on the held-out tail", refiner)
        return
    same_clip = Path(own.get("clip", "")).resolve() == Path(record["clip"]).resolve()
    if same_clip and float(own.get("holdout") or 0.0) < float(record["holdout"]):
        raise LandmarkTalkError(
            f"--refiner {refiner}: fitted with --holdout {own.get('holdout') or 0}, so it has seen part of the "
            f"{record['holdout']} tail being scored; fit it with `fit {record['clip']} --path ladtalk "
            f"--holdout {record['holdout']}`"
        )


@dataclass
class HoldoutTail:
    """The held-out tail of a fitted clip: its frames, face track and 16 kHz mono speech."""

    clip: Path
    fps: float
    cut: int  # index of the tail's first frame in the clip
    frames: np.ndarray
    track: FaceTrack
    speech: Audio


def load_holdout_tail(record: dict, crop_size: int, *, cache_dir: str | os.PathLike | None = None) -> HoldoutTail:
    """The tail a ``fit --holdout`` (its fit.json ``record``) held out, tracked at ``crop_size``."""
    from .cache import load_clip_caches
    from .media import read_audio, read_video
    from .render import _select_track

    clip = Path(record["clip"])
    frames, fps = read_video(clip)
    total = len(frames)
    cut = total - int(round(total * record["holdout"]))
    [cache] = load_clip_caches(clip, crop_size=crop_size, cache_dir=cache_dir or record.get("cache_dir"))
    track = cache.track()
    if len(track) != total:
        raise LandmarkTalkError(f"{clip}: the cached track has {len(track)} frames, the video {total}; clear the cache")
    speech = _tail_audio(read_audio(clip, sample_rate=16000, mono=True), cut, total, fps)
    return HoldoutTail(clip=clip, fps=fps, cut=cut, frames=frames[cut:],
                       track=_select_track(track, np.arange(cut, total)), speech=speech)


def evaluate_holdout(
    models_dir: str | os.PathLike,
    *,
    steps: int = 20,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    refiner: str | os.PathLike | None = None,
    seeds: int = 1,
    seed_candidates: int = 1,
    seed_probe_frames: int = SEED_SEARCH_PROBE_FRAMES,
    denoise: float = 1.0,
    motion_scale: float = 1.0,
    center_motion: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render and score the held-out tail of the clip a ``fit --holdout`` was run on; returns holdout.json.

    ``cache_dir``: where the clip's cache is (default: the one the fit recorded, else the default cache).
    ``refiner``: a SOVQAE file run over every generated crop of ``ours`` and ``gt_landmarks`` (it must have
    been fitted with the same hold-out, or it has seen the tail); the figures then go to ``holdout_refined/``.
    ``seeds``: render ``ours`` and ``gt_landmarks`` with noise seeds ``seed … seed + seeds - 1`` and report
    each figure's mean over them (and its standard deviation and per-seed values): every frame of a render
    shares one noise, so one seed moves a whole clip's figures (docs/RESULTS.md).
    ``seed_candidates``, ``seed_probe_frames``: the render's seed search (:class:`pipelines.render.RenderSettings`);
    each of the ``seeds`` runs then searches its own candidates (``seed + i × seed_candidates`` onwards), and
    the true-landmark render searches with the true landmarks.
    ``denoise``, ``motion_scale``, ``center_motion``: as in :class:`pipelines.render.RenderSettings` (the
    motion is centred on the tail's own median mouth: the tail is the face video the render is given).
    """
    if seeds < 1:
        raise LandmarkTalkError(f"--holdout-seeds {seeds}: give 1 or more")
    from .evaluation import evaluate_videos
    from .face import align_faces, crop_landmarks, paste_faces
    from .fit import read_fit_record
    from .media import write_video
    from .render import RenderSettings, _select_track, load_talking_head_models, render_talking_frames

    record = read_fit_record(models_dir)
    if not record or not record.get("holdout"):
        raise LandmarkTalkError(f"{models_dir}: no fit with --holdout recorded; run `fit CLIP --holdout 0.2` first")
    codec = record["codec"] if Path(record["codec"]).is_absolute() else None
    if refiner is not None:
        _check_refiner_holdout(Path(refiner), record)
    models = load_talking_head_models(models_dir, codec=codec, refiner=refiner)
    size = models.l2v.config.image_size
    held = load_holdout_tail(record, size, cache_dir=cache_dir)
    clip, fps, tail, tail_track, speech = held.clip, held.fps, held.frames, held.track, held.speech
    total, cut = held.cut + len(tail), held.cut
    out = Path(out_dir) if out_dir else Path(models_dir) / ("holdout_refined" if refiner else "holdout")
    out.mkdir(parents=True, exist_ok=True)
    settings = RenderSettings(steps=steps, seed=seed, seed_candidates=seed_candidates,
                              seed_probe_frames=seed_probe_frames, denoise=denoise, motion_scale=motion_scale,
                              center_motion=center_motion)
    seed_list = [seed + index * seed_candidates for index in range(seeds)]
    truth_landmarks = replace(crop_landmarks(tail_track, size), fps=fps)
    first_crop = align_faces(tail[:1], _select_track(tail_track, np.array([0])), size)
    still = paste_faces(tail, np.repeat(first_crop, len(tail), axis=0), tail_track, region=settings.paste_region)

    truth_path = out / "truth.mp4"
    write_video(truth_path, tail, fps=fps, audio=speech, overwrite=True)
    write_video(out / "still.mp4", still, fps=fps, audio=speech, overwrite=True)
    # (run, file stem): the first seed keeps the plain names (ours.mp4), the others get _seedN.
    videos: list[tuple[str, str]] = [("still", "still")]
    for index, noise_seed in enumerate(seed_list):
        seeded = replace(settings, seed=noise_seed)
        suffix = "" if index == 0 else f"_seed{noise_seed}"

        def seed_progress(done: int, total_frames: int, _offset=index * len(tail)) -> None:
            if progress is not None:
                progress(_offset + done, len(tail) * len(seed_list))

        ours = np.concatenate(list(render_talking_frames(models, tail, tail_track, speech, fps, seeded,
                                                         progress=seed_progress)))
        gt = np.concatenate(list(render_talking_frames(models, tail, tail_track, speech, fps, seeded,
                                                       landmarks=truth_landmarks)))
        for name, frames_out in (("ours", ours), ("gt_landmarks", gt)):
            videos.append((name, name + suffix))
            write_video(out / f"{name}{suffix}.mp4", frames_out, fps=fps, audio=speech, overwrite=True)
        if index == 0:
            write_video(out / "side_by_side.mp4", _side_by_side([tail, ours, still, gt], 256), fps=fps,
                        audio=speech, overwrite=True)
        del ours, gt

    scored: dict[str, list[dict]] = {name: [] for name in _RUNS}
    skipped: dict[str, dict] = {name: {} for name in _RUNS}
    for name, label in videos:
        video = out / f"{label}.mp4"
        try:
            result = evaluate_videos(video, truth_path, crop_size=EVAL_CROP_SIZE,
                                     json_path=out / f"{label}.json", label=label)
        except LandmarkTalkError as exc:
            # An undertrained render may show no trackable face; score its pixels and say so.
            logger.warning("%s: %s; scoring pixels only", label, exc)
            result = evaluate_videos(video, truth_path, crop_size=EVAL_CROP_SIZE,
                                     json_path=out / f"{label}.json", label=label, landmark_fn=None)
            result.setdefault("skipped", {})["landmarks"] = f"no face could be tracked in the {label} render"
        scored[name].append(result["metrics"])
        skipped[name].update(result.get("skipped", {}))
    figures = {name: _mean_figures(runs) for name, runs in scored.items()}
    summary = {"clip": str(clip), "fps": fps, "eval_crop_size": EVAL_CROP_SIZE,
               "holdout_frames": int(total - cut), "train_frames": int(cut),
               "render_steps": steps, "denoise": denoise,
               "motion_scale": motion_scale, "center_motion": center_motion, "refiner": str(Path(refiner).resolve()) if refiner else None,
               "seeds": seed_list, "seed_candidates": seed_candidates,
               "seed_probe_frames": seed_probe_frames if seed_candidates > 1 else None,
               "metrics": figures, "skipped": skipped}
    if len(seed_list) > 1:
        summary["metrics_sd"] = {name: _sd_figures(scored[name]) for name in ("ours", "gt_landmarks")}
        summary["per_seed"] = {name: scored[name] for name in ("ours", "gt_landmarks")}
    path = out / "holdout.json"
    path.write_text(json.dumps(summary, indent=1, default=float))
    for name in _RUNS:
        m = figures[name]
        logger.info("%-13s " + "  ".join(f"{k}={m[k]:.4g}" for k in sorted(m) if isinstance(m[k], (int, float))),
                    name if len(seed_list) == 1 or name == "still" else f"{name} (mean of {len(seed_list)} seeds)")
    return path


def _numeric(runs: list[dict]) -> dict[str, list[float]]:
    keys = dict.fromkeys(k for run in runs for k, v in run.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return {k: [float(run[k]) for run in runs if isinstance(run.get(k), (int, float))] for k in keys}


def _mean_figures(runs: list[dict]) -> dict:
    """Each numeric figure averaged over the seeds that have it; anything else as the first seed has it."""
    merged = dict(runs[0])
    merged.update({k: float(np.mean(values)) for k, values in _numeric(runs).items()})
    return merged


def _sd_figures(runs: list[dict]) -> dict[str, float]:
    return {k: float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 for k, values in _numeric(runs).items()}
