"""LaDTalk nodes: a Wav2Lip foundation lip-sync, then SOVQAE detail refinement of the face crops."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.models.wav2lip import lipsync_frames
from ..pipelines.refine import refine_frames
from ..pipelines.schedule import LENGTH_MODES
from ._convert import NodeProgress, audio_from_comfy, frames_to_image, image_to_frames, models_on_device
from ._types import FaceTrackType, LandmarksType, SOVQAEModelType, Wav2LipModelType

__all__ = ["NODES"]

# Both models are small: they run in float32, which also keeps ComfyUI's copy of their weights unchanged
# (the engine moves the module to the dtype it is given).
_DTYPE = torch.float32


class LandmarkTalkWav2LipLipSync(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkWav2LipLipSync",
            display_name="Wav2Lip Lip-Sync",
            category="LandmarkTalk/refine",
            description="Re-voice frames with Wav2Lip: the lower face of every frame redrawn to the speech, round(duration × fps) frames.",
            inputs=[
                Wav2LipModelType.Input("wav2lip", tooltip="From Load Wav2Lip."),
                io.Image.Input("images", tooltip="Full frames (official weights, with face_track) or aligned crops "
                                                 "(a model trained by the pack, with landmarks)."),
                io.Audio.Input("audio", tooltip="The speech."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames and of the output."),
                FaceTrackType.Input("face_track", optional=True, tooltip="The frames' face track (full frames)."),
                LandmarksType.Input("landmarks", optional=True, tooltip="The crops' landmarks (aligned crops)."),
                io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="pingpong",
                               tooltip="When the speech is longer than the frames: play them back and forth, or loop."),
                io.Int.Input("batch_size", default=32, min=1, max=512, tooltip="Frames per model call."),
            ],
            outputs=[io.Image.Output("images", tooltip="The lip-synced frames (Wav2Lip's 96² face resized into the box).")],
        )

    @classmethod
    def execute(cls, wav2lip, images, audio, fps=25.0, face_track=None, landmarks=None, length_mode="pingpong",
                batch_size=32) -> io.NodeOutput:
        if (face_track is None) == (landmarks is None):
            raise LandmarkTalkError("face_track / landmarks: connect exactly one: the face track for full frames, "
                                    "or the landmarks for aligned crops")
        device = models_on_device(wav2lip)
        frames = lipsync_frames(wav2lip.model, image_to_frames(images, "images"),
                                face_track if face_track is not None else landmarks,
                                audio_from_comfy(audio), fps, batch_size=batch_size, device=device, dtype=_DTYPE,
                                length_mode=length_mode, progress=NodeProgress())
        return io.NodeOutput(frames_to_image(frames))


class LandmarkTalkSOVQAERefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkSOVQAERefine",
            display_name="SOVQAE Refine",
            category="LandmarkTalk/refine",
            description="Restore detail (teeth, lips, skin) in aligned face crops of lip-sync output with the person's SOVQAE.",
            inputs=[
                SOVQAEModelType.Input("sovqae", tooltip="From Load SOVQAE (fitted to this person)."),
                io.Image.Input("crops", tooltip="Aligned face crops (Align Faces on the lip-synced frames)."),
                io.Int.Input("batch_size", default=16, min=1, max=512, tooltip="Crops per model call."),
            ],
            outputs=[io.Image.Output("crops", tooltip="The refined crops, same size.")],
        )

    @classmethod
    def execute(cls, sovqae, crops, batch_size=16) -> io.NodeOutput:
        device = models_on_device(sovqae)
        refined = refine_frames(sovqae.model, crops, batch_size=batch_size, device=device, dtype=_DTYPE,
                                progress=NodeProgress())
        return io.NodeOutput(refined.to(crops.device))


NODES = [LandmarkTalkWav2LipLipSync, LandmarkTalkSOVQAERefine]
