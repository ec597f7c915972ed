"""The fit node: train a person's models on one clip of them, into models/landmarktalk/<name>/."""
from __future__ import annotations

import json
import os
import re

import comfy.model_management
import torch
from comfy_api.latest import io

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.fit import FIT_PRESETS, fit_person
from ..pipelines.holdout import evaluate_holdout
from ..pipelines.render import RENDER_CENTER_MOTION, RENDER_DENOISE, RENDER_MOTION_SCALE, SEED_SEARCH_CANDIDATES
from ._convert import NodeProgress, input_file_path, input_files
from ._types import SpeechEncoderType
from .models_folder import FOLDER_NAME, model_folder

__all__ = ["NODES"]


class LandmarkTalkFit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkFit",
            display_name="Fit Person Models",
            category="LandmarkTalk/loaders",
            description="Train the face autoencoder, A2L and L2V on one talking clip of a person (resumes if stopped).",
            inputs=[
                io.Combo.Input("clip", options=input_files(["video"]), upload=io.UploadType.video,
                               tooltip="A talking clip of the person with its sound (a minute or more is best)."),
                io.String.Input("name", default="person",
                                tooltip=f"Folder under models/{FOLDER_NAME}/ for the model files; files already there are kept."),
                io.Combo.Input("preset", options=list(FIT_PRESETS), default="tiny",
                               tooltip="tiny: 128² crops, CPU minutes per model; base: paper-like 256², for a GPU."),
                io.Float.Input("holdout", default=0.0, min=0.0, max=0.5, step=0.05,
                               tooltip="Keep this tail fraction of the clip unseen, then render and score it against the truth."),
                io.Int.Input("holdout_seeds", default=1, min=1, max=16,
                             tooltip="Score the hold-out this many times, each searching its own set of noise seeds; "
                                     "the report gives every figure's mean, spread and per-run values."),
                io.Int.Input("steps", default=0, min=0, max=1000000,
                             tooltip="Training steps for every model; 0 = the preset's."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Training seed."),
                SpeechEncoderType.Input("speech_encoder", optional=True,
                                        tooltip="Load Speech Encoder: fit A2L on its hidden states instead of log-mel "
                                                "(give the same one to Render Talking Video)."),
            ],
            outputs=[io.String.Output("record", tooltip="The fit record (JSON): files, timings, hold-out report.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, clip, name="person", preset="tiny", holdout=0.0, holdout_seeds=1, steps=0,
                seed=0, speech_encoder=None) -> io.NodeOutput:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise LandmarkTalkError(f"name: {name!r} is not a plain folder name; use letters, digits, '_', '-' or '.'")
        out_dir = os.path.join(model_folder(), name)
        comfy.model_management.unload_all_models()  # training picks its own device: give it the whole GPU
        comfy.model_management.soft_empty_cache()
        progress = NodeProgress()
        # ComfyUI runs nodes under torch.inference_mode(); training needs autograd back (as core's TrainLoraNode).
        with torch.inference_mode(False), torch.enable_grad():
            record = fit_person(input_file_path(clip, "clip"), out_dir, preset=preset, holdout=holdout,
                                steps=steps or None, seed=seed,
                                speech_encoder=speech_encoder.path if speech_encoder is not None else None,
                                progress=lambda model, step, total: progress(step, total))
        if holdout > 0:
            # Scored as Render Talking Video renders by default: with its seed search and sampling strength.
            record["holdout_report"] = str(evaluate_holdout(out_dir, seeds=holdout_seeds,
                                                            seed_candidates=SEED_SEARCH_CANDIDATES,
                                                            denoise=RENDER_DENOISE, motion_scale=RENDER_MOTION_SCALE,
                                                            center_motion=RENDER_CENTER_MOTION, progress=progress))
        trained = [f"{kind} {seconds:.0f} s" for kind, seconds in record["seconds"].items()] or ["nothing left to train"]
        summary = [f"models/{FOLDER_NAME}/{name}/", *trained, "press R to list them in the loaders"]
        return io.NodeOutput(json.dumps(record, indent=1), ui={"landmarktalk_summary": summary})


NODES = [LandmarkTalkFit]
