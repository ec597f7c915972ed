"""``python -m pipelines evaluate``: score a generated video against ground truth, or compare saved runs.

    python -m pipelines evaluate --pred OUT.mp4 --gt GT.mp4 [--report DIR] [--json OUT.json]
    python -m pipelines evaluate --compare A.json B.json ...
    python -m pipelines evaluate --convert-lpips alexnet-owt-7be5be79.pth alex.pth lpips_alex.safetensors
"""
from __future__ import annotations

import argparse
import logging

from .errors import LandmarkTalkError

__all__ = ["add_evaluate_command"]

logger = logging.getLogger(__name__)


def _run_evaluate(args: argparse.Namespace) -> int:
    if args.convert_lpips:
        from .evaluation.lpips import convert_lpips_weights

        convert_lpips_weights(*args.convert_lpips)
        return 0
    from .evaluation import evaluate_videos, format_comparison

    if args.compare:
        print(format_comparison(args.compare))
        return 0
    if not (args.pred and args.gt):
        raise LandmarkTalkError("evaluate: --pred needs --gt, the ground-truth video to compare against")
    result = evaluate_videos(
        args.pred, args.gt, report_dir=args.report, json_path=args.json, crop_size=args.crop_size,
        max_frames=args.max_frames, lpips_weights=args.lpips or args.models, fid_weights=args.fid or args.models,
        syncnet_weights=args.syncnet or args.models,
        landmark_fn=None if args.no_landmarks else "auto", audio=args.audio, label=args.label, device=args.device,
    )
    print(format_comparison([result]))
    for name, reason in result["skipped"].items():
        print(f"not computed: {name}: {reason}")
    return 0


def add_evaluate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM/LPIPS/tLP/Pixel-MSE/FID/LMD/LSE of a generated video against ground truth",
        description="Score --pred against --gt (both read at gt's frame rate, over their overlap) on the full "
        "frame and on the face crop cut by gt's landmarks; or print a table across saved runs (--compare).",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pred", help="the generated video")
    mode.add_argument("--compare", nargs="+", metavar="JSON", help="evaluation JSON files to tabulate side by side")
    mode.add_argument("--convert-lpips", nargs=3, metavar=("ALEXNET_PTH", "HEADS_PTH", "OUT"),
                      help="convert torchvision's alexnet-owt-7be5be79.pth + LPIPS v0.1 alex.pth to one .safetensors")
    parser.add_argument("--gt", help="the ground-truth video")
    parser.add_argument("--json", help="write the summary metrics to this JSON file")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report (plots, table, sample frames) here")
    parser.add_argument("--label", help="the run's name in tables (default: pred's file name)")
    parser.add_argument("--models", default="models/landmarktalk",
                        help="folder searched for LPIPS, FID Inception and SyncNet weights; metrics whose weights are "
                        "absent are skipped (default %(default)s, relative to the working folder)")
    parser.add_argument("--lpips", help="LPIPS weights: lpips_alex.safetensors (overrides --models)")
    parser.add_argument("--fid",
                        help="FID Inception weights: pt_inception-2015-12-05-6726825d.pth (overrides --models)")
    parser.add_argument("--syncnet", help="SyncNet weights for LSE-C/D: syncnet_v2.model (overrides --models)")
    parser.add_argument("--audio", help="speech the lips should follow (default: pred's audio, else gt's)")
    parser.add_argument("--crop-size", type=int, default=256, help="face crop side in pixels (default %(default)s)")
    parser.add_argument("--max-frames", type=int, help="compare at most this many frames")
    parser.add_argument("--no-landmarks", action="store_true", help="skip face tracking (no face-crop or LMD metrics)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for the networks, e.g. cuda (default %(default)s)")
    parser.set_defaults(func=_run_evaluate)
