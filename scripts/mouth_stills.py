"""Mouth-only side-by-side stills of a hold-out run, for docs/ (the lips, not the person).

    python scripts/mouth_stills.py l2v runs/rd34/holdout --out docs/images/stills_l2v_rd34.png
    python scripts/mouth_stills.py l2v runs/rd34/holdout --refined runs/rd34/holdout_refined --out X.png
    python scripts/mouth_stills.py sovqae CLIP --sovqae runs/sovqae/model.safetensors --cache-dir DIR --out X.png

``l2v``: reads ``truth.mp4`` and the renders of a ``fit --holdout`` run (``ours``, ``gt_landmarks``,
``still``), finds the mouth in the truth's frames, and cuts the same box from every video at a few frames;
``--refined`` adds the ``ours`` render of a ``fit --holdout --refiner`` run (``holdout_refined/``).
``sovqae``: the clip's held-out crops, damaged with ``pipelines.refine.wav2lip_like``, refined by the given
SOVQAE, beside the truth. Each row is one frame, each column one video; only the box around landmarks
48–67 (plus a margin) is kept, so no face is shown whole.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the pack's root is the import root

from pipelines.errors import LandmarkTalkError  # noqa: E402

_CELL = (112, 72)  # width, height of one mouth cell
_MARGIN = 0.35


def _mouth_box(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    mouth = points[48:68]
    low, high = mouth.min(0), mouth.max(0)
    centre, half = (low + high) / 2, (high - low) / 2 * (1 + _MARGIN)
    half = np.maximum(half, [half[1] * 1.5, half[0] / 1.5])  # keep the cell's 3:2 aspect
    x1, y1 = np.floor(centre - half).astype(int)
    x2, y2 = np.ceil(centre + half).astype(int)
    return max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)


def _cell(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return cv2.resize(image[y1:y2, x1:x2], _CELL, interpolation=cv2.INTER_AREA)


def _label(cell: np.ndarray, text: str) -> np.ndarray:
    band = np.full((18, cell.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, cell], axis=0)


def _grid(columns: dict[str, list[np.ndarray]]) -> np.ndarray:
    names = list(columns)
    rows = [np.concatenate([columns[n][r] for n in names], axis=1) for r in range(len(columns[names[0]]))]
    header = np.concatenate([_label(np.zeros((0, _CELL[0], 3), np.uint8), n) for n in names], axis=1)
    return np.concatenate([header] + rows, axis=0)


def l2v_stills(holdout: Path, frames: list[int], refined: Path | None = None) -> np.ndarray:
    from pipelines.face import track_face
    from pipelines.media import read_video

    sources = {"truth": holdout / "truth.mp4", "ours (A2L)": holdout / "ours.mp4"}
    if refined is not None:
        sources["ours + SOVQAE"] = refined / "ours.mp4"
    sources.update({"true landmarks": holdout / "gt_landmarks.mp4", "still": holdout / "still.mp4"})
    videos = {column: read_video(path)[0] for column, path in sources.items()}
    truth = videos["truth"]
    track = track_face(truth, fps=25.0, crop_size=256)
    height, width = truth.shape[1:3]
    columns: dict[str, list[np.ndarray]] = {column: [] for column in videos}
    for index in frames:
        box = _mouth_box(track.landmarks[index], width, height)
        for column, video in videos.items():
            columns[column].append(_cell(video[index], box))
    return _grid(columns)


def sovqae_stills(clip: Path, sovqae: Path, cache_dir: Path | None, frames: list[int], holdout: float) -> np.ndarray:
    import torch

    from pipelines.cache import load_clip_caches
    from pipelines.checkpoint import load_checkpoint
    from pipelines.refine import refine_frames, wav2lip_like

    model = load_checkpoint(sovqae, "sovqae")
    size = model.config.image_size
    [cache] = load_clip_caches(clip, crop_size=256, cache_dir=cache_dir)
    _, held = cache.train_val_frames(holdout)
    picks = [held[i] for i in frames]
    crops = np.stack([cv2.resize(cache.crops()[i], (size, size), interpolation=cv2.INTER_AREA) for i in picks])
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    damaged = (wav2lip_like(images).permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    refined = refine_frames(model, damaged)
    points = cache.landmarks()[picks] * (size / cache.crop_size)
    columns: dict[str, list[np.ndarray]] = {"damaged": [], "SOVQAE": [], "truth": []}
    for row, pts in enumerate(points):
        box = _mouth_box(pts, size, size)
        for column, source in zip(columns, (damaged, refined, crops)):
            columns[column].append(_cell(source[row], box))
    return _grid(columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["l2v", "sovqae"])
    parser.add_argument("source", type=Path, help="l2v: a holdout folder; sovqae: the clip")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (never overwritten)")
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 14, 24, 34], help="hold-out frame indices")
    parser.add_argument("--sovqae", type=Path, help="sovqae: the refiner checkpoint")
    parser.add_argument("--cache-dir", type=Path, default=None, help="sovqae: where the clip cache is")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--refined", type=Path, default=None,
                        help="l2v: a holdout_refined folder (fit --holdout --refiner) to add as a column")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists; choose another name")
    if args.kind == "l2v":
        grid = l2v_stills(args.source, args.frames, args.refined)
    else:
        if args.sovqae is None:
            raise LandmarkTalkError("sovqae: give --sovqae CHECKPOINT")
        grid = sovqae_stills(args.source, args.sovqae, args.cache_dir, args.frames, args.holdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temp = args.out.with_suffix(".tmp.png")
    cv2.imwrite(str(temp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    temp.replace(args.out)
    print(f"wrote {args.out} ({grid.shape[1]}×{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
