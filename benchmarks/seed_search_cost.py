"""What the render's seed search adds: wall time with and without it, for a short and a longer speech, same process.

    python benchmarks/seed_search_cost.py                      # 4 s and 16 s of speech, 8 candidates × 16 frames
    python benchmarks/seed_search_cost.py --device cuda --dtype bfloat16

The baseline is the plain render with one seed (``render --seed-candidates 1``); the other row searches
``--candidates`` seeds on the first ``--probe-frames`` frames (re-detecting the mouth in every probe crop) and
keeps the best seed's probe frames. The search's cost is fixed by the probe, not by the clip: the ratio should
fall toward 1 as the speech gets longer. Random tiny models (speed does not depend on what the weights
learned), a photo from ``../shared/data/images`` and the TAEF2 codec from ``../shared/data/models/taesd``;
renders alternate and each row reports its fastest repeat. Prints a Markdown table of ratios search / plain.
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
    add_render_benchmark_arguments, parse_render_benchmark_arguments, random_models_and_speeches, time_render_variants,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 16.0], help="speech lengths")
    parser.add_argument("--candidates", type=int, default=8, help="seeds searched (default %(default)s)")
    parser.add_argument("--probe-frames", type=int, default=16, help="probe length (default %(default)s)")
    add_render_benchmark_arguments(parser)
    args = parse_render_benchmark_arguments(parser, argv)

    import torch

    from pipelines.render import RenderSettings

    torch.set_num_threads(args.threads)
    plain = RenderSettings(steps=args.steps, device=args.device, dtype=args.dtype, crf=30, seed_candidates=1)
    search = replace(plain, seed_candidates=args.candidates, seed_probe_frames=args.probe_frames)
    with tempfile.TemporaryDirectory(prefix="lt-seeds-") as tmp:
        folder = Path(tmp)
        models, speeches = random_models_and_speeches(folder, args.codec, args.seconds, args.device)
        best = time_render_variants(args.face, speeches, {"plain": (models, plain), "search": (models, search)},
                                    folder, repeats=args.repeats, device=args.device)

    print(f"| speech | frames | plain s (baseline) | search s ({args.candidates} seeds × {args.probe_frames} frames) "
          f"| **ratio search / plain** |\n|---:|---:|---:|---:|---:|")
    for name in speeches:
        (base, frames), (searched, _) = best[name, "plain"], best[name, "search"]
        print(f"| {name} s | {frames} | {base:.1f} | {searched:.1f} | **{searched / base:.2f}x** |")
    print(f"\n{args.steps} sampler steps, {args.device} {args.dtype}, {args.threads} thread(s), best of "
          f"{args.repeats}, random tiny L2V/A2L, TAEF2, {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
