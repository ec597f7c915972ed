"""Landmark nodes: speech → landmarks (A2L) and temporal smoothing of a landmark sequence."""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..pipelines.audio import smooth_landmark_track
from ..pipelines.errors import LandmarkTalkError
from ..pipelines.models.a2l import predict_landmarks
from ..pipelines.render import RENDER_CENTER_MOTION, RENDER_MOTION_SCALE
from ._convert import models_on_device
from ._types import A2LModelType, AudioFeaturesType, LandmarksType, SpeakerType

__all__ = ["NODES"]


def motion_inputs(source: str) -> list:
    """The inputs that shape A2L's mouth motion (as ``render --motion-scale``), for the nodes that run A2L;
    ``source`` names what the motion is centred on in the tooltips."""
    return [
        io.Float.Input("motion_scale", default=RENDER_MOTION_SCALE, min=0.0, max=2.0, step=0.05,
                       tooltip=f"Scale of the predicted mouth motion: 1 = as A2L predicts it, 0 = the {source}'s "
                               "median mouth held still."),
        io.Boolean.Input("center_motion", default=RENDER_CENTER_MOTION,
                         tooltip=f"Centre the predicted mouth motion on the {source}'s median mouth (a photo, or a "
                                 "one-frame reference, is never centred)."),
    ]


class LandmarkTalkPredictLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkPredictLandmarks",
            display_name="Predict Landmarks",
            category="LandmarkTalk/landmarks",
            description="Predict the 68 face landmarks of every frame from speech (A2L), placed on the reference face.",
            inputs=[
                A2LModelType.Input("a2l", tooltip="The A2L model (Load A2L Model)."),
                AudioFeaturesType.Input("features", tooltip="Audio Features of the speech, at the output frame rate."),
                LandmarksType.Input("reference", tooltip="Landmarks of the face (Align Faces): one frame for a photo, or "
                                                        "one per output frame for a video (its head pose is kept)."),
                SpeakerType.Input("speaker", tooltip="Voice identity: Load A2L Model's fitted_speaker (the fitted "
                                                    "person) or Speaker Embedding of another voice."),
                *motion_inputs("reference"),
            ],
            outputs=[LandmarksType.Output("landmarks", tooltip="One landmark frame per audio frame, in the reference's crop.")],
        )

    @classmethod
    def execute(cls, a2l, features, reference, speaker, motion_scale=RENDER_MOTION_SCALE,
                center_motion=RENDER_CENTER_MOTION) -> io.NodeOutput:
        if speaker is None:
            raise LandmarkTalkError("speaker: the A2L model has no fitted voice (speaker.npy) beside it; "
                                    "connect Speaker Embedding instead")
        models_on_device(a2l)
        return io.NodeOutput(predict_landmarks(a2l.model, features, reference, speaker, motion_scale=motion_scale,
                                               center_motion=center_motion))


class LandmarkTalkSmoothLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkSmoothLandmarks",
            display_name="Smooth Landmarks",
            category="LandmarkTalk/landmarks",
            description="Remove frame-to-frame jitter from a landmark sequence (Savitzky–Golay filter over time).",
            inputs=[
                LandmarksType.Input("landmarks", tooltip="A landmark sequence (Predict Landmarks, Align Faces)."),
                io.Float.Input("window_s", default=0.2, min=0.05, max=2.0, step=0.01,
                               tooltip="Filter window in seconds; longer is smoother but softens fast lip motion."),
            ],
            outputs=[LandmarksType.Output("landmarks", tooltip="The smoothed sequence.")],
        )

    @classmethod
    def execute(cls, landmarks, window_s=0.2) -> io.NodeOutput:
        points = smooth_landmark_track(landmarks.points, landmarks.fps, window_s=window_s)
        return io.NodeOutput(replace(landmarks, points=points))


NODES = [LandmarkTalkPredictLandmarks, LandmarkTalkSmoothLandmarks]
