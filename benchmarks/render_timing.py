"""Shared by the render-cost benchmarks: time render variants against each other in one process."""
from __future__ import annotations

import time
from pathlib import Path


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
