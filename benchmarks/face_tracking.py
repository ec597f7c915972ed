"""Face tracking speed on one CPU core: detection on every frame vs detection every k frames + tracking.

    python benchmarks/face_tracking.py                      # ../shared/data/clips, 512² frames, k = 5
    python benchmarks/face_tracking.py --size 256 --detect-every 10 --repeats 3

Frames are decoded and resized to ``--size``² before timing; the timed part is ``track_face`` alone
(detection, landmark fitting, optical flow, gap filling, smoothing, transforms). Both modes run in the
same process on the same frames, each the best of ``--repeats`` runs, and the table gives their ratio.
OpenCV and torch use one thread and the process is pinned to one core (where the OS allows).
"""
from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy/torch load their thread pools

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.face import load_landmark_detector, track_face  # noqa: E402
from pipelines.media import read_video  # noqa: E402


def _one_core() -> str:
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def _best_fps(frames: np.ndarray, fps: float, detector, detect_every: int, repeats: int) -> tuple[float, float]:
    """Frames per second by wall clock and by this process's CPU time (fastest run of each)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        track_face(frames, fps, detector=detector, detect_every=detect_every)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return len(frames) / wall, len(frames) / cpu


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "clips",
                        help="a clip or a folder of clips (default: ../shared/data/clips)")
    parser.add_argument("--size", type=int, default=512, help="frames are resized to SIZE×SIZE (default 512)")
    parser.add_argument("--detect-every", type=int, default=5, help="k for the tracking mode (default 5)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode; the fastest counts (default 2)")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip (default: all)")
    args = parser.parse_args()

    clips = [args.data] if args.data.is_file() else sorted(args.data.glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.data}; pass --data", file=sys.stderr)
        return 1
    pinning = _one_core()
    detector = load_landmark_detector("dlib")
    print(f"face tracking, dlib backend, {args.size}x{args.size} frames, 1 thread, {pinning}, "
          f"best of {args.repeats}\n")
    # Wall-clock fps is what a user sees on an idle core; CPU-time fps is steadier on a shared machine.
    print(f"| clip | frames | every-frame detection, fps wall (cpu) | detect every {args.detect_every} + "
          f"tracking, fps wall (cpu) | ratio wall (cpu) |")
    print("|---|---:|---:|---:|---:|")
    seconds = np.zeros((2, 2))  # mode × (wall, cpu)
    frame_total = 0
    for clip in clips:
        frames, fps = read_video(clip, max_frames=args.max_frames)
        frames = np.stack([cv2.resize(f, (args.size, args.size), interpolation=cv2.INTER_AREA) for f in frames])
        rates = np.array([_best_fps(frames, fps, detector, k, args.repeats) for k in (1, args.detect_every)])
        seconds += len(frames) / rates
        frame_total += len(frames)
        print(_row(clip.name, len(frames), rates))
    print(_row("**all**", frame_total, frame_total / seconds))
    return 0


def _row(name: str, frames: int, rates: np.ndarray) -> str:
    (every, every_cpu), (tracked, tracked_cpu) = rates
    return (f"| {name} | {frames} | {every:.1f} ({every_cpu:.1f}) | {tracked:.1f} ({tracked_cpu:.1f}) | "
            f"{tracked / every:.2f}x ({tracked_cpu / every_cpu:.2f}x) |")


if __name__ == "__main__":
    sys.exit(main())
