"""A2L held-out check on real clips: train on the first 80 % of every clip, predict the last 20 % from its audio.

    python scripts/a2l_holdout.py ../shared/data/clips --cache-dir /tmp/lt-cache --out /tmp/lt-a2l

1. prepares one clip cache per clip (``pipelines.cache.prepare_clip_cache``; with ``--standin`` or when
   ``pipelines.face`` is missing, a stand-in: dlib 68-point landmarks, a smoothed eyes+mouth similarity
   alignment to 256² crops, Savitzky–Golay smoothed landmarks);
2. trains one A2L model on the training frames of all clips (``pipelines.train.a2l_task``);
3. on every clip's held-out tail, for several reference frames taken from its training part, compares
   the predicted landmarks with the tracked ones against two baselines computed in the same run: the
   reference held still, and the reference with the mean training mouth of that clip. Figures: M-LMD
   (mean distance of mouth points 48–67, pixels in 256² crops) with all shapes in the reference's pose
   ("still pose") and laid onto each true frame's rigid points ("tracked pose", isolating mouth shape); the
   Pearson correlation of lip opening with the audio RMS per frame and with the true lip opening;
4. feeds ``silence_16k.wav`` and checks the predicted lip opening against the speaker's closed-mouth
   level (10th percentile of its training lip opening).

``--stage inner`` chooses settings without touching the held-out tail: it trains on the first 75 % of each
clip's training part (60 % of the clip) and evaluates, with the same baselines, on the rest of the training
part (the next 20 %). ``--stage final`` (the default) trains on the whole training part and evaluates on the
held-out tail; run it once, with the settings the inner stage chose.

Prints a Markdown report, writes it with ``report.json`` into ``--out``. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.audio import compute_audio_features, smooth_landmark_track  # noqa: E402
from pipelines.cache import ClipCache, cache_dir_for, load_clip_caches, write_clip_cache  # noqa: E402
from pipelines.media import read_audio  # noqa: E402
from pipelines.models.a2l import (  # noqa: E402
    A2L, A2LConfig, align_to_reference, from_canonical, lip_opening, predict_landmarks, to_canonical,
)
from pipelines.train import TrainConfig, train_model  # noqa: E402
from pipelines.train.a2l_task import A2LTask  # noqa: E402
from pipelines.types import AudioFeatures, FaceTrack, Landmarks  # noqa: E402

logger = logging.getLogger("a2l_holdout")

_MOUTH = slice(48, 68)
_CROP = 256
# Stand-in alignment template (fractions of the crop side): eye centres and mouth centre.
_TEMPLATE = np.array([[0.35, 0.40], [0.65, 0.40], [0.50, 0.75]], np.float32)


def _prepare_standin(clip: Path, root: Path) -> ClipCache:
    """dlib landmarks per frame, a temporally smoothed similarity alignment, smoothed crop landmarks."""
    import cv2
    import dlib
    import face_recognition_models
    from scipy.ndimage import gaussian_filter1d

    from pipelines.media import read_video

    if (root / "meta.json").is_file():
        return load_clip_caches(root)[0]
    frames, fps = read_video(clip)
    audio = read_audio(clip, sample_rate=16000, mono=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    points = np.zeros((len(frames), 68, 2), np.float32)
    found = np.zeros(len(frames), bool)
    for t, frame in enumerate(frames):
        scale = min(1.0, 400 / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        boxes = detector(small, 0)
        if not boxes:
            continue
        box = max(boxes, key=lambda b: b.area())
        full = dlib.rectangle(int(box.left() / scale), int(box.top() / scale), int(box.right() / scale), int(box.bottom() / scale))
        shape = predictor(frame, full)
        points[t] = [(p.x, p.y) for p in shape.parts()]
        found[t] = True
    if not found.any():
        raise RuntimeError(f"{clip}: no face found")
    idx = np.arange(len(frames))
    for k in range(68):  # fill missed frames by interpolation
        for c in range(2):
            points[~found, k, c] = np.interp(idx[~found], idx[found], points[found, k, c])
    points = smooth_landmark_track(points, fps)
    anchors = np.stack([points[:, 36:42].mean(1), points[:, 42:48].mean(1), points[:, 48:68].mean(1)], 1)
    transforms = np.stack([cv2.estimateAffinePartial2D(a, _TEMPLATE * _CROP)[0] for a in anchors]).astype(np.float32)
    transforms = gaussian_filter1d(transforms, sigma=fps * 0.1, axis=0, mode="nearest")  # steady crop
    crops = np.stack([cv2.warpAffine(f, m, (_CROP, _CROP), flags=cv2.INTER_AREA) for f, m in zip(frames, transforms)])
    homogeneous = np.concatenate([points, np.ones_like(points[..., :1])], -1)
    crop_points = np.einsum("tij,tkj->tki", transforms, homogeneous).astype(np.float32)
    track = FaceTrack(landmarks=points, confidence=found.astype(np.float32), transforms=transforms, crop_size=_CROP,
                      frame_size=frames.shape[1:3], fps=fps, filled=~found)
    return write_clip_cache(root, crops=crops, landmarks=crop_points, track=track, audio=audio, fps=fps,
                            source=str(clip.resolve()), overwrite=True)


def _prepare(clips: list[Path], cache_dir: Path, standin: bool) -> tuple[list[ClipCache], str]:
    if not standin:
        try:
            import pipelines.face  # noqa: F401

            from pipelines.face import align_faces, track_face  # noqa: F401
        except ImportError:
            logger.warning("pipelines.face is not available; using the dlib stand-in tracker")
            standin = True
    if standin:
        return [_prepare_standin(c, cache_dir / (cache_dir_for(c, _CROP, cache_dir).name + "-dlib")) for c in clips], "dlib stand-in"
    from pipelines.cache import prepare_clip_cache

    return [_existing_cache(c, cache_dir) or prepare_clip_cache(c, cache_dir_for(c, _CROP, cache_dir), crop_size=_CROP)
            for c in clips], "pipelines.face"


def _existing_cache(clip: Path, cache_dir: Path) -> ClipCache | None:
    """A cache of this clip already in ``cache_dir`` under an older key (the clip's file was copied again,
    which changes its mtime): reused, so every run compares on the same tracked landmarks."""
    import json as _json

    for root in sorted(cache_dir.glob(f"{clip.stem}-*-{_CROP}")):
        try:
            meta = _json.loads((root / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == str(clip.resolve()) and meta.get("crop_size") == _CROP:
            return load_clip_caches(root)[0]
    return None


def _frame_rms(samples: np.ndarray, fps: float, frames: range, rate: int = 16000) -> np.ndarray:
    """RMS of the audio in each frame's 1/fps interval."""
    out = []
    for t in frames:
        a, b = int(round(t / fps * rate)), int(round((t + 1) / fps * rate))
        piece = samples[a:b]
        out.append(float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) if len(piece) else 0.0)
    return np.asarray(out)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.std(a) < 1e-6 * (abs(np.mean(a)) + 1e-6) or np.std(b) < 1e-6 * (abs(np.mean(b)) + 1e-6):
        return None  # a constant has no correlation
    return float(np.corrcoef(a, b)[0, 1])


def _mlmd(predicted_px: np.ndarray, truth_px: np.ndarray) -> float:
    return float(np.linalg.norm(predicted_px[:, _MOUTH] - truth_px[:, _MOUTH], axis=-1).mean())


def _evaluate(model: A2L, task: A2LTask, caches: list[ClipCache], silence, references_per_clip: int) -> dict:
    methods = ("A2L", "still reference", "mean training mouth")
    rows = []
    for cache, clip in zip(caches, task.clips):
        truth_px = cache.landmarks()[clip.val.start:clip.val.stop]
        truth_canon, _ = to_canonical(truth_px)
        audio = cache.audio().samples[0]
        rms = _frame_rms(audio, cache.fps, clip.val)
        true_opening = lip_opening(truth_canon)
        train_canon = clip.canonical[clip.train.start:clip.train.stop]
        closed_level = float(np.percentile(lip_opening(train_canon), 10))
        features = AudioFeatures(clip.features[clip.val.start:clip.val.stop], cache.fps, model.config.feature_kind)
        silence_features = compute_audio_features(silence, cache.fps, window=model.config.feature_window)
        ref_ids = np.linspace(clip.train.start, clip.train.stop - 1, references_per_clip).round().astype(int)
        per_ref = {m: {"mlmd_still": [], "mlmd_tracked": [], "r_rms": [], "r_true": []} for m in methods}
        silence_opening, silence_settled = [], []
        for ref_id in ref_ids:
            ref_px = cache.landmarks()[ref_id]
            ref_canon, ref_frame = to_canonical(ref_px)
            reference = Landmarks(ref_px[None], crop_size=cache.crop_size, fps=cache.fps)
            own = cache.landmarks()[clip.train.start:clip.train.stop]  # the speaker's training frames
            predicted_px = predict_landmarks(model, features, reference, clip.speaker, speaker_frames=own).points
            mouth_ref = ref_canon.copy()  # training frames laid onto this reference, mouths averaged
            mouth_ref[_MOUTH] = align_to_reference(train_canon, ref_canon)[:, _MOUTH].mean(axis=0)
            canon = {
                "A2L": to_canonical(predicted_px)[0],
                "still reference": np.broadcast_to(ref_canon, truth_canon.shape),
                "mean training mouth": np.broadcast_to(mouth_ref, truth_canon.shape),
            }
            for m in methods:
                still_px = from_canonical(canon[m], ref_frame)
                tracked_px = align_to_reference(canon[m], truth_px)
                opening = lip_opening(canon[m])
                per_ref[m]["mlmd_still"].append(_mlmd(still_px, truth_px))
                per_ref[m]["mlmd_tracked"].append(_mlmd(tracked_px, truth_px))
                per_ref[m]["r_rms"].append(_pearson(opening, rms))
                per_ref[m]["r_true"].append(_pearson(opening, true_opening))
            quiet = predict_landmarks(model, silence_features, reference, clip.speaker, speaker_frames=own).points
            quiet_opening = lip_opening(to_canonical(quiet)[0])
            silence_opening.append(float(quiet_opening.mean()))
            silence_settled.append(float(quiet_opening[int(round(0.4 * cache.fps)):].mean()))
        interocular = float(np.linalg.norm(truth_px[:, [42, 45]].mean(1) - truth_px[:, [36, 39]].mean(1), axis=-1).mean())
        row = {
            "clip": Path(cache.source).name, "fps": cache.fps, "train_frames": len(clip.train), "val_frames": len(clip.val),
            "truth_r_rms": _pearson(true_opening, rms), "interocular_px": interocular,
            "closed_level_px": closed_level * interocular, "silence_opening_px": float(np.mean(silence_opening)) * interocular,
            "silence_max_ref_px": float(np.max(silence_opening)) * interocular,
            "silence_settled_px": float(np.mean(silence_settled)) * interocular,
            "silence_settled_max_px": float(np.max(silence_settled)) * interocular,
            "mean_train_opening_px": float(lip_opening(train_canon).mean()) * interocular,
        }
        for m in methods:
            for key, values in per_ref[m].items():
                valid = [v for v in values if v is not None]
                row[f"{m}|{key}"] = float(np.mean(valid)) if valid else None
        rows.append(row)
    return {"methods": methods, "clips": rows}


def _fmt(value, digits=2) -> str:
    return "undefined (constant)" if value is None else f"{value:.{digits}f}"


def _report(result: dict, meta: dict) -> str:
    methods, rows = result["methods"], result["clips"]
    lines = [
        "## A2L (audio → landmarks): held-out check on the shared clips" if meta["stage"] == "final"
        else "## A2L (audio → landmarks): inner validation (choosing settings; the held-out tail is not used)", "",
        f"Command: `{meta['command']}`  ",
        f"Tracking: {meta['tracker']}. Device: CPU ({torch.get_num_threads()} threads, shared machine). "
        f"Wall time: prepare {meta['prepare_s']:.0f} s, train {meta['train_s']:.0f} s ({meta['steps']} steps, "
        f"preset `{meta['preset']}`: {meta['config']}), evaluate {meta['eval_s']:.0f} s.  ",
        (f"One model trained on the first {100 - meta['holdout'] * 100:.0f} % of all {len(rows)} clips; figures on the last "
         f"{meta['holdout'] * 100:.0f} % of each" if meta["stage"] == "final" else
         f"Inner split: one model trained on the first {meta['train_pct']:.0f} % of all {len(rows)} clips; figures on the next "
         f"{meta['val_pct']:.0f} % of each (the held-out last {meta['holdout'] * 100:.0f} % is not used)") + f", averaged over {meta['references']} reference frames per clip taken "
        "from its training part. Validation loss: "
        f"{meta['val_start']:.4f} (untrained = the {'still reference' if meta['mouth_start'] == 'reference' else 'mean training mouth'}) "
        f"→ {meta['val_end']:.4f}.", "",
        "M-LMD = mean distance of mouth points 48–67 in 256² crop pixels (lower is better). *Still pose*: every "
        "shape in the reference frame's pose; *tracked pose*: every shape laid onto the true frame's rigid points "
        "(nose, eye corners) by a least-squares similarity, so only the non-rigid shape differs. r = Pearson correlation over held-out frames.", "",
        "| clip | method | M-LMD still pose | M-LMD tracked pose | r(lip opening, audio RMS) | r(lip opening, true opening) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        for m in methods:
            lines.append(
                f"| {row['clip']} ({row['val_frames']} fr) | {m} | {_fmt(row[f'{m}|mlmd_still'])} | {_fmt(row[f'{m}|mlmd_tracked'])} "
                f"| {_fmt(row[f'{m}|r_rms'])} | {_fmt(row[f'{m}|r_true'])} |"
            )
        lines.append(f"| {row['clip']} | tracked truth | 0 | 0 | {_fmt(row['truth_r_rms'])} | 1 |")
    lines += ["", "Mean over clips:", "", "| method | M-LMD still pose | M-LMD tracked pose | r(opening, RMS) | r(opening, true) |", "|---|---|---|---|---|"]
    for m in methods:
        cols = []
        for key in ("mlmd_still", "mlmd_tracked", "r_rms", "r_true"):
            values = [row[f"{m}|{key}"] for row in rows if row[f"{m}|{key}"] is not None]
            cols.append(_fmt(float(np.mean(values))) if values else "undefined (constant)")
        lines.append(f"| {m} | " + " | ".join(cols) + " |")
    truth = [row["truth_r_rms"] for row in rows if row["truth_r_rms"] is not None]
    lines.append(f"| tracked truth | 0 | 0 | {_fmt(float(np.mean(truth)))} | 1 |")
    lines += ["", "Silence (`silence_16k.wav`, 2 s of digital zeros) → predicted mean lip opening vs the speaker's "
              "closed-mouth level (10th percentile of training lip opening), pixels in 256² crops:", "",
              "| clip | closed level | silence → predicted, all 2 s (mean / worst reference) | after the first 0.4 s (mean / worst) "
              "| mean training opening | mean at or below closed? | worst at or below closed? |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        mean_ok = row["silence_opening_px"] <= row["closed_level_px"]
        worst_ok = row["silence_max_ref_px"] <= row["closed_level_px"]
        lines.append(f"| {row['clip']} | {row['closed_level_px']:.2f} | {row['silence_opening_px']:.2f} / {row['silence_max_ref_px']:.2f} "
                     f"| {row['silence_settled_px']:.2f} / {row['silence_settled_max_px']:.2f} "
                     f"| {row['mean_train_opening_px']:.2f} | {'yes' if mean_ok else 'no'} | {'yes' if worst_ok else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", type=Path, help="a folder of talking clips (e.g. ../shared/data/clips)")
    parser.add_argument("--cache-dir", type=Path, required=True, help="where clip caches are prepared (outside the repo)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoint and the report")
    parser.add_argument("--silence", type=Path, default=None, help="silent wav (default: CLIPS/../audio/silence_16k.wav)")
    parser.add_argument("--standin", action="store_true", help="use the dlib stand-in tracker even if pipelines.face exists")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--speaker", default="auto", choices=["auto", "ge2e", "logmel"])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--driven-points", default=None, choices=["all", "mouth_jaw"], help="override the preset's")
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's")
    parser.add_argument("--velocity-weight", type=float, default=1.0)
    parser.add_argument("--silence-probability", type=float, default=0.3)
    parser.add_argument("--jaw-weight", type=float, default=0.25)
    parser.add_argument("--opening-weight", type=float, default=3.0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--stage", default="final", choices=["inner", "final"],
                        help="inner: choose settings on an inner split of the training part; final: the held-out check")
    parser.add_argument("--inner-holdout", type=float, default=0.25, help="tail of the training part that validates in --stage inner")
    parser.add_argument("--mouth-start", default="reference", choices=["reference", "mean_shape"])
    parser.add_argument("--mouth-components", type=int, default=0, help="PCA coefficients instead of free coordinates (0 = free)")
    parser.add_argument("--content-dim", type=int, default=None, help="override the preset's")
    parser.add_argument("--hidden-dim", type=int, default=None, help="override the preset's")
    parser.add_argument("--mouth-weight", type=float, default=3.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--window-seconds", type=float, nargs=2, default=(2.0, 4.0), metavar=("MIN", "MAX"),
                        help="length range of training windows")
    parser.add_argument("--references", type=int, default=5, help="reference frames per clip to average over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from pipelines.audio.speaker import resolve_speaker_method

    clips = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in {".mp4", ".mov", ".mkv"})
    silence = read_audio(args.silence or args.clips.parent / "audio" / "silence_16k.wav")
    started = time.perf_counter()
    caches, tracker = _prepare(clips, args.cache_dir, args.standin)
    prepared = time.perf_counter()

    torch.manual_seed(args.seed)
    overrides = {k: v for k, v in (("driven_points", args.driven_points), ("dropout", args.dropout),
                                    ("content_dim", args.content_dim), ("hidden_dim", args.hidden_dim)) if v is not None}
    config = A2LConfig.preset(args.preset, speaker_method=resolve_speaker_method(args.speaker), mouth_start=args.mouth_start,
                              mouth_components=args.mouth_components, **overrides)
    inner = args.inner_holdout if args.stage == "inner" else 0.0
    task = A2LTask(caches, config, holdout=args.holdout, velocity_weight=args.velocity_weight, jaw_weight=args.jaw_weight,
                   opening_weight=args.opening_weight, mouth_weight=args.mouth_weight, window_seconds=tuple(args.window_seconds),
                   silence_probability=args.silence_probability, augment=not args.no_augment, inner_holdout=inner)
    model = A2L(config)
    if config.mouth_components:
        model.set_shape_basis(task.shape_basis(model))
    with torch.no_grad():
        val_start = float(np.mean([float(task.compute_loss(model.eval(), b)[0]) for b in task.validation_batches(1)]))
    args.out.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
                               warmup_steps=min(args.warmup, args.steps // 2), ema_decay=args.ema_decay, val_every=max(1, args.steps // 10), save_every=10**9,
                               seed=args.seed, resume=False, overwrite=True)
    def progress(step: int, total: int, logs: dict) -> None:
        if step % 100 == 0 or step == total or "val_loss" in logs:
            logger.info("step %d/%d loss %.4f%s", step, total, logs["loss"],
                        f" val {logs['val_loss']:.4f}" if "val_loss" in logs else "")

    result = train_model(model, task, train_config, args.out / "a2l.safetensors", progress=progress)
    trained = time.perf_counter()
    from pipelines.checkpoint import load_checkpoint

    model = load_checkpoint(args.out / "a2l.safetensors", "a2l")
    evaluation = _evaluate(model, task, caches, silence, args.references)
    done = time.perf_counter()
    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "tracker": tracker,
        "prepare_s": prepared - started, "train_s": trained - prepared, "eval_s": done - trained, "steps": args.steps,
        "preset": args.preset, "speaker_method": config.speaker_method, "config": str(config), "holdout": args.holdout,
        "references": args.references, "stage": args.stage, "mouth_start": config.mouth_start,
        "train_pct": 100 * (1 - args.holdout) * (1 - inner), "val_pct": 100 * (1 - args.holdout) * inner if inner else 100 * args.holdout,
        "val_start": val_start, "val_end": result.final_validation_loss,
        "val_history": list(zip(result.history["val_step"], result.history["val_loss"])),
    }
    report = _report(evaluation, meta)
    (args.out / "report.md").write_text(report)
    (args.out / "report.json").write_text(json.dumps({"meta": meta, **evaluation}, indent=1))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
