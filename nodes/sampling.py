"""L2V sampling nodes: face crops → latents, landmark-guided diffusion sampling, latents → face crops.

The LATENT values here are in the latent space of the connected codec (not a Stable Diffusion VAE's):
connect them only between these nodes.
"""
from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.models.l2v import encode_pose_latents, landmark_inputs, render_latents
from ..pipelines.sampling import SAMPLERS
from ._convert import NodeProgress, compute_dtype, frames_to_image, models_on_device, to_model_images
from ._types import L2VModelType, LandmarksType, LatentCodecType

__all__ = ["NODES"]


def _latents(value: dict, name: str) -> torch.Tensor:
    if not isinstance(value, dict) or not isinstance(value.get("samples"), torch.Tensor):
        raise LandmarkTalkError(f"{name}: expected a LATENT from Encode Faces or the sampler")
    return value["samples"]


class LandmarkTalkEncodeFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkEncodeFaces",
            display_name="Encode Faces",
            category="LandmarkTalk/sampling",
            description="Encode aligned crops for L2V: the frames with the lower face masked (pose) and a reference face (identity).",
            inputs=[
                L2VModelType.Input("l2v", tooltip="The L2V model (its crop size is used)."),
                LatentCodecType.Input("codec", tooltip="The codec the L2V model was trained with."),
                io.Image.Input("crops", tooltip="Aligned face crops of the frames to re-render (from Align Faces)."),
                LandmarksType.Input("landmarks", tooltip="The crops' own landmarks (Align Faces): they place the lower-face mask."),
                io.Image.Input("reference", optional=True,
                               tooltip="An aligned crop of the person (teeth, lips, skin); default: the first crop."),
            ],
            outputs=[
                io.Latent.Output("pose", tooltip="Latents of the masked frames (head pose, background, upper face)."),
                io.Latent.Output("identity", tooltip="Latent of the reference face."),
            ],
        )

    @classmethod
    def execute(cls, l2v, codec, crops, landmarks, reference=None) -> io.NodeOutput:
        if len(landmarks) != len(crops):
            raise LandmarkTalkError(f"landmarks: {len(landmarks)} frames for {len(crops)} crops; use the crops' own landmarks")
        device = models_on_device(codec.patcher)
        size = l2v.model.config.image_size
        pose = encode_pose_latents(codec.codec, to_model_images(crops, size, device), landmarks.points,
                                   landmarks_crop_size=landmarks.crop_size)
        identity = codec.codec.encode(to_model_images((crops if reference is None else reference)[:1], size, device))
        return io.NodeOutput({"samples": pose}, {"samples": identity.cpu()})


class LandmarkTalkLandmarkDiffusionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkLandmarkDiffusionSampler",
            display_name="Landmark Diffusion Sampler",
            category="LandmarkTalk/sampling",
            description="Render face latents that follow the target landmarks, frame by frame, with shared noise.",
            inputs=[
                L2VModelType.Input("l2v", tooltip="The L2V model."),
                LatentCodecType.Input("codec", tooltip="The codec the L2V model was trained with."),
                io.Latent.Input("pose", tooltip="Masked-frame latents from Encode Faces, one per output frame."),
                io.Latent.Input("identity", tooltip="The reference latent from Encode Faces."),
                LandmarksType.Input("landmarks", tooltip="Target landmarks, one per output frame (Predict Landmarks)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the noise every frame shares (same seed, same look)."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampler steps per frame chunk."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="dpmpp_2m",
                               tooltip="dpmpp_2m is good at 15–25 steps; ddim and euler need more."),
                io.Float.Input("guidance", default=1.0, min=1.0, max=10.0, step=0.1,
                               tooltip="Classifier-free guidance on the landmarks (1 = off: half the cost)."),
                io.Float.Input("progressive", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Mix the previous chunk's last frame into the reference (DiffTalk's "
                                       "progressive reference): steadier texture over long clips."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="Sampling strength: below 1 every frame starts from the identity latent "
                                       "noised to this level instead of pure noise (keeps its lips and texture "
                                       "where the landmarks agree); 1 = from pure noise."),
                io.Int.Input("chunk_frames", default=16, min=1, max=256,
                             tooltip="Frames denoised together; larger is faster but needs more memory."),
            ],
            outputs=[io.Latent.Output("latents", tooltip="Face latents, one per frame: connect Decode Faces.")],
        )

    @classmethod
    def execute(cls, l2v, codec, pose, identity, landmarks, seed=0, steps=20, sampler="dpmpp_2m", guidance=1.0,
                progressive=0.0, denoise=1.0, chunk_frames=16) -> io.NodeOutput:
        device = models_on_device(l2v, codec.patcher)
        model = l2v.model
        images, points = landmark_inputs(landmarks.points, landmarks.crop_size, model.config.landmark_image_size)
        latents = render_latents(
            model, codec.codec, pose=_latents(pose, "pose"), identity=_latents(identity, "identity"),
            landmark_images=images, landmark_points=points, sampler=sampler, steps=steps, guidance=guidance,
            generator=torch.Generator().manual_seed(seed), chunk_size=chunk_frames, progressive=progressive,
            denoise=denoise, callback=NodeProgress(), device=device, dtype=compute_dtype(device),
        )
        return io.NodeOutput({"samples": latents.to(comfy.model_management.intermediate_device())})


class LandmarkTalkDecodeFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkDecodeFaces",
            display_name="Decode Faces",
            category="LandmarkTalk/sampling",
            description="Decode face latents into aligned face crops (connect Paste Faces Back to put them in the frames).",
            inputs=[
                LatentCodecType.Input("codec", tooltip="The codec the latents are in."),
                io.Latent.Input("latents", tooltip="From the Landmark Diffusion Sampler."),
            ],
            outputs=[io.Image.Output("crops", tooltip="Face crops at the L2V model's size.")],
        )

    @classmethod
    def execute(cls, codec, latents) -> io.NodeOutput:
        models_on_device(codec.patcher)
        return io.NodeOutput(frames_to_image(codec.codec.decode_frames(_latents(latents, "latents"))))


NODES = [LandmarkTalkEncodeFaces, LandmarkTalkLandmarkDiffusionSampler, LandmarkTalkDecodeFaces]
