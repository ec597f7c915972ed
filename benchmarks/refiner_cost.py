"""What the SOVQAE refiner adds to an L2V render: wall time per frame with and without it, same process.

    python benchmarks/refiner_cost.py                 # 8 s of speech, 20 sampler steps, 1 thread
    python benchmarks/refiner_cost.py --device cuda --dtype bfloat16

The baseline is the plain render (A2L → L2V → decode → paste-back → encode); the other row runs the
person's SOVQAE over every decoded crop before paste-back (``render --refiner``). Both render the same photo
and speech with the same random tiny models (speed does not depend on what the weights learned), the
``cpu128`` SOVQAE the ``tiny`` fit trains and the TAEF2 codec from ``../shared/data/models/taesd``. The
renders alternate (plain, refined, plain, refined, …) so a machine whose load drifts hurts both alike; each
row reports its fastest repeat. Prints a Markdown table with the ratio refined / plain.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the pack's root is the import root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_flat import _write_models, _write_speech  # noqa: E402  (one place makes the random models)
from render_timing import (  # noqa: E402
    add_render_benchmark_arguments, parse_render_benchmark_arguments, time_render_variants,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="speech length (default %(default)s)")
    add_render_benchmark_arguments(parser)
    args = parse_render_benchmark_arguments(parser, argv)

    import torch

    from pipelines.checkpoint import save_checkpoint
    from pipelines.models.sovqae import SOVQAE, SOVQAE_PRESETS
    from pipelines.render import RenderSettings, load_talking_head_models

    torch.set_num_threads(args.threads)
    settings = RenderSettings(steps=args.steps, device=args.device, dtype=args.dtype, crf=30)
    with tempfile.TemporaryDirectory(prefix="lt-refiner-") as tmp:
        folder = Path(tmp)
        models_dir = folder / "models"
        models_dir.mkdir()
        _write_models(models_dir, Path(args.codec))
        torch.manual_seed(0)
        save_checkpoint(SOVQAE(SOVQAE_PRESETS["cpu128"]), folder / "sovqae.safetensors")
        speech = folder / "speech.wav"
        _write_speech(speech, args.seconds)
        models = {
            "plain": load_talking_head_models(models_dir, codec=args.codec, device=args.device),
            "refined": load_talking_head_models(models_dir, codec=args.codec, refiner=folder / "sovqae.safetensors",
                                                device=args.device),
        }
        variants = {name: (loaded, settings) for name, loaded in models.items()}
        best = time_render_variants(args.face, {"speech": speech}, variants, folder, repeats=args.repeats,
                                    device=args.device)

    (plain, frames), (refined, _) = best["speech", "plain"], best["speech", "refined"]
    print("| render | frames | wall s (best of %d) | ms / frame |\n|---|---:|---:|---:|" % args.repeats)
    for name, seconds in (("plain (baseline)", plain), ("+ SOVQAE refiner", refined)):
        print(f"| {name} | {frames} | {seconds:.1f} | {1000 * seconds / frames:.0f} |")
    print(f"| **ratio refined / plain** | | **{refined / plain:.2f}x** | "
          f"{1000 * (refined - plain) / frames:+.0f} |")
    print(f"\n{args.seconds:g} s speech, {args.steps} sampler steps, {args.device} {args.dtype}, "
          f"{args.threads} thread(s), random tiny L2V/A2L + cpu128 SOVQAE, TAEF2, {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
