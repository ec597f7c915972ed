"""How far M-LMD moves when nothing about the mouth is wrong, only its sharpness: the floor of a hold-out score.

    python scripts/mlmd_floor.py ../shared/data/clips/vretalking_face_1.mp4 --codec ../shared/data/models/taesd

For the held-out tail of a clip (the last ``--holdout`` of its frames, as ``fit --holdout`` splits it) the
true face crops are (a) passed through the codec's encoder and decoder and (b) resampled down to a few
sizes and back up, the lower face is pasted back as a render is, and the result is scored against the
untouched tail with the hold-out's metric (mouth landmarks re-detected in 256² crops). Both keep every
lip exactly where it was, so what they score is the landmark detector's reaction to softness: a render
that is as soft as (b) at some size cannot score much below that row, however right its lips are.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a talking clip")
    parser.add_argument("--codec", required=True, help="a face autoencoder .safetensors or a TAEF2 folder")
    parser.add_argument("--crop-size", type=int, default=128, help="crop side the codec works at (the fit's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 48, 32], help="resample the crops to these")
    parser.add_argument("--holdout", type=float, default=0.2, help="tail fraction scored")
    parser.add_argument("--cache-dir", default=None, help="where the clip is prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    import torch

    from pipelines.cache import load_clip_caches
    from pipelines.evaluation import evaluate_videos
    from pipelines.face import align_faces, paste_faces
    from pipelines.latents import load_latent_codec
    from pipelines.media import read_video, write_video
    from pipelines.render import _select_track, _to_model_images

    torch.set_num_threads(args.threads)
    frames, fps = read_video(args.clip)
    cut = len(frames) - int(round(len(frames) * args.holdout))
    [cache] = load_clip_caches(args.clip, crop_size=args.crop_size, cache_dir=args.cache_dir)
    track = _select_track(cache.track(), np.arange(cut, len(frames)))
    tail, size = frames[cut:], args.crop_size
    crops = align_faces(tail, track, size)
    codec = load_latent_codec(args.codec)
    with torch.no_grad():
        variants = {f"codec round trip ({codec.name})": codec.decode_frames(codec.encode(_to_model_images(crops, "cpu")))}
    for side in args.sizes:
        variants[f"resampled {size}² → {side}² → {size}²"] = np.stack([
            cv2.resize(cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA), (size, size),
                       interpolation=cv2.INTER_CUBIC) for c in crops])
    print(f"{Path(args.clip).name}: {len(tail)} held-out frames, {size}² crops, lower face pasted back\n")
    print("| truth crops made | face PSNR dB | M-LMD | F-LMD |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="lt-floor-") as tmp:
        truth = Path(tmp) / "truth.mp4"
        write_video(truth, tail, fps=fps)
        for name, made in variants.items():
            path = Path(tmp) / "made.mp4"
            write_video(path, paste_faces(tail, made, track, region="lower"), fps=fps, overwrite=True)
            m = evaluate_videos(path, truth, crop_size=256)["metrics"]
            print(f"| {name} | {m['face_psnr']:.2f} | {m['m_lmd']:.2f} | {m['f_lmd']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
