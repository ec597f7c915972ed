"""Does the render's seed search pick well? Score saved single-seed hold-out renders both ways and simulate it.

    python scripts/seed_search_check.py runs/tiny_CLIP runs/tiny_CLIP/holdout_seeds0to11_refined

Every hold-out folder given (written by ``fit --holdout … --seed-candidates 1``, one or several seeds each) holds
``ours[_seedN].mp4`` renders and their M-LMD against the truth in ``holdout.json``. For each seed this measures
what the seed search measures during a render, the mouth-following error of its first ``--probe-frames``
frames against the A2L landmarks the render was given (:func:`pipelines.render.mouth_following_error` on the
frames aligned back to face crops), then prints the Spearman correlation of that error with M-LMD over the
seeds and a Markdown table: for each search size K, the mean M-LMD of the seed picked from every run of K
consecutive seeds (K = 1: a seed at random) and how many picks beat the still baseline.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _seed_renders(argument: str) -> dict[int, tuple[Path, float, float]]:
    """seed → (ours video, its M-LMD, the still baseline's M-LMD) of one hold-out folder (``FOLDER`` or
    ``FOLDER@SEED`` for a holdout.json written before it recorded its seeds)."""
    path, _, given = argument.partition("@")
    folder = Path(path)
    report = json.loads((folder / "holdout.json").read_text())
    if given:
        report["seeds"] = [int(given)]
    elif "seeds" not in report:
        raise SystemExit(f"{folder}: its holdout.json does not say which seed it rendered; give {folder}@SEED")
    runs = report.get("per_seed", {}).get("ours") or [report["metrics"]["ours"]]
    if report.get("seed_candidates", 1) != 1:
        raise SystemExit(f"{folder}: rendered with a seed search; give folders written with --seed-candidates 1")
    out = {}
    for index, (seed, figures) in enumerate(zip(report["seeds"], runs)):
        out[seed] = (folder / ("ours.mp4" if index == 0 else f"ours_seed{seed}.mp4"), float(figures["m_lmd"]),
                     float(report["metrics"]["still"]["m_lmd"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", help="folder of a fit with --holdout (fit.json, a2l/l2v)")
    parser.add_argument("holdouts", nargs="+", help="hold-out folders of single-seed renders (FOLDER or FOLDER@SEED)")
    parser.add_argument("--probe-frames", type=int, default=16,
                        help="frames the search scores (default %(default)s, the render's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 6], help="search sizes K to simulate")
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from pipelines.face import align_faces, crop_landmarks
    from pipelines.face.detect import load_landmark_detector
    from pipelines.fit import read_fit_record
    from pipelines.holdout import load_holdout_tail
    from pipelines.media import read_video
    from pipelines.render import load_talking_head_models, mouth_following_error, predict_clip_landmarks
    from pipelines.types import Landmarks

    torch.set_num_threads(1)
    record = read_fit_record(args.models)
    if not record or not record.get("holdout"):
        raise SystemExit(f"{args.models}: no fit with --holdout recorded")
    codec = record["codec"] if Path(record["codec"]).is_absolute() else None
    models = load_talking_head_models(args.models, codec=codec)
    size = models.l2v.config.image_size
    tail = load_holdout_tail(record, size)
    source = Landmarks(points=crop_landmarks(tail.track, size).points, crop_size=size, fps=tail.fps)
    asked = predict_clip_landmarks(models, tail.speech, source, tail.fps).points[:args.probe_frames]
    renders: dict[int, tuple[Path, float, float]] = {}
    for folder in args.holdouts:
        renders.update(_seed_renders(folder))
    seeds = sorted(renders)
    detector = load_landmark_detector("dlib")
    errors = {}
    for seed in seeds:
        video, _ = read_video(renders[seed][0], max_frames=len(asked))
        errors[seed] = mouth_following_error(align_faces(video, tail.track, size)[:len(asked)], asked, detector)
    m_lmd = {seed: renders[seed][1] for seed in seeds}
    still = renders[seeds[0]][2]
    rho = spearmanr([errors[s] for s in seeds], [m_lmd[s] for s in seeds]).correlation
    print(f"{record['clip']}: {len(seeds)} seeds, Spearman ρ(mouth-following error, M-LMD) = {rho:.2f}; still {still:.2f}")
    print("| seed | " + " | ".join(map(str, seeds)) + " |\n|---|" + "---:|" * len(seeds))
    print("| error (crop px) | " + " | ".join(f"{errors[s]:.2f}" for s in seeds) + " |")
    print("| M-LMD | " + " | ".join(f"{m_lmd[s]:.2f}" for s in seeds) + " |\n")
    print("| K | mean M-LMD of the pick | picks beating still |\n|---:|---:|---:|")
    for k in args.sizes:
        windows = [seeds[start:start + k] for start in range(len(seeds) - k + 1)]
        picks = [m_lmd[min(window, key=errors.get)] for window in windows]
        print(f"| {k} | {np.mean(picks):.2f} | {sum(p < still for p in picks)}/{len(picks)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
