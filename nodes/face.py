"""Face nodes: track a face through frames, cut aligned crops, draw landmarks, paste crops back."""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..pipelines.errors import LandmarkTalkError
from ..pipelines.face import align_faces, crop_landmarks, paste_faces, rasterize_landmarks, track_face
from ..pipelines.face.detect import BACKENDS
from ._convert import NodeProgress, frame_chunks, frames_to_image, image_to_frames, map_frame_chunks
from ._types import FaceTrackType, LandmarksType
from .models_folder import FOLDER_NAME, model_folder

__all__ = ["NODES", "outline_overlay"]

_FACE_CHOICES = ["largest"] + [str(i) for i in range(8)]
_PREVIEW_FRAMES = 8
_OUTLINE_RGB = (0.15, 1.0, 0.35)


def outline_overlay(background: torch.Tensor, drawn: np.ndarray) -> torch.Tensor:
    """IMAGE [T or 1,H,W,3] with rasterized outlines [T,C,≥H,≥W] (1 channel: drawn green) laid over it."""
    height, width = background.shape[1:3]
    drawn = torch.from_numpy(np.ascontiguousarray(drawn[:, :, :height, :width])).movedim(1, -1).to(background)
    colour = drawn if drawn.shape[-1] == 3 else drawn * torch.tensor(_OUTLINE_RGB).to(background)
    alpha = drawn.amax(dim=-1, keepdim=True)
    return background * (1 - alpha) + colour


def _preview_indices(count: int) -> torch.Tensor:
    """At most _PREVIEW_FRAMES evenly spaced frame indices: a preview never writes a PNG per frame."""
    return torch.from_numpy(np.unique(np.linspace(0, count - 1, min(count, _PREVIEW_FRAMES)).round().astype(np.int64)))


def _preview_ui(cls, images: torch.Tensor, summary: list[str]) -> dict:
    """Preview images (drawn on the node by the core frontend) plus the summary web/landmarktalk.js shows."""
    return {**ui.PreviewImage(images[_preview_indices(len(images)).to(images.device)], cls=cls).as_dict(),
            "landmarktalk_summary": summary}


class LandmarkTalkTrackFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkTrackFace",
            display_name="Track Face",
            category="LandmarkTalk/landmarks",
            description="Find one face on every frame: 68 landmarks, gaps filled, smoothed, and its aligned-crop transforms.",
            inputs=[
                io.Image.Input("images", tooltip="Frames of the face video (a batch), or one photo."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames; connect Get Video Components' fps (any value for a photo)."),
                io.Int.Input("crop_size", default=256, min=64, max=1024, step=32,
                             tooltip="Side in pixels of the aligned face crop the track is made for."),
                io.Combo.Input("face", options=_FACE_CHOICES, default="largest",
                               tooltip="Which face to follow: the largest, or the n-th from the left (0 = leftmost)."),
                io.Int.Input("detect_every", default=5, min=1, max=250,
                             tooltip="Run the face detector every n frames and track in between "
                                     "(1 = every frame: slower, steadier across cuts)."),
                io.Combo.Input("backend", options=list(BACKENDS), default="dlib",
                               tooltip="Landmark detector. dlib ships with the pack's dependencies; face_alignment "
                                       f"needs its FAN weights in the torch hub cache or in models/{FOLDER_NAME}/."),
            ],
            outputs=[FaceTrackType.Output("face_track", tooltip="Landmarks and crop transforms for every frame.")],
        )

    @classmethod
    def execute(cls, images, fps=25.0, crop_size=256, face="largest", detect_every=5, backend="dlib") -> io.NodeOutput:
        frames = image_to_frames(images, "images")
        # Fed in chunks so progress (and Cancel) is reported as tracking goes.
        track = track_face(frame_chunks(frames), fps, crop_size=crop_size, face=int(face) if face.isdigit() else face,
                           detect_every=detect_every, backend=backend, models_dir=model_folder(), source="images",
                           progress=NodeProgress(total=len(frames)))
        summary = [f"{len(track)} frames", f"{int(np.count_nonzero(track.filled))} filled",
                   f"face {track.face_index + 1} of {track.face_count}",
                   f"confidence {float(np.mean(track.confidence)):.2f}"]
        keep = _preview_indices(len(track))
        side = max(frames.shape[1:3])  # source pixels drawn on a square canvas, cut back to the frame
        outlines = rasterize_landmarks(track.landmarks[keep.numpy()], side, thickness=max(1, side // 200))
        return io.NodeOutput(track, ui=_preview_ui(cls, outline_overlay(images[keep.to(images.device)], outlines), summary))


class LandmarkTalkAlignFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkAlignFaces",
            display_name="Align Faces",
            category="LandmarkTalk/landmarks",
            description="Cut the tracked face out of every frame as an upright square crop, with its landmarks in crop pixels.",
            inputs=[
                io.Image.Input("images", tooltip="The frames the face track was made from."),
                FaceTrackType.Input("face_track", tooltip="From Track Face."),
                io.Int.Input("crop_size", default=0, min=0, max=1024, step=8,
                             tooltip="Side of the crops in pixels; 0 uses the track's crop size."),
            ],
            outputs=[
                io.Image.Output("crops", tooltip="Aligned face crops, one per frame."),
                LandmarksType.Output("landmarks", tooltip="The track's landmarks in crop pixels."),
            ],
        )

    @classmethod
    def execute(cls, images, face_track, crop_size=0) -> io.NodeOutput:
        crops = map_frame_chunks(lambda chunk, start: align_faces(chunk, face_track, crop_size or None, start=start),
                                 image_to_frames(images, "images"))
        return io.NodeOutput(frames_to_image(crops), crop_landmarks(face_track, crop_size or None))


class LandmarkTalkDrawLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkDrawLandmarks",
            display_name="Draw Landmarks",
            category="LandmarkTalk/landmarks",
            description="Draw a landmark sequence as face outlines, over crops when given, and preview a few frames.",
            inputs=[
                LandmarksType.Input("landmarks", tooltip="A landmark sequence (from Align Faces or Predict Landmarks)."),
                io.Int.Input("size", default=256, min=16, max=2048, step=8, tooltip="Side of the drawn images in pixels."),
                io.Boolean.Input("colour", default=True, tooltip="One colour per face part (off: plain outlines)."),
                io.Image.Input("background", optional=True,
                               tooltip="Square crops to draw over (one, or one per frame; resized to size). "
                                       "Black when not connected."),
            ],
            outputs=[io.Image.Output("images", tooltip="One image per landmark frame.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, landmarks, size=256, colour=True, background=None) -> io.NodeOutput:
        if background is None:
            background = torch.zeros(1, size, size, 3)
        elif len(background) not in (1, len(landmarks)):
            raise LandmarkTalkError(f"background: {len(background)} images for {len(landmarks)} landmark frames; "
                                    "give one image or one per frame")
        background = torch.nn.functional.interpolate(background[..., :3].movedim(-1, 1), size=(size, size),
                                                     mode="bilinear", antialias=True).movedim(1, -1).clamp(0, 1)
        drawn = outline_overlay(background, rasterize_landmarks(landmarks, size, colour=colour))
        summary = [f"{len(landmarks)} frames", f"{landmarks.fps:g} fps", f"crop {landmarks.crop_size}px"]
        return io.NodeOutput(drawn, ui=_preview_ui(cls, drawn, summary))


class LandmarkTalkPasteFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkPasteFaces",
            display_name="Paste Faces Back",
            category="LandmarkTalk/video",
            description="Blend generated face crops back into the frames they were cut from, with a soft mask and colour match.",
            inputs=[
                io.Image.Input("images", tooltip="The original frames (those the face track was made from)."),
                io.Image.Input("crops", tooltip="Generated face crops, one per frame, square (any size)."),
                FaceTrackType.Input("face_track", tooltip="The track the crops were aligned with."),
                io.Combo.Input("region", options=["face", "lower"], default="face",
                               tooltip="Replace the whole face, or only the lower face (mouth and jaw)."),
                io.Boolean.Input("colour_match", default=True,
                                 tooltip="Match the crops' colour to the frame inside the mask (hides tone shifts)."),
            ],
            outputs=[io.Image.Output("images", tooltip="The frames with the new faces.")],
        )

    @classmethod
    def execute(cls, images, crops, face_track, region="face", colour_match=True) -> io.NodeOutput:
        if len(crops) != len(images):  # checked here: chunking would make the engine's message name a chunk
            raise LandmarkTalkError(f"crops: {len(crops)} crops for {len(images)} frames; give one crop per frame")
        crops = image_to_frames(crops, "crops")
        frames = map_frame_chunks(lambda chunk, start: paste_faces(chunk, crops[start:start + len(chunk)], face_track,
                                                                  start=start, region=region, colour_match=colour_match),
                                  image_to_frames(images, "images"))
        return io.NodeOutput(frames_to_image(frames))


NODES = [LandmarkTalkTrackFace, LandmarkTalkAlignFaces, LandmarkTalkDrawLandmarks, LandmarkTalkPasteFaces]
