"""Person-specific SOVQAE check on one real clip: train on the first 80 %, restore the held-out last 20 %.

    python scripts/sovqae_holdout.py ../shared/data/clips/RD_Radio34_000.mp4 --out runs/sovqae_holdout

1. prepares the clip cache (``pipelines.cache.prepare_clip_cache``; when ``pipelines.face`` is not
   available, a stand-in: dlib 68-point landmarks + a similarity alignment on eyes and mouth);
2. trains a ``cpu128`` SOVQAE on the training frames with random lip-sync-like degradations;
3. on the held-out frames, damages each sharp crop with the fixed ``wav2lip_like`` recipe (and, as a
   degradation never seen in training, a 9-px horizontal motion blur), refines it, and compares with
   the truth: PSNR (whole crop and mouth box), LPIPS (only if the ``lpips`` package and its weights are
   installed), mouth sharpness (variance of the Laplacian in the mouth box) and codebook usage. An
   unsharp mask of the damaged input is the classical baseline.

Prints a Markdown report and writes ``report.json`` next to the checkpoint. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.cache import ClipCache, cache_dir_for, prepare_clip_cache, write_clip_cache  # noqa: E402
from pipelines.models.sovqae import SOVQAE, SOVQAE_PRESETS  # noqa: E402
from pipelines.refine import refine_frames, wav2lip_like  # noqa: E402
from pipelines.train import TrainConfig, train_model  # noqa: E402
from pipelines.train.sovqae_task import SOVQAETask  # noqa: E402
from pipelines.types import FaceTrack  # noqa: E402

logger = logging.getLogger("sovqae_holdout")

# Template positions (fractions of the crop side) for the stand-in alignment: eye centres and mouth centre.
_TEMPLATE = np.array([[0.35, 0.40], [0.65, 0.40], [0.50, 0.75]], np.float32)


def _prepare_with_dlib(clip: Path, root: Path, crop_size: int) -> ClipCache:
    """Stand-in for pipelines.face: dlib landmarks per frame, eyes+mouth similarity alignment, no smoothing."""
    import dlib
    import face_recognition_models

    from pipelines.media import read_audio, read_video

    frames, fps = read_video(clip)
    audio = read_audio(clip, sample_rate=16000, mono=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    landmarks = np.zeros((len(frames), 68, 2), np.float32)
    found = np.zeros(len(frames), bool)
    for t, frame in enumerate(frames):
        scale = 320 / max(frame.shape[:2])
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        scale = min(scale, 1.0)
        rects = detector(small, 1)
        if not rects:
            continue
        rect = max(rects, key=lambda r: r.width() * r.height())
        full = dlib.rectangle(int(rect.left() / scale), int(rect.top() / scale), int(rect.right() / scale),
                              int(rect.bottom() / scale))
        shape = predictor(frame, full)
        landmarks[t] = [(p.x, p.y) for p in shape.parts()]
        found[t] = True
    if not found.any():
        raise SystemExit(f"{clip}: dlib found no face")
    for t in np.flatnonzero(~found):  # fill misses with the nearest detected frame
        landmarks[t] = landmarks[np.flatnonzero(found)[np.abs(np.flatnonzero(found) - t).argmin()]]
    transforms = np.zeros((len(frames), 2, 3), np.float32)
    crops = np.zeros((len(frames), crop_size, crop_size, 3), np.uint8)
    for t, (frame, points) in enumerate(zip(frames, landmarks)):
        anchors = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[48:68].mean(0)])
        matrix, _ = cv2.estimateAffinePartial2D(anchors, _TEMPLATE * crop_size)
        transforms[t] = matrix
        crops[t] = cv2.warpAffine(frame, matrix, (crop_size, crop_size), flags=cv2.INTER_AREA,
                                  borderMode=cv2.BORDER_REFLECT)
    homogeneous = np.concatenate([landmarks, np.ones_like(landmarks[..., :1])], axis=-1)
    crop_landmarks = np.einsum("tij,tkj->tki", transforms, homogeneous).astype(np.float32)
    track = FaceTrack(landmarks=landmarks, confidence=found.astype(np.float32), transforms=transforms,
                      crop_size=crop_size, frame_size=frames.shape[1:3], fps=fps, filled=~found)
    logger.info("stand-in alignment: %d/%d frames detected by dlib", found.sum(), len(frames))
    return write_clip_cache(root, crops=crops, landmarks=crop_landmarks, track=track, audio=audio, fps=fps,
                            source=str(clip.resolve()), overwrite=True)


def _load_cache(clip: Path, cache_dir: Path, crop_size: int) -> tuple[ClipCache, str]:
    try:
        from pipelines.face import align_faces, track_face  # noqa: F401 - what prepare_clip_cache needs
    except ImportError:
        root = cache_dir / f"{clip.stem}-dlib-standin-{crop_size}"
        if (root / "meta.json").is_file():
            from pipelines.cache import load_clip_caches

            return load_clip_caches(root)[0], "stand-in (dlib landmarks, eyes+mouth similarity alignment; cached)"
        return _prepare_with_dlib(clip, root, crop_size), "stand-in (dlib landmarks, eyes+mouth similarity alignment)"
    cache = prepare_clip_cache(clip, cache_dir_for(clip, crop_size, cache_dir), crop_size=crop_size)
    return cache, "pipelines.cache.prepare_clip_cache"


def _resize(crops: np.ndarray, size: int) -> np.ndarray:
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def _laplacian_variance(crops: np.ndarray) -> float:
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for c in crops]))


def _mouth_boxes(landmarks: np.ndarray, scale: float, size: int) -> np.ndarray:
    mouth = landmarks[:, 48:68] * scale
    low, high = mouth.min(1), mouth.max(1)
    margin = 0.25 * (high - low)
    boxes = np.concatenate([low - margin, high + margin], axis=1).round().astype(int)
    return np.clip(boxes, 0, size)


def _cut(crops: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    return [c[y1:y2, x1:x2] for c, (x1, y1, x2, y2) in zip(crops, boxes)]


def _lpips(a: np.ndarray, b: np.ndarray) -> str:
    try:
        import lpips
    except ImportError:
        return "skipped (lpips not installed)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not weights.is_file():  # building LPIPS would download AlexNet; never download here
        return "skipped (AlexNet weights not present)"
    metric = lpips.LPIPS(net="alex", verbose=False)
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        return f"{float(metric(to_tensor(a), to_tensor(b)).mean()):.4f}"


def _motion_blur(crops: np.ndarray) -> np.ndarray:
    kernel = np.zeros((9, 9), np.float32)
    kernel[4, :] = 1 / 9
    return np.stack([cv2.filter2D(c, -1, kernel, borderType=cv2.BORDER_REFLECT) for c in crops])


def _unsharp(crops: np.ndarray) -> np.ndarray:
    out = []
    for c in crops:
        blurred = cv2.GaussianBlur(c, (0, 0), 1.5)
        out.append(cv2.addWeighted(c, 1.8, blurred, -0.8, 0))
    return np.stack(out)


def _codes_used(model: SOVQAE, crops: np.ndarray) -> float:
    model.eval()
    used = set()
    with torch.no_grad():
        for start in range(0, len(crops), 16):
            images = torch.from_numpy(crops[start:start + 16]).permute(0, 3, 1, 2).float() / 255
            used |= set(model.quantizer.codes_for(model.encode(images)).unique().tolist())
    return len(used) / model.config.codebook_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path, help="a talking-head clip of one person")
    parser.add_argument("--out", type=Path, default=Path("runs/sovqae_holdout"), help="folder for checkpoint + report")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the clip cache goes (default: --out/cache)")
    parser.add_argument("--preset", default="cpu128", choices=sorted(SOVQAE_PRESETS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    cache, how = _load_cache(args.clip, args.cache_dir or args.out / "cache", crop_size=256)
    prepared_s = time.perf_counter() - started
    config = SOVQAE_PRESETS[args.preset]
    model = SOVQAE(config)
    task = SOVQAETask([cache], args.holdout, config.image_size)
    checkpoint = args.out / f"sovqae_{args.preset}_{args.clip.stem}.safetensors"
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, ema_decay=0.0,
                               warmup_steps=20, val_every=max(1, args.steps // 4), log_every=10,
                               save_every=args.steps + 1, seed=args.seed, resume=False, overwrite=True)
    result = train_model(model.train(), task, train_config, checkpoint)
    trained_s = time.perf_counter() - started - prepared_s

    train_frames, val_frames = cache.train_val_frames(args.holdout)
    size = config.image_size
    truth = _resize(np.asarray(cache.crops()[val_frames.start:val_frames.stop]), size)
    mouth = _mouth_boxes(cache.landmarks()[val_frames.start:val_frames.stop], size / cache.crop_size, size)
    rows = {}
    for name, damaged in {
        "wav2lip_like (in training family)": wav2lip_like(torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255),
        "motion blur 9 px (unseen)": torch.from_numpy(_motion_blur(truth)).permute(0, 3, 1, 2).float() / 255,
    }.items():
        degraded = (damaged.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        refined = refine_frames(model, degraded, batch_size=16)
        sharpened = _unsharp(degraded)
        entry = {}
        for label, images in (("degraded input", degraded), ("unsharp-mask baseline", sharpened),
                              ("SOVQAE refined", refined)):
            mouth_truth, mouth_images = _cut(truth, mouth), _cut(images, mouth)
            entry[label] = {
                "psnr": _psnr(images, truth),
                "mouth_psnr": float(np.mean([_psnr(a, b) for a, b in zip(mouth_images, mouth_truth)])),
                "lpips": _lpips(images, truth),
                "mouth_laplacian_var": float(np.mean([cv2.Laplacian(cv2.cvtColor(m, cv2.COLOR_RGB2GRAY),
                                                                    cv2.CV_64F).var() for m in mouth_images])),
            }
        entry["truth"] = {"mouth_laplacian_var": float(np.mean([
            cv2.Laplacian(cv2.cvtColor(m, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for m in _cut(truth, mouth)]))}
        rows[name] = entry

    all_frames = _resize(np.asarray(cache.crops()), size)
    usage = {"train frames": _codes_used(model, all_frames[train_frames.start:train_frames.stop]),
             "held-out truth": _codes_used(model, truth)}
    total_s = time.perf_counter() - started
    report = {
        "clip": str(args.clip), "crops": how, "frames": cache.num_frames, "fps": cache.fps,
        "train_frames": len(train_frames), "heldout_frames": len(val_frames), "preset": args.preset,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()},
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "loss_first": result.history["loss"][0], "loss_last": result.history["loss"][-1],
        "val_loss": list(zip(result.history["val_step"], result.history["val_loss"])),
        "codebook_usage": usage, "metrics": rows,
        "seconds": {"prepare": prepared_s, "train": trained_s, "total": total_s},
        "threads": torch.get_num_threads(),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1))

    lines = [f"clip {args.clip.name}: {cache.num_frames} frames at {cache.fps:g} fps, crops by {how}",
             f"train {len(train_frames)} frames / held out {len(val_frames)}; {args.preset} "
             f"({sum(p.numel() for p in model.parameters()):,} params, {config.codebook_size} codes); "
             f"{args.steps} steps × {args.batch_size}; loss {report['loss_first']:.4f} → {report['loss_last']:.4f}",
             f"codebook usage: train {usage['train frames']:.0%}, held-out {usage['held-out truth']:.0%}", ""]
    for name, entry in rows.items():
        lines += [f"### {name}", "", "| | PSNR dB | mouth PSNR dB | LPIPS | mouth Laplacian var (truth "
                  f"{entry['truth']['mouth_laplacian_var']:.1f}) |", "|---|---|---|---|---|"]
        for label in ("degraded input", "unsharp-mask baseline", "SOVQAE refined"):
            e = entry[label]
            lines.append(f"| {label} | {e['psnr']:.2f} | {e['mouth_psnr']:.2f} | {e['lpips']} | "
                         f"{e['mouth_laplacian_var']:.1f} |")
        lines.append("")
    lines.append(f"wall time: prepare {prepared_s:.0f} s, train {trained_s:.0f} s, total {total_s:.0f} s "
                 f"({torch.get_num_threads()} threads)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
