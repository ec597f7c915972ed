"""Audio nodes: per-frame feature windows and the speaker (voice identity) embedding."""
from __future__ import annotations

from comfy_api.latest import io

from ..pipelines.audio import compute_audio_features, compute_speaker_embedding, smooth_audio_features
from ..pipelines.audio.features import DEFAULT_WINDOW
from ..pipelines.models.a2l import ENCODER_FEATURE_WINDOW
from ._convert import audio_from_comfy
from ._types import A2LModelType, AudioFeaturesType, SpeakerType, SpeechEncoderType
from .models_folder import FOLDER_NAME, SPEECH_ENCODER_FOLDER, list_speech_encoders, resolve_speech_encoder

__all__ = ["NODES"]


class LandmarkTalkAudioFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkAudioFeatures",
            display_name="Audio Features",
            category="LandmarkTalk/audio",
            description=("Log-mel windows of the speech centred on every video frame: round(duration × fps) frames. "
                         "With a speech encoder connected: windows of its hidden states instead (for A2L models "
                         "fitted with --speech-encoder)."),
            inputs=[
                io.Audio.Input("audio", tooltip="The speech to lip-sync (any rate; mixed down to 16 kHz mono)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the video to make: one feature window per frame."),
                io.Int.Input("window", default=DEFAULT_WINDOW, min=2, max=200,
                             tooltip="Steps per window; must match the A2L model's: 10 ms log-mel steps (20 unless "
                                     f"trained otherwise), or the speech encoder's 20 ms steps ({ENCODER_FEATURE_WINDOW})."),
                SpeechEncoderType.Input("speech_encoder", optional=True,
                                        tooltip="Load Speech Encoder: use its hidden states instead of log-mel."),
            ],
            outputs=[AudioFeaturesType.Output("features", tooltip="Feature windows [frames, window, 80].")],
        )

    @classmethod
    def execute(cls, audio, fps=25.0, window=DEFAULT_WINDOW, speech_encoder=None) -> io.NodeOutput:
        kind = {"kind": "encoder", "encoder": speech_encoder} if speech_encoder is not None else {}
        features = compute_audio_features(audio_from_comfy(audio), fps, window=window, **kind)
        return io.NodeOutput(features, ui={"landmarktalk_summary": [f"{len(features)} frames at {fps:g} fps"]})


class LandmarkTalkSmoothAudioFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkSmoothAudioFeatures",
            display_name="Smooth Audio Features",
            category="LandmarkTalk/audio",
            description=("DiffTalk's temporal filter without learned weights: each frame's features become a "
                         "weighted average of its neighbours', favouring neighbours that sound alike. A2L models "
                         "carry their own learned filter; use this to calm noisy speech before them or other models."),
            inputs=[
                AudioFeaturesType.Input("features", tooltip="Feature windows from Audio Features."),
                io.Int.Input("half_window", default=2, min=0, max=16,
                             tooltip="Frames on each side that are averaged in; 0 passes the features through."),
                io.Float.Input("sigma", default=1.0, min=0.1, max=16.0, step=0.1,
                               tooltip="Width in frames of the Gaussian fall-off over the frame offset."),
                io.Float.Input("similarity", default=4.0, min=0.0, max=32.0, step=0.1,
                               tooltip="How strongly alike-sounding neighbours are favoured; 0 = plain Gaussian."),
            ],
            outputs=[AudioFeaturesType.Output("features", tooltip="Smoothed feature windows, same shape.")],
        )

    @classmethod
    def execute(cls, features, half_window=2, sigma=1.0, similarity=4.0) -> io.NodeOutput:
        return io.NodeOutput(smooth_audio_features(features, half_window=half_window, sigma=sigma,
                                                   similarity=similarity))


class LandmarkTalkSpeakerEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkSpeakerEmbedding",
            display_name="Speaker Embedding",
            category="LandmarkTalk/audio",
            description="A voice identity vector of some speech, made the way the A2L model expects, for Predict Landmarks.",
            inputs=[
                A2LModelType.Input("a2l", tooltip="The A2L model: sets the embedding method it was trained with."),
                io.Audio.Input("audio", tooltip="Speech of the voice to embed (a few seconds or more, not silence)."),
            ],
            outputs=[SpeakerType.Output("speaker", tooltip="Unit-length float32 [256] voice embedding.")],
        )

    @classmethod
    def execute(cls, a2l, audio) -> io.NodeOutput:
        method = a2l.model.config.speaker_method
        return io.NodeOutput(compute_speaker_embedding(audio_from_comfy(audio), method=method))


class LandmarkTalkLoadSpeechEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LandmarkTalkLoadSpeechEncoder",
            display_name="Load Speech Encoder",
            category="LandmarkTalk/audio",
            description=("A local wav2vec2/HuBERT model (a save_pretrained folder; needs `transformers`) whose hidden "
                         "states an A2L fitted with --speech-encoder reads. Nothing is downloaded. Runs on the CPU."),
            inputs=[
                io.Combo.Input("encoder_name", options=list_speech_encoders(),
                               tooltip=f"A folder in models/{FOLDER_NAME}/{SPEECH_ENCODER_FOLDER}/ holding config.json "
                                       "and the weights; press R after copying one in."),
            ],
            outputs=[SpeechEncoderType.Output("speech_encoder", tooltip="For Audio Features and Render.")],
        )

    @classmethod
    def execute(cls, encoder_name) -> io.NodeOutput:
        from ..pipelines.audio.encoders import load_speech_encoder

        return io.NodeOutput(load_speech_encoder(resolve_speech_encoder(encoder_name)))


NODES = [LandmarkTalkAudioFeatures, LandmarkTalkLoadSpeechEncoder, LandmarkTalkSmoothAudioFeatures, LandmarkTalkSpeakerEmbedding]
