"""How far A2L's landmarks lie from the tracked truth on unseen speech, as the render shapes them.

    python scripts/a2l_motion_check.py ../shared/data/clips/*.mp4 --out runs/a2l_motion --split inner

For each clip, A2L is trained exactly as ``fit --preset tiny`` trains it (same preset, steps, batch and
seed), on:

- ``--split inner``: the first 60 % of the clip (the first 75 % of the fit's training part), scored on the
  next 20 %. The fit's held-out tail is never read: this is where settings are chosen.
- ``--split tail``: the fit's whole training part (the first 80 %), scored on the held-out tail, as
  ``fit --holdout 0.2`` does.

The scored part's own tracked landmarks are the reference, as in the hold-out render (the face video there
is the tail itself). Rows: A2L's landmarks with the motion scaled by ``--scales`` and centred or not on the
reference's median mouth (:class:`pipelines.render.RenderSettings`), and the median mouth held still (scale
0). Figure: M-LMD, the mean distance of mouth points 48–67 in pixels of 256² crops, on the landmarks
themselves (no rendering). Prints a Markdown table and writes it with ``report.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.cache import load_clip_caches  # noqa: E402
from pipelines.checkpoint import load_checkpoint  # noqa: E402
from pipelines.evaluation.metrics import MOUTH_POINTS, landmark_distance  # noqa: E402
from pipelines.face import crop_landmarks  # noqa: E402
from pipelines.fit import FIT_PRESETS  # noqa: E402
from pipelines.holdout import _tail_audio  # noqa: E402
from pipelines.media import read_audio  # noqa: E402
from pipelines.render import TalkingHeadModels, _select_track, predict_clip_landmarks  # noqa: E402
from pipelines.train.cli import train_from_argv  # noqa: E402
from pipelines.types import Landmarks  # noqa: E402

logger = logging.getLogger("a2l_motion_check")
_EVAL_CROP = 256


def _parts(cache, split: str) -> tuple[range, range, float]:
    """(training frames, scored frames, the inner-holdout fraction to train with), split as the fit and
    A2L's ``--inner-holdout`` split them."""
    train, tail = cache.train_val_frames(0.2)  # the fit's --holdout 0.2
    if split == "tail":
        return train, tail, 0.0
    inner = train.stop - int(round(len(train) * 0.25))
    return range(0, inner), range(inner, train.stop), 0.25


def _mouth_error(predicted: np.ndarray, truth: np.ndarray, crop: int) -> float:
    return float(landmark_distance(predicted, truth, points=MOUTH_POINTS).mean() * _EVAL_CROP / crop)


def check_clip(clip: Path, out: Path, split: str, scales: list[float], cache_dir: str | None,
               a2l_options: list[str] = ()) -> dict:
    preset = FIT_PRESETS["tiny"]
    crop = preset.crop_size
    [cache] = load_clip_caches(clip, crop_size=crop, cache_dir=cache_dir)
    train, scored, inner = _parts(cache, split)
    name, steps, batch = preset.a2l
    checkpoint = out / clip.stem / "a2l.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        argv = ["--out", str(checkpoint), "--data", str(cache.root), "--holdout", "0.2", "--preset", name,
                "--steps", str(steps), "--batch-size", str(batch), "--seed", "0", "--crop-size", str(crop)]
        train_from_argv("a2l", argv + (["--inner-holdout", str(inner)] if inner else []) + list(a2l_options))
    model = load_checkpoint(checkpoint, "a2l")
    from pipelines.train.a2l_task import _clip_speaker

    speaker = _clip_speaker(cache, train, model.config.speaker_method)  # the voice as training heard it
    track = _select_track(cache.track(), np.arange(scored.start, scored.stop))
    truth = Landmarks(points=crop_landmarks(track, crop).points, crop_size=crop, fps=cache.fps)
    speech = _tail_audio(read_audio(clip, sample_rate=16000, mono=True), scored.start, scored.stop, cache.fps)
    models = TalkingHeadModels(a2l=model, l2v=None, codec=None, speaker=speaker)
    row = {"frames": len(scored), "median mouth held still": _mouth_error(
        predict_clip_landmarks(models, speech, truth, cache.fps, motion_scale=0.0, center_motion=True).points,
        truth.points, crop)}
    for center in (False, True):
        for scale in scales:
            landmarks = predict_clip_landmarks(models, speech, truth, cache.fps, motion_scale=scale, center_motion=center)
            row[f"scale {scale:g}{', centred' if center else ''}"] = _mouth_error(landmarks.points, truth.points, crop)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", type=Path, help="talking clips (e.g. ../shared/data/clips/*.mp4)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the A2L checkpoints and the report")
    parser.add_argument("--split", choices=["inner", "tail"], default="inner",
                        help="inner: choose settings without the held-out tail; tail: check them on it")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0], help="motion scales to score")
    parser.add_argument("--cache-dir", default=None, help="where clips are prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--a2l-options", nargs=argparse.REMAINDER, default=[],
                        help="the rest of the line goes to `train a2l` (e.g. --mouth-components 2); give a fresh --out")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    rows = {clip.stem: check_clip(clip, args.out, args.split, args.scales, args.cache_dir, args.a2l_options) for clip in args.clips}
    columns = [key for key in next(iter(rows.values())) if key != "frames"]
    lines = [f"| clip ({args.split} split) | frames | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for clip, row in rows.items():
        lines.append(f"| {clip} | {row['frames']} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{np.mean([r[c] for r in rows.values()]):.2f}**" for c in columns) + " |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table + "\n")
    (args.out / "report.json").write_text(json.dumps({"split": args.split, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
