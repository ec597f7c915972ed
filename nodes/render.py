"""The streaming render node: face and speech files in, a talking video file out, memory flat in length."""
from __future__ import annotations

from comfy_api.latest import InputImpl, io, ui

from ..pipelines.render import (
    RENDER_CENTER_MOTION, RENDER_DENOISE, RENDER_MOTION_SCALE, SEED_SEARCH_CANDIDATES, SEED_SEARCH_PROBE_FRAMES,
    RenderSettings, TalkingHeadModels, render_video,
)
from ..pipelines.sampling import SAMPLERS
from ..pipelines.schedule import LENGTH_MODES
from ._convert import NodeProgress, compute_dtype, input_file_path, input_files, models_on_device, output_file_path
from ._types import A2LModelType, L2VModelType, LatentCodecType, SOVQAEModelType, SpeakerType, SpeechEncoderType
from .landmarks import motion_inputs

__all__ = ["NODES"]


class LandmarkTalkRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkRender",
            display_name="Render Talking Video",
            category="LandmarkTalk/video",
            description="Make the person in a photo or video say the speech, streamed chunk by chunk from file to file (any length).",
            inputs=[
                io.Combo.Input("face", options=input_files(["video", "image"]), upload=io.UploadType.video,
                               tooltip="Photo or video of the fitted person, in ComfyUI's input folder (read from disk in chunks)."),
                io.Combo.Input("audio", options=input_files(["audio", "video"]), upload=io.UploadType.audio,
                               tooltip="The speech (or a video whose sound track is the speech); the output lasts as long."),
                A2LModelType.Input("a2l", tooltip="The person's A2L model."),
                L2VModelType.Input("l2v", tooltip="The person's L2V model."),
                LatentCodecType.Input("codec", tooltip="The codec the L2V model was trained with."),
                SpeakerType.Input("speaker", optional=True,
                                  tooltip="Voice identity for A2L (Load A2L Model's fitted_speaker); "
                                          "default: embed the speech's own voice."),
                SOVQAEModelType.Input("sovqae", optional=True,
                                      tooltip="The person's SOVQAE (Load SOVQAE): restores detail in every generated "
                                              "face crop before paste-back; default: paste the decoded crops."),
                SpeechEncoderType.Input("speech_encoder", optional=True,
                                        tooltip="Load Speech Encoder: the one an A2L fitted with --speech-encoder "
                                                "reads (the render says which); leave empty for log-mel A2L models."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the noise every frame shares."),
                io.Int.Input("seed_candidates", default=SEED_SEARCH_CANDIDATES, min=1, max=64,
                             tooltip=f"Seed search: the first {SEED_SEARCH_PROBE_FRAMES} frames are rendered with this many "
                                     "seeds (seed, seed+1, …) and the one whose mouth follows the landmarks best renders "
                                     "the video; 1 = off."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampler steps per chunk."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="dpmpp_2m", tooltip="Diffusion sampler."),
                io.Float.Input("guidance", default=1.0, min=1.0, max=10.0, step=0.1,
                               tooltip="Classifier-free guidance on the landmarks (1 = off: half the cost)."),
                io.Float.Input("progressive", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Mix of the previous chunk's last frame into the reference (steadier texture)."),
                io.Float.Input("denoise", default=RENDER_DENOISE, min=0.01, max=1.0, step=0.01,
                               tooltip="Sampling strength: below 1 every frame starts from the first face frame "
                                       "noised to this level instead of pure noise (keeps its lips where the "
                                       "landmarks agree); 1 = from pure noise."),
                *motion_inputs("face video"),
                io.Int.Input("chunk_frames", default=16, min=1, max=256,
                             tooltip="Frames per chunk: memory and Cancel granularity."),
                io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="pingpong",
                               tooltip="When the speech is longer than the face video: play it back and forth, or loop."),
                io.Float.Input("fps", default=0.0, min=0.0, max=240.0, step=0.001,
                               tooltip="Output frame rate; 0 = the face video's (25 for a photo)."),
                io.String.Input("filename_prefix", default="video/LandmarkTalk",
                                tooltip="Output file name prefix under ComfyUI's output folder; a counter is added."),
            ],
            outputs=[io.Video.Output("video", tooltip="The rendered H.264 + AAC file.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, face, audio, a2l, l2v, codec, speaker=None, sovqae=None, speech_encoder=None, seed=0,
                seed_candidates=SEED_SEARCH_CANDIDATES, steps=20, sampler="dpmpp_2m", guidance=1.0,
                progressive=0.0, denoise=RENDER_DENOISE, motion_scale=RENDER_MOTION_SCALE,
                center_motion=RENDER_CENTER_MOTION, chunk_frames=16, length_mode="pingpong", fps=0.0,
                filename_prefix="video/LandmarkTalk") -> io.NodeOutput:
        face_path, audio_path = input_file_path(face, "face"), input_file_path(audio, "audio")
        device = models_on_device(a2l, l2v, codec.patcher, *([sovqae] if sovqae is not None else []))
        models = TalkingHeadModels(a2l=a2l.model, l2v=l2v.model, codec=codec.codec, speaker=speaker,
                                   refiner=sovqae.model if sovqae is not None else None, speech_encoder=speech_encoder)
        settings = RenderSettings(steps=steps, sampler=sampler, guidance=guidance, seed=seed,
                                  seed_candidates=seed_candidates, chunk_frames=chunk_frames,
                                  length_mode=length_mode, progressive=progressive, denoise=denoise,
                                  motion_scale=motion_scale, center_motion=center_motion, fps=fps or None,
                                  device=str(device),
                                  dtype=str(compute_dtype(device)).removeprefix("torch."))
        path, filename, subfolder = output_file_path(filename_prefix, ".mp4")
        # render_video writes to a temporary file and renames it at the end: Cancel leaves no partial file.
        render_video(face_path, audio_path, models, path, settings, progress=NodeProgress())
        return io.NodeOutput(InputImpl.VideoFromFile(path),
                             ui=ui.PreviewVideo([ui.SavedResult(filename, subfolder, io.FolderType.output)]))


NODES = [LandmarkTalkRender]
