"""Evaluation node: score a generated video against its ground truth (the engine's evaluate command)."""
from __future__ import annotations

import math
import os
import tempfile

import folder_paths
from comfy_api.latest import io

from ..pipelines.evaluation import evaluate_videos, format_comparison
from ._convert import video_to_file
from .models_folder import FOLDER_NAME, model_folder

__all__ = ["NODES"]

_SHOWN = 4  # metrics on the node's summary line; the STRING output has them all


class LandmarkTalkEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkEvaluate",
            display_name="Evaluate Talking Video",
            category="LandmarkTalk/video",
            description="Score a generated video against the real one: PSNR, SSIM, LPIPS, landmark distance, lip-sync.",
            inputs=[
                io.Video.Input("video", tooltip="The generated video (e.g. Create Video's output)."),
                io.Video.Input("ground_truth", tooltip="The real video of the same speech (e.g. a held-out part of the clip)."),
                io.Int.Input("crop_size", default=256, min=16, max=1024, step=16,
                             tooltip="Side of the aligned face crop the face metrics are computed on."),
                io.Int.Input("max_frames", default=0, min=0, max=100000,
                             tooltip="Score only the first n frames (0 = all overlapping frames)."),
                io.Boolean.Input("html_report", default=False,
                                 tooltip="Also write an HTML report with per-frame plots to output/landmarktalk_eval/."),
            ],
            outputs=[io.String.Output("report", tooltip="The metrics as a text table. LPIPS, FID and LSE-C/D need "
                                                        f"their network weights in models/{FOLDER_NAME}/ and are skipped without.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video, ground_truth, crop_size=256, max_frames=0, html_report=False) -> io.NodeOutput:
        report_dir = None
        if html_report:
            folder, name, counter, _, _ = folder_paths.get_save_image_path("landmarktalk_eval/report", folder_paths.get_output_directory())
            report_dir = os.path.join(folder, f"{name}_{counter:05}")
        with tempfile.TemporaryDirectory(dir=folder_paths.get_temp_directory()) as scratch:
            # Metric networks (LPIPS, FID, SyncNet) are used when their weights are in models/landmarktalk/.
            weights = model_folder()
            result = evaluate_videos(video_to_file(video, scratch, "pred"), video_to_file(ground_truth, scratch, "gt"),
                                     report_dir=report_dir, crop_size=crop_size, max_frames=max_frames or None,
                                     lpips_weights=weights, fid_weights=weights, syncnet_weights=weights)
        shown = [f"{k} {v:.4g}" for k, v in result["metrics"].items() if isinstance(v, float) and math.isfinite(v)]
        return io.NodeOutput(format_comparison([result]), ui={"landmarktalk_summary": shown[:_SHOWN]})


NODES = [LandmarkTalkEvaluate]
