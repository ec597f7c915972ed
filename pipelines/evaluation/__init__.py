"""Evaluation of a generated video against ground truth.

``evaluate_videos(pred, gt)`` scores PSNR, SSIM, LPIPS, tLP, Pixel-MSE and FID on the full frame and
on the face crop cut by the ground truth's landmarks, plus M-LMD/F-LMD, lip-opening ~ audio-energy
correlation and SyncNet's LSE-C/LSE-D; it can write a JSON summary and an HTML report.
``format_comparison`` tabulates several runs. Array-level metrics live in :mod:`.metrics`; the
networks (each used only when the user supplies its weights) in :mod:`.lpips`, :mod:`.fid`, :mod:`.syncnet`.
"""
from .report import format_comparison
from .videos import evaluate_videos

__all__ = ["evaluate_videos", "format_comparison"]
