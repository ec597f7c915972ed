"""What the finer landmark image costs the L2V denoiser: time per training step and per sampling step.

    python benchmarks/landmark_raster_cost.py                  # the `small` preset with TAEF2 latents, 1 thread
    python benchmarks/landmark_raster_cost.py --device cuda --dtype bfloat16

The baseline is the `small` preset with its landmark image drawn at the latent side
(``landmark_raster_scale`` 1, 3 input channels); the other rows draw it at 2× and 4× the side (the preset's
default now) and pixel-unshuffle it onto the latent grid (12 and 48 input channels). Only the UNet's first
convolution and the rasteriser change, so the figures are random-weight models of TAEF2's latent shape
(32 channels, 16² at 128² crops). Variants alternate each repeat so drifting machine load hurts all alike;
each row reports its fastest repeat. Prints a Markdown table with ratios against the baseline.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the pack's root is the import root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4], help="raster scales (first = baseline)")
    parser.add_argument("--train-batch", type=int, default=8, help="frames per training step (the fit's)")
    parser.add_argument("--sample-batch", type=int, default=16, help="frames per sampling call (a render chunk)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from pipelines.models.l2v import L2V_PRESETS, L2VDenoiser, landmark_inputs

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = replace(L2V_PRESETS["small"], latent_channels=32, downscale=8, latent_space="taef2")
    rng = np.random.default_rng(0)
    points = 40 + rng.uniform(0, 48, (args.sample_batch, 68, 2))  # crop pixels at 128²
    models, inputs = {}, {}
    for scale in args.scales:
        config = replace(base, landmark_raster_scale=scale)
        torch.manual_seed(0)
        models[scale] = L2VDenoiser(config).to(device)
        inputs[scale] = landmark_inputs(points, config.image_size, config.landmark_image_size)

    def batch(scale: int, frames: int) -> dict:
        c, s = base.latent_channels, base.latent_size
        image, coords = inputs[scale]
        return dict(pose=torch.randn(frames, c, s, s, device=device),
                    identity=torch.randn(frames, c, s, s, device=device),
                    landmark_image=image[:frames].to(device), landmark_points=coords[:frames].to(device).float())

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16" else None

    def train_step(scale: int) -> None:
        model, frames = models[scale], args.train_batch
        x = torch.randn(frames, base.latent_channels, base.latent_size, base.latent_size, device=device)
        t = torch.randint(0, 1000, (frames,), device=device)
        with autocast or torch.enable_grad():
            loss = model(x, t, **batch(scale, frames)).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample_step(scale: int) -> None:
        frames = args.sample_batch
        x = torch.randn(frames, base.latent_channels, base.latent_size, base.latent_size, device=device)
        with autocast or torch.no_grad():
            models[scale](x, torch.full((frames,), 500, device=device), **batch(scale, frames))

    def timed(fn, scale: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(scale)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    best = {(kind, scale): float("inf") for kind in ("train", "sample") for scale in args.scales}
    for scale in args.scales:  # warm-up
        train_step(scale)
        sample_step(scale)
    for _ in range(args.repeats):
        for scale in args.scales:
            best["train", scale] = min(best["train", scale], timed(train_step, scale))
            best["sample", scale] = min(best["sample", scale], timed(sample_step, scale))

    baseline = args.scales[0]
    print(f"L2V `small`, TAEF2 latents {base.latent_channels}×{base.latent_size}², {args.device} {args.dtype}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print()
    print(f"| landmark raster | input channels | train step (batch {args.train_batch}) | ratio "
          f"| sampling step (batch {args.sample_batch}) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for scale in args.scales:
        side = base.latent_size * scale
        channels = models[scale].unet.config.in_channels
        train, sample = best["train", scale], best["sample", scale]
        print(f"| {side}² (scale {scale}) | {channels} | {train * 1000:.1f} ms | "
              f"{train / best['train', baseline]:.2f}× | {sample * 1000:.1f} ms | "
              f"{sample / best['sample', baseline]:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
