"""Write one tracking overlay per clip: the head pixelated beyond recognition, landmarks and crop box on top.

    python scripts/make_overlays.py                         # ../shared/data/clips → docs/images/overlay_*.png

The clips show real people, so everything inside the aligned crop square (the whole head) is replaced
by a coarse mosaic of at most ~10 blocks across the face before anything is drawn. What remains visible
is what the images are for: the smoothed 68 landmarks of the middle frame, the trail of the nose tip
over the whole clip, and the aligned crop square (frame → crop transform, drawn through its inverse).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.face import load_landmark_detector, track_face  # noqa: E402
from pipelines.face._geometry import GROUPS, invert_affine  # noqa: E402
from pipelines.media import probe_media, read_video_frames  # noqa: E402

_OUTPUT_SIDE = 512


def _pixelate_head(frame: np.ndarray, square: np.ndarray, face_width: float) -> np.ndarray:
    """Mosaic over the crop square, blocks ≥ 16 px and ≥ a tenth of the face width."""
    block = int(max(16, round(face_width / 10)))
    height, width = frame.shape[:2]
    small = cv2.resize(frame, (max(1, width // block), max(1, height // block)), interpolation=cv2.INTER_AREA)
    mosaic = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    region = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(region, np.rint(square).astype(np.int32), 255)
    region = cv2.dilate(region, np.ones((block, block), np.uint8))  # whole blocks at the square's edge
    out = frame.copy()
    out[region > 0] = mosaic[region > 0]
    return out


def _draw_overlay(frame: np.ndarray, track, index: int) -> np.ndarray:
    size = track.crop_size
    to_frame = invert_affine(track.transforms[index].astype(np.float64))
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    square = corners @ to_frame[:, :2].T + to_frame[:, 2]
    points = track.landmarks[index]
    face_width = float(np.linalg.norm(points[16] - points[0]))
    image = _pixelate_head(frame, square, face_width)
    scale = _OUTPUT_SIDE / max(image.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    shift = 4  # sub-pixel drawing

    def fixed(p):
        return np.rint(np.asarray(p) * scale * (1 << shift)).astype(np.int32)

    cv2.polylines(image, [fixed(square)], True, (255, 220, 0), 2, cv2.LINE_AA, shift)
    cv2.polylines(image, [fixed(track.landmarks[:, 30])], False, (0, 160, 255), 1, cv2.LINE_AA, shift)
    for first, last, closed in GROUPS.values():
        cv2.polylines(image, [fixed(points[first:last + 1])], closed, (0, 255, 0), 1, cv2.LINE_AA, shift)
    for p in fixed(points):
        cv2.circle(image, tuple(int(v) for v in p), 2 << shift, (255, 0, 0), -1, cv2.LINE_AA, shift)
    return image


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "clips",
                        help="a clip or a folder of clips (default: ../shared/data/clips)")
    parser.add_argument("--out", type=Path, default=root / "docs" / "images", help="output folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    clips = [args.data] if args.data.is_file() else sorted(args.data.glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.data}; pass --data", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    detector = load_landmark_detector("dlib")
    for clip in clips:
        track = track_face(read_video_frames(clip), probe_media(clip).fps, detector=detector, source=str(clip))
        middle = len(track) // 2
        frame = next(read_video_frames(clip, max_frames=middle + 1, chunk_frames=middle + 1))[middle]
        overlay = _draw_overlay(frame, track, middle)
        path = args.out / f"overlay_{clip.stem}.png"
        cv2.imwrite(str(path), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        print(f"{path}: frame {middle} of {len(track)}, {int(track.filled.sum())} filled, "
              f"mean confidence {track.confidence.mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
