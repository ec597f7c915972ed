"""Shared by the render-cost benchmarks: their common options, and timing render variants in one process."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def add_render_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampler steps, repeats, threads, device/dtype, and the photo and TAEF2 codec from ../shared/data."""
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default %(default)s, the render's)")
    parser.add_argument("--repeats", type=int, default=2, help="renders per row; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--face", default=str(SHARED / "images" / "happy.png"), help="photo of a face")
    parser.add_argument("--codec", default=str(SHARED / "models" / "taesd"), help="TAEF2 folder")


def parse_render_benchmark_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing a face or codec that is not there (the defaults need ../shared/data)."""
    args = parser.parse_args(argv)
    for name in ("face", "codec"):
        if not Path(getattr(args, name)).exists():
            raise SystemExit(f"--{name} {getattr(args, name)}: not found (the default needs ../shared/data)")
    return args


def time_render_variants(face, speeches: dict[str, Path], variants: dict[str, tuple], folder: Path, *,
                         repeats: int, device: str) -> dict[tuple[str, str], tuple[float, int]]:
    """Best wall seconds and frame count of every (speech, variant): ``variants`` maps a name to
    ``(models, settings)``. The variants alternate within each repeat, so a machine whose load drifts hurts
    them alike; each keeps its fastest repeat."""
    import torch

    from pipelines.media import probe_media
    from pipelines.render import render_video

    best: dict[tuple[str, str], tuple[float, int]] = {}
    for repeat in range(repeats):
        for speech_name, speech in speeches.items():
            for name, (models, settings) in variants.items():
                out = folder / f"{speech_name}_{name}_{repeat}.mp4"
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                render_video(face, speech, models, out, settings)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                frames = probe_media(out).frame_count
                out.unlink()
                key = (speech_name, name)
                if key not in best or seconds < best[key][0]:
                    best[key] = (seconds, frames)
    return best


def random_models_and_speeches(folder: Path, codec: str, seconds: list[float], device: str):
    """Random tiny models (saved under ``folder``/models and loaded on ``device``) and one synthetic speech
    file per length, named by its length ("4", "16"), for the render-cost benchmarks."""
    from memory_flat import _write_models, _write_speech

    from pipelines.render import load_talking_head_models

    models_dir = folder / "models"
    models_dir.mkdir()
    _write_models(models_dir, Path(codec))
    models = load_talking_head_models(models_dir, codec=codec, device=device)
    speeches = {}
    for length in seconds:
        speeches[f"{length:g}"] = folder / f"speech_{length:g}.wav"
        _write_speech(speeches[f"{length:g}"], length)
    return models, speeches
