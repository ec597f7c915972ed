"""What centring A2L's motion adds to a render: wall time with and without it, same process.

    python benchmarks/motion_centering_cost.py                 # 4 s and 16 s of speech on a face video
    python benchmarks/motion_centering_cost.py --device cuda --dtype bfloat16

The baseline renders with the motion as predicted (``render --no-center-motion --motion-scale 1``); the other
row centres it on the face video's median mouth and scales it by 0.75 (the CLI's default), which runs the
audio features and A2L over the speech twice (once for the mean motion, once to place it). A face video is
needed (a photo is never centred): by default the first clip in ``../shared/data/clips``. Random tiny
models (speed does not depend on what the weights learned), the TAEF2 codec from
``../shared/data/models/taesd``; renders alternate and each row reports its fastest repeat. Prints a
Markdown table of ratios centred / as predicted, then a second one for the only stage that changes: audio
features and A2L alone (``predict_clip_landmarks`` on a 10 s reference video of template landmarks).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the pack's root is the import root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_timing import (  # noqa: E402
    SHARED, add_render_benchmark_arguments, parse_render_benchmark_arguments, random_models_and_speeches,
    time_render_variants,
)


def _time_landmarks(models, speeches: dict[str, Path], *, repeats: int) -> dict[tuple[str, bool], float]:
    """Best wall seconds of A2L's landmarks for every (speech, centred?), alternating."""
    import numpy as np

    from pipelines.face._geometry import TEMPLATE
    from pipelines.media import read_audio
    from pipelines.render import RENDER_MOTION_SCALE, predict_clip_landmarks
    from pipelines.types import Landmarks, frame_count_for

    size = models.l2v.config.image_size
    rng = np.random.default_rng(0)
    points = (TEMPLATE[None] * size + rng.normal(0, 0.5, (250, 68, 2))).astype(np.float32)  # 10 s of a "video"
    best: dict[tuple[str, bool], float] = {}
    for _ in range(repeats):
        for name, path in speeches.items():
            audio = read_audio(path, sample_rate=16000, mono=True)
            frames = frame_count_for(audio.duration_s, 25.0)  # as many as the features A2L reads
            reference = Landmarks(points=points[np.arange(frames) % len(points)], crop_size=size, fps=25.0)
            for centred in (False, True):
                start = time.perf_counter()
                predict_clip_landmarks(models, audio, reference, 25.0, center_motion=centred,
                                       motion_scale=RENDER_MOTION_SCALE if centred else 1.0)
                seconds = time.perf_counter() - start
                best[name, centred] = min(seconds, best.get((name, centred), seconds))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 16.0], help="speech lengths")
    add_render_benchmark_arguments(parser)
    parser.set_defaults(face=str(SHARED / "clips" / "RD_Radio34_000.mp4"))
    args = parse_render_benchmark_arguments(parser, argv)

    import torch

    from pipelines.render import RENDER_MOTION_SCALE, RenderSettings

    torch.set_num_threads(args.threads)
    plain = RenderSettings(steps=args.steps, device=args.device, dtype=args.dtype, crf=30)
    centred = replace(plain, center_motion=True, motion_scale=RENDER_MOTION_SCALE)
    with tempfile.TemporaryDirectory(prefix="lt-motion-") as tmp:
        folder = Path(tmp)
        models, speeches = random_models_and_speeches(folder, args.codec, args.seconds, args.device)
        best = time_render_variants(args.face, speeches, {"plain": (models, plain), "centred": (models, centred)},
                                    folder, repeats=args.repeats, device=args.device)
        landmark_seconds = _time_landmarks(models, speeches, repeats=max(args.repeats, 3))

    print("| speech | frames | as predicted s (baseline) | centred s | **ratio centred / as predicted** |\n"
          "|---:|---:|---:|---:|---:|")
    for name in speeches:
        (base, frames), (with_centring, _) = best[name, "plain"], best[name, "centred"]
        print(f"| {name} s | {frames} | {base:.1f} | {with_centring:.1f} | **{with_centring / base:.2f}x** |")
    print("\n| speech | features + A2L as predicted s (baseline) | centred s | **ratio** |\n|---:|---:|---:|---:|")
    for name in speeches:
        base, with_centring = landmark_seconds[name, False], landmark_seconds[name, True]
        print(f"| {name} s | {base:.3f} | {with_centring:.3f} | **{with_centring / base:.2f}x** |")
    print(f"\n{args.steps} sampler steps, {args.device} {args.dtype}, {args.threads} thread(s), best of "
          f"{args.repeats}, random tiny L2V/A2L, TAEF2, face {Path(args.face).name}, {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
