"""Render memory against audio length: peak RSS of the whole CLI render for a short and a long speech track.

    python benchmarks/memory_flat.py                     # 1 vs 10 minutes (about an hour on 1 CPU thread)
    python benchmarks/memory_flat.py --short 0.2 --long 1 # quick look

The render streams: the speech is decoded to temporary files (16 kHz for the features, its own rate
for the muxer), audio features and A2L landmarks are made a window of output frames at a time, latents
and frames chunk by chunk, written to the encoder as they come; so peak memory should not move with the
length of the speech (the issue's target: 1 vs 10 minutes within 10 %). Each render runs in its own
Python process (``render`` of ``python -m pipelines``) and reports its own peak RSS (``ru_maxrss``); the
short render is the baseline, measured in the same run. Models are random ``tiny`` ones (the memory of
a render does not depend on what the weights learned), the face is a photo from
``../shared/data/images`` and the speech a synthetic voice-like signal, so nothing
person-specific is needed. Prints a Markdown table with the ratio long / short.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the pack's root is the import root

_CHILD = """
import json, resource, sys, time
from pipelines.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _write_models(folder: Path, codec_dir: Path | None = None) -> None:
    """Random tiny models; in ``codec_dir``'s TAEF2 latent space when given, else with a random face autoencoder."""
    import torch

    from pipelines.checkpoint import save_checkpoint
    from pipelines.latents import face_autoencoder_codec, load_latent_codec
    from pipelines.models.a2l import A2L, A2LConfig
    from pipelines.models.face_autoencoder import FACE_AUTOENCODER_PRESETS, FaceAutoencoder
    from pipelines.models.l2v import L2V_PRESETS, L2VDenoiser

    torch.manual_seed(0)
    if codec_dir is not None:
        codec = load_latent_codec(codec_dir)
    else:
        autoencoder = FaceAutoencoder(FACE_AUTOENCODER_PRESETS["cpu128"])
        save_checkpoint(autoencoder, folder / "face_autoencoder.safetensors")
        codec = face_autoencoder_codec(autoencoder)
    l2v = L2VDenoiser(replace(L2V_PRESETS["tiny"], latent_space=codec.name, latent_channels=codec.channels,
                              downscale=codec.downscale))
    save_checkpoint(l2v, folder / "l2v.safetensors")
    a2l = A2L(A2LConfig.preset("tiny", speaker_method="logmel"))
    save_checkpoint(a2l, folder / "a2l.safetensors")
    np.save(folder / "speaker.npy", np.zeros(a2l.config.speaker_dim, np.float32))


def _write_speech(path: Path, seconds: float, rate: int = 16000) -> None:
    """Syllable-rate bursts of a harmonic voice plus noise: loud and quiet parts like speech."""
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t) + 0.3 * np.sin(2 * np.pi * 0.7 * t), 0, None)
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700, 1100), 1))
    signal = 0.2 * envelope * voice + 0.01 * rng.standard_normal(len(t))
    soundfile.write(path, signal.astype(np.float32), rate, subtype="PCM_16")


def _render(models: Path, face: Path, speech: Path, out: Path, steps: int, codec: Path | None, threads: int,
            extra: list[str] = ()) -> dict:
    argv = ["--threads", str(threads), "render", "--face", str(face), "--audio", str(speech), "--models", str(models),
            "--out", str(out), "--steps", str(steps), "--crf", "30", *extra] + (["--codec", str(codec)] if codec else [])
    result = subprocess.run([sys.executable, "-c", _CHILD, *argv], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"render failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if figures["code"] != 0:
        raise SystemExit(f"render returned {figures['code']}:\n{result.stderr[-3000:]}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=float, default=1.0, help="baseline speech length, minutes")
    parser.add_argument("--long", type=float, default=10.0, help="long speech length, minutes")
    parser.add_argument("--face", default=str(SHARED / "images" / "happy.png"), help="photo of a face")
    parser.add_argument("--steps", type=int, default=1, help="sampler steps (memory does not depend on them)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each render (default 1)")
    parser.add_argument("--codec", default=str(SHARED / "models" / "taesd"),
                        help="TAEF2 folder (fast decoder); 'own' = a random face autoencoder instead")
    parser.add_argument("--face-video", default=None,
                        help="instead: render this video's own audio onto it twice, frames in memory vs kept on disk")
    args = parser.parse_args(argv)
    if args.face_video:
        return _face_video_table(args)
    if not Path(args.face).is_file():
        raise SystemExit(f"--face {args.face}: not found; give a photo of a face (the default needs ../shared/data)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="lt-memory-") as tmp:
        folder = Path(tmp)
        models = folder / "models"
        models.mkdir()
        codec = None if args.codec == "own" else Path(args.codec)
        _write_models(models, codec)
        for minutes in (args.short, args.long):
            speech = folder / f"speech_{minutes:g}min.wav"
            _write_speech(speech, minutes * 60)
            out = folder / f"out_{minutes:g}min.mp4"
            figures = _render(models, Path(args.face), speech, out, args.steps, codec, args.threads)
            from pipelines.media import probe_media

            info = probe_media(out)
            rows.append((minutes, info.frame_count, figures["seconds"], figures["max_rss_mib"]))
            out.unlink()

    (short_min, short_frames, short_s, short_rss), (long_min, long_frames, long_s, long_rss) = rows
    print("| speech | frames | wall s | fps | peak RSS MiB |\n|---|---:|---:|---:|---:|")
    for minutes, frames, seconds, rss in rows:
        print(f"| {minutes:g} min | {frames} | {seconds:.0f} | {frames / seconds:.1f} | {rss:.0f} |")
    print(f"| **ratio long / short** | {long_frames / short_frames:.1f}x | {long_s / short_s:.1f}x | "
          f"| **{long_rss / short_rss:.2f}x** |")
    print(f"\nface {args.face}, codec {args.codec}, {args.steps} sampler step(s), random tiny models, "
          f"{time.strftime('%Y-%m-%d')}")
    return 0


def _face_video_table(args) -> int:
    """Peak RSS of one render of a large face video with its frames in memory, then kept on disk."""
    from pipelines.media import probe_media

    video = Path(args.face_video)
    info = probe_media(video)
    decoded = info.frame_count * info.width * info.height * 3 / 2**20
    rows = []
    with tempfile.TemporaryDirectory(prefix="lt-memory-") as tmp:
        folder = Path(tmp)
        models = folder / "models"
        models.mkdir()
        codec = None if args.codec == "own" else Path(args.codec)
        _write_models(models, codec)
        for label, limit in (("frames in memory", 10**6), ("frames on disk", 0)):
            out = folder / f"out_{limit}.mp4"
            figures = _render(models, video, video, out, args.steps, codec, args.threads,
                              ["--video-in-memory-mb", str(limit)])
            rows.append((label, probe_media(out).frame_count, figures["seconds"], figures["max_rss_mib"]))
    print(f"{video.name}: {info.width}x{info.height}, {info.frame_count} frames, {decoded:.0f} MiB decoded\n")
    print("| face video | frames | wall s | peak RSS MiB |\n|---|---:|---:|---:|")
    for label, frames, seconds, rss in rows:
        print(f"| {label} | {frames} | {seconds:.0f} | {rss:.0f} |")
    print(f"| **ratio disk / memory** | | {rows[1][2] / rows[0][2]:.2f}x | **{rows[1][3] / rows[0][3]:.2f}x** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
