"""Evaluate node: VIDEO values in, the engine's metrics out (COMFYUI_DIR)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


def _video(images: torch.Tensor):
    from comfy_api.latest import InputImpl, Types

    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=Fraction(25)))


def test_noisier_video_scores_lower_psnr(shared_data, tmp_path):
    use_scratch_folders(tmp_path)
    frame = pack_module("pipelines.media").read_image(shared_data / "images" / "happy.png")
    truth = torch.from_numpy(np.repeat(frame[None], 8, axis=0)).float() / 255
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    node = pack_module("nodes.evaluate").LandmarkTalkEvaluate
    psnr = {}
    for level in (0.02, 0.1):
        out = node.execute(video=_video((truth + level * noise).clamp(0, 1)), ground_truth=_video(truth),
                           crop_size=64, max_frames=0, html_report=level == 0.1)
        (report,) = out.result
        assert "psnr" in report.lower() and out.ui["landmarktalk_summary"]
        psnr[level] = float(next(s for s in out.ui["landmarktalk_summary"] if s.startswith("psnr ")).split()[1])
    assert psnr[0.02] > psnr[0.1] + 6  # 5× the noise: about 14 dB lower
    reports = list((tmp_path / "output" / "landmarktalk_eval").glob("report_*/*.html"))
    assert reports, "html_report wrote no page"
