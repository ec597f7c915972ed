"""Fit the DAE-Talker path on one clip, score its held-out tail, and measure pose control.

    python scripts/dae_holdout.py CLIP --out DIR [--dae-steps 2000] [--s2l-steps 1500] [--threads 1]

1. ``fit_dae`` (80 % of the clip) → DIR/dae.safetensors, DIR/speech2latent.safetensors;
2. ``evaluate_dae_holdout``: the last 20 % rendered from its own audio and tracked pose; PSNR, SSIM,
   M-LMD beside the still baseline and the DAE's own reconstruction → DIR/dae_holdout.json;
3. pose control: a sinusoidal yaw curve inside the clip's yaw range (2nd..98th percentile) drives
   speech2latent with the clip's audio; dlib landmarks on the rendered crops give the yaw back; its
   Pearson correlation with the asked curve is reported beside a control render with constant yaw
   → DIR/pose_control.json.
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


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return None
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def measure_pose_control(out: Path, *, frames: int, period_s: float, steps: int) -> dict:
    from pipelines.audio import compute_audio_features
    from pipelines.cache import load_clip_caches
    from pipelines.checkpoint import load_checkpoint
    from pipelines.dae import estimate_head_pose, render_dae_frames
    from pipelines.face import detect_landmarks, load_landmark_detector
    import cv2

    record = json.loads((out / "dae_fit.json").read_text())
    dae = load_checkpoint(out / "dae.safetensors", "dae").eval()
    s2l = load_checkpoint(out / "speech2latent.safetensors", "speech2latent").eval()
    [cache] = load_clip_caches(record["cache"])
    clip_pose = estimate_head_pose(cache.landmarks())
    low, high = np.nanpercentile(clip_pose[:, 0], [2, 98])
    frames = min(frames, cache.num_frames)
    t = np.arange(frames) / cache.fps
    asked = (low + high) / 2 + (high - low) / 2 * np.sin(2 * np.pi * t / period_s)
    base = np.nanmedian(clip_pose, axis=0)
    features = compute_audio_features(cache.audio(), cache.fps, window=s2l.config.audio_window,
                                      num_frames=cache.num_frames).features[:frames]
    detector = load_landmark_detector("dlib")

    def rendered_yaw(pose: np.ndarray) -> tuple[np.ndarray, float]:
        crops = np.concatenate(list(render_dae_frames(dae, s2l, features, cache.fps, cache.crops()[0], pose,
                                                      steps=steps)))
        points = np.full((len(crops), 68, 2), np.nan, np.float32)
        for i, crop in enumerate(crops):
            found = detect_landmarks(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC), detector=detector)
            if found is not None:
                points[i] = found.landmarks
        return estimate_head_pose(points)[:, 0], float(np.isfinite(points).all(axis=(1, 2)).mean())

    pose = np.tile(base, (frames, 1)).astype(np.float32)
    pose[:, 0] = asked
    started = time.perf_counter()
    yaw_out, found = rendered_yaw(pose)
    seconds = time.perf_counter() - started
    constant = np.tile(base, (frames, 1)).astype(np.float32)
    constant[:, 0] = (low + high) / 2
    yaw_const, found_const = rendered_yaw(constant)
    truth_yaw = clip_pose[:frames, 0]
    result = {
        "frames": frames, "period_s": period_s, "steps": steps,
        "clip_yaw_deg_p2_p98": [float(np.degrees(low)), float(np.degrees(high))],
        "asked_yaw_deg_range": [float(np.degrees(asked.min())), float(np.degrees(asked.max()))],
        "pearson_sinusoid": _pearson(yaw_out, asked), "face_found_sinusoid": found,
        "rendered_yaw_deg_range": [float(np.degrees(np.nanmin(yaw_out))), float(np.degrees(np.nanmax(yaw_out)))]
        if np.isfinite(yaw_out).any() else None,
        "pearson_constant_control": _pearson(yaw_const, asked), "face_found_constant": found_const,
        "pearson_clip_own_yaw_vs_asked": _pearson(truth_yaw, asked),
        "render_seconds": round(seconds, 1),
    }
    name = "pose_control.json" if period_s == 2.0 else f"pose_control_{period_s:g}s.json"
    (out / name).write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dae-steps", type=int, default=2000)
    parser.add_argument("--s2l-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and decoding")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--pose-frames", type=int, default=100)
    parser.add_argument("--pose-period", type=float, default=2.0, help="seconds per yaw oscillation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="default: OUT/cache")
    parser.add_argument("--only", choices=["all", "holdout", "pose"], default="all",
                        help="re-run one part on an existing fit in OUT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    from pipelines.dae import evaluate_dae_holdout, fit_dae

    out = Path(args.out)
    times, report = {}, {"threads": args.threads}
    if args.only == "all":
        started = time.perf_counter()
        report["fit"] = fit_dae(args.clip, out, holdout=args.holdout, steps=args.dae_steps,
                                speech2latent_steps=args.s2l_steps, cache_dir=args.cache_dir or out / "cache")
        times["fit_s"] = round(time.perf_counter() - started, 1)
    if args.only in ("all", "holdout"):
        started = time.perf_counter()
        report["holdout"] = evaluate_dae_holdout(out, steps=args.steps)
        times["holdout_s"] = round(time.perf_counter() - started, 1)
    if args.only in ("all", "pose"):
        started = time.perf_counter()
        report["pose_control"] = measure_pose_control(out, frames=args.pose_frames, period_s=args.pose_period,
                                                      steps=args.steps)
        times["pose_control_s"] = round(time.perf_counter() - started, 1)
    report["wall_times"] = times
    name = "dae_report.json" if args.only == "all" else f"dae_report_{args.only}.json"
    (out / name).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
