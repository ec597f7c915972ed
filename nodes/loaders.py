"""Model loaders: one node per checkpoint kind, listing only that kind's files in models/landmarktalk/.

Each returns a ``ModelPatcher`` around the engine's module (weights on the CPU until a node asks
ComfyUI to load it), so ComfyUI can offload it between prompts and on ``/free``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

import folder_paths
from comfy_api.latest import io

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.latents import face_autoencoder_codec, taef2_codec
from ._convert import CodecHandle, load_model_patcher, patch_module
from ..pipelines.render import SPEAKER_FILE
from ._types import MODEL_TYPES, LatentCodecType, SpeakerType
from .models_folder import FOLDER_NAME, list_model_files, resolve_model_file

__all__ = ["NODES", "ModelLoader", "loader_schema"]


def loader_schema(*, node_id: str, display_name: str, kind: str, description: str, made_by: str) -> io.Schema:
    """The schema every loader shares: a ``model_name`` list of ``kind`` checkpoints → that kind's socket."""
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category="LandmarkTalk/loaders",
        description=description,
        inputs=[
            io.Combo.Input(
                "model_name", options=list_model_files(kind),
                tooltip=f"A {kind} checkpoint (.safetensors) in models/{FOLDER_NAME}/, made by {made_by}. "
                        "Only files of this kind are listed; press R after copying one in.",
            ),
        ],
        outputs=[MODEL_TYPES[kind].Output("model", tooltip=f"The {kind} model, managed by ComfyUI's memory manager.")],
    )


def _file_fingerprint(model_name: str):
    # A checkpoint rewritten under the same name (a re-run of fit) must be loaded again.
    path = folder_paths.get_full_path(FOLDER_NAME, model_name)
    return (model_name, os.stat(path).st_mtime_ns) if path else model_name


class ModelLoader(io.ComfyNode):
    """Base of the loader nodes: subclasses set ``KIND`` and ``define_schema`` (through :func:`loader_schema`)."""

    KIND: ClassVar[str]

    @classmethod
    def fingerprint_inputs(cls, model_name):
        return _file_fingerprint(model_name)

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        return io.NodeOutput(load_model_patcher(model_name, cls.KIND))


class LandmarkTalkLoadA2L(ModelLoader):
    KIND = "a2l"

    @classmethod
    def define_schema(cls) -> io.Schema:
        schema = loader_schema(
            node_id="LandmarkTalkLoadA2L", display_name="Load A2L Model", kind="a2l",
            description="Load an audio-to-landmark model (A2L) fitted to one person, with the voice it was fitted on.",
            made_by="`python -m pipelines fit` or `train a2l`",
        )
        schema.outputs.append(SpeakerType.Output(
            "fitted_speaker", tooltip=f"The fitted person's voice ({SPEAKER_FILE} beside the checkpoint, written by fit); "
                                      "empty when there is none: use Speaker Embedding then."))
        return schema

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        speaker_path = Path(resolve_model_file(model_name)).with_name(SPEAKER_FILE)
        speaker = np.load(speaker_path).astype(np.float32) if speaker_path.is_file() else None
        return io.NodeOutput(load_model_patcher(model_name, cls.KIND), speaker)


class LandmarkTalkLoadL2V(ModelLoader):
    KIND = "l2v"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return loader_schema(
            node_id="LandmarkTalkLoadL2V", display_name="Load L2V Model", kind="l2v",
            description="Load a landmark-to-face latent diffusion model (L2V) fitted to one person.",
            made_by="`python -m pipelines fit` or `train l2v`",
        )


class LandmarkTalkLoadWav2Lip(ModelLoader):
    KIND = "wav2lip"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return loader_schema(
            node_id="LandmarkTalkLoadWav2Lip", display_name="Load Wav2Lip", kind="wav2lip",
            description="Load a Wav2Lip lip-sync generator (the official weights, converted once, or one trained by the pack).",
            made_by="`python -m pipelines convert wav2lip wav2lip_gan.pth OUT.safetensors` (official weights)",
        )


class LandmarkTalkLoadSOVQAE(ModelLoader):
    KIND = "sovqae"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return loader_schema(
            node_id="LandmarkTalkLoadSOVQAE", display_name="Load SOVQAE", kind="sovqae",
            description="Load a person-specific SOVQAE that restores detail in lip-sync output (LaDTalk).",
            made_by="`python -m pipelines train sovqae` on a clip of the person",
        )


# TAEF2's two weight files live in ComfyUI's vae_approx folder, beside the TAESD previews.
_TAEF2_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
TAEF2_OPTION = "taef2 (models/vae_approx)"


def _taef2_folder() -> str | None:
    paths = [folder_paths.get_full_path("vae_approx", name) for name in _TAEF2_FILES]
    return os.path.dirname(paths[0]) if all(paths) and os.path.dirname(paths[0]) == os.path.dirname(paths[1]) else None


class LandmarkTalkLoadLatentCodec(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = list_model_files("face_autoencoder") + ([TAEF2_OPTION] if _taef2_folder() else [])
        return io.Schema(
            node_id="LandmarkTalkLoadLatentCodec",
            display_name="Load Latent Codec",
            category="LandmarkTalk/loaders",
            description="Load the autoencoder whose latent space an L2V model works in (the pack's face autoencoder or TAEF2).",
            inputs=[
                io.Combo.Input(
                    "model_name", options=options,
                    tooltip=f"A face_autoencoder checkpoint in models/{FOLDER_NAME}/ (from `python -m pipelines fit` "
                            f"or `train face_autoencoder`), or TAEF2 when {' and '.join(_TAEF2_FILES)} are in "
                            "models/vae_approx/. It must be the codec the L2V model was trained with.",
                ),
            ],
            outputs=[LatentCodecType.Output("codec", tooltip="Encoder/decoder between face crops and latents.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name):
        return _file_fingerprint(model_name)

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        if model_name == TAEF2_OPTION:
            folder = _taef2_folder()
            if folder is None:
                raise LandmarkTalkError(f"model_name: put {' and '.join(_TAEF2_FILES)} in models/vae_approx/ and press R")
            codec = taef2_codec(folder)
            return io.NodeOutput(CodecHandle(codec, patch_module(codec.module)))
        patcher = load_model_patcher(model_name, "face_autoencoder")
        return io.NodeOutput(CodecHandle(face_autoencoder_codec(patcher.model), patcher))


NODES: list[type[io.ComfyNode]] = [LandmarkTalkLoadA2L, LandmarkTalkLoadL2V, LandmarkTalkLoadLatentCodec,
                                   LandmarkTalkLoadWav2Lip, LandmarkTalkLoadSOVQAE]
