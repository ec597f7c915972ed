"""Video-level nodes: frame batches shaped to follow the audio."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.schedule import LENGTH_MODES, source_frame_schedule
from ..pipelines.types import frame_count_for
from ._convert import audio_from_comfy

__all__ = ["NODES"]


class LandmarkTalkMatchFramesToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkMatchFramesToAudio",
            display_name="Match Frames to Audio",
            category="LandmarkTalk/video",
            description="Cut or repeat a frame batch so it lasts exactly as long as the audio: round(duration × fps) frames.",
            inputs=[
                io.Image.Input("images", tooltip="The face video's frames (a batch), or one photo."),
                io.Audio.Input("audio", tooltip="The speech; the output has one frame per 1/fps second of it."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames; connect Get Video Components' fps."),
                io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="pingpong",
                               tooltip="When the audio is longer: play the video forward and back (pingpong) "
                                       "or restart it (loop). A shorter audio cuts the video."),
            ],
            outputs=[
                io.Image.Output("images", tooltip="Frames, as many as the audio lasts at fps."),
                io.Int.Output("frame_count", tooltip="Number of output frames."),
                io.Float.Output("fps", tooltip="The frame rate, passed through: wire it to every node that asks for fps."),
            ],
        )

    @classmethod
    def execute(cls, images, audio, fps=25.0, length_mode="pingpong") -> io.NodeOutput:
        duration_s = audio_from_comfy(audio).duration_s
        frame_count = frame_count_for(duration_s, fps)
        if frame_count < 1:
            raise LandmarkTalkError(f"audio: {duration_s:.3f} s is shorter than one frame at {fps} fps; give longer speech")
        schedule = source_frame_schedule(images.shape[0], frame_count, length_mode)
        return io.NodeOutput(images[torch.from_numpy(schedule).to(images.device)], frame_count, fps)


NODES = [LandmarkTalkMatchFramesToAudio]
