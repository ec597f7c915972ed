"""DAE-Talker nodes: load the diffusion autoencoder and speech2latent, encode crops, speech+pose → z_sem, decode.

Values on its sockets (declared in nodes/_types.py): ``LT_DAE`` / ``LT_SPEECH2LATENT`` carry a ``ModelPatcher`` around
:class:`pipelines.models.dae.DiffusionAutoencoder` / :class:`~pipelines.models.dae.SpeechToLatent`;
``LT_SEMANTIC_LATENTS`` a float32 CPU tensor [T, latent_dim] of ``z_sem``, one row per frame.
"""
from __future__ import annotations

import numpy as np
from comfy_api.latest import io

from ..pipelines.dae import (decode_semantic_latents, encode_semantic_latents, estimate_head_pose,
                             predict_semantic_latents)
from ..pipelines.dae import pose_curve as parse_pose_curve  # the node input `pose_curve` shadows the name
from ..pipelines.face import crop_landmarks
from ..pipelines.types import frame_count_for
from ._convert import NodeProgress, audio_from_comfy, frames_to_image, image_to_frames, models_on_device
from ._types import DAEModelType, FaceTrackType, SemanticLatentsType, Speech2LatentModelType
from .loaders import ModelLoader, loader_schema

__all__ = ["NODES"]

_POSE_HELP = ("Head pose in degrees, one line per angle: 'yaw: sin 8 2.0' (amplitude, period in seconds, optional "
              "offset) or 'yaw: 0, 10, -5' (key values spread over the speech). Angles not given come from the "
              "driving face track, else from the fitted clip's average pose. Positive yaw turns the nose to the image's right.")


class LandmarkTalkLoadDAE(ModelLoader):
    KIND = "dae"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return loader_schema(
            node_id="LandmarkTalkLoadDAE", display_name="Load DAE", kind="dae",
            description="Load a DAE-Talker diffusion autoencoder (face crop ↔ semantic latent) fitted to one person.",
            made_by="`python -m pipelines fit CLIP --path dae` or `train dae`",
        )


class LandmarkTalkLoadSpeech2Latent(ModelLoader):
    KIND = "speech2latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return loader_schema(
            node_id="LandmarkTalkLoadSpeech2Latent", display_name="Load Speech2Latent", kind="speech2latent",
            description="Load DAE-Talker's Conformer that turns speech and head pose into semantic latents.",
            made_by="`python -m pipelines fit CLIP --path dae` or `train speech2latent`",
        )


class LandmarkTalkEncodeSemanticLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkEncodeSemanticLatents",
            display_name="Encode Semantic Latents",
            category="LandmarkTalk/sampling",
            description="Encode aligned face crops to the DAE's semantic latents (z_sem), one per frame.",
            inputs=[
                DAEModelType.Input("dae", tooltip="The person's DAE (Load DAE)."),
                io.Image.Input("crops", tooltip="Aligned face crops (Align Faces), any size: resized to the DAE's."),
            ],
            outputs=[SemanticLatentsType.Output("z_sem", tooltip="Semantic latents [frames, dims].")],
        )

    @classmethod
    def execute(cls, dae, crops) -> io.NodeOutput:
        device = models_on_device(dae)
        return io.NodeOutput(encode_semantic_latents(dae.model, image_to_frames(crops, "crops"), device=device))


class LandmarkTalkSpeechToLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkSpeechToLatents",
            display_name="Speech To Latents",
            category="LandmarkTalk/audio",
            description="Predict the DAE's semantic latents from speech and a head-pose sequence (DAE-Talker's speech2latent).",
            inputs=[
                Speech2LatentModelType.Input("speech2latent", tooltip="The person's speech2latent model."),
                io.Audio.Input("audio", tooltip="The speech; the output has one latent per frame of it."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the output video."),
                FaceTrackType.Input("driving_face_track", optional=True,
                                    tooltip="Track Face on a driving video: its head pose (yaw, pitch, roll) drives the "
                                            "output; held on its last frame when shorter than the speech."),
                io.String.Input("pose_curve", default="", multiline=True, tooltip=_POSE_HELP),
            ],
            outputs=[SemanticLatentsType.Output("z_sem", tooltip="Semantic latents [frames, dims] for DAE Decode.")],
        )

    @classmethod
    def execute(cls, speech2latent, audio, fps=25.0, driving_face_track=None, pose_curve="") -> io.NodeOutput:
        speech = audio_from_comfy(audio)
        frames = frame_count_for(speech.duration_s, fps)
        if driving_face_track is not None:
            base = estimate_head_pose(crop_landmarks(driving_face_track).points)
        else:  # the fitted clip's average pose
            base = speech2latent.model.pose_mean.detach().cpu().numpy()[None].repeat(frames, axis=0)
        pose = parse_pose_curve(pose_curve, frames, fps, base=base)
        device = models_on_device(speech2latent)
        return io.NodeOutput(predict_semantic_latents(speech2latent.model, speech, fps, pose, device=device).cpu())


class LandmarkTalkDAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkDAEDecode",
            display_name="DAE Decode",
            category="LandmarkTalk/sampling",
            description="Decode semantic latents to face crops with deterministic DDIM, every frame from the reference's inverted noise.",
            inputs=[
                DAEModelType.Input("dae", tooltip="The person's DAE (Load DAE)."),
                SemanticLatentsType.Input("z_sem", tooltip="From Speech To Latents or Encode Semantic Latents."),
                io.Image.Input("reference", tooltip="An aligned face crop of the person (the first image is used); its "
                                                    "DDIM inversion is the noise every frame starts from."),
                io.Int.Input("steps", default=50, min=2, max=500,
                             tooltip="DDIM steps for both the inversion and the decoding (more retraces the reference better)."),
                io.Int.Input("chunk_frames", default=16, min=1, max=256, tooltip="Frames decoded per batch."),
            ],
            outputs=[io.Image.Output("crops", tooltip="Decoded face crops at the DAE's size; Paste Faces puts them back.")],
        )

    @classmethod
    def execute(cls, dae, z_sem, reference, steps=50, chunk_frames=16) -> io.NodeOutput:
        device = models_on_device(dae)
        chunks = decode_semantic_latents(dae.model, z_sem, image_to_frames(reference, "reference")[0], steps=steps,
                                         chunk_frames=chunk_frames, device=device, progress=NodeProgress(len(z_sem)))
        return io.NodeOutput(frames_to_image(np.concatenate(list(chunks))))


NODES: list[type[io.ComfyNode]] = [LandmarkTalkLoadDAE, LandmarkTalkLoadSpeech2Latent, LandmarkTalkEncodeSemanticLatents,
                                   LandmarkTalkSpeechToLatents, LandmarkTalkDAEDecode]
