"""The pack's own ComfyUI socket types, declared once (``io.Custom`` makes a new class per call).

Values travelling on these sockets are the engine's objects: ``LT_FACE_TRACK`` a
:class:`pipelines.types.FaceTrack`, ``LT_LANDMARKS`` a :class:`pipelines.types.Landmarks`,
``LT_AUDIO_FEATURES`` a :class:`pipelines.types.AudioFeatures`, ``LT_SPEAKER`` a float32 [S] unit
vector (or None: no fitted voice), ``LT_LATENT_CODEC`` a ``nodes._convert.CodecHandle``,
``LT_SPEECH_ENCODER`` a :class:`pipelines.audio.encoders.SpeechEncoder`. Model sockets
carry a ``comfy.model_patcher.ModelPatcher`` whose ``.model`` is the engine's ``nn.Module`` of that kind,
so ComfyUI's memory manager can load and offload it.
"""
from __future__ import annotations

from comfy_api.latest import io

__all__ = [
    "FaceTrackType", "LandmarksType", "AudioFeaturesType", "SpeakerType", "LatentCodecType",
    "A2LModelType", "L2VModelType", "Wav2LipModelType", "SOVQAEModelType", "SmootherModelType",
    "DAEModelType", "Speech2LatentModelType", "SemanticLatentsType", "SpeechEncoderType", "MODEL_TYPES",
]

FaceTrackType = io.Custom("LT_FACE_TRACK")
LandmarksType = io.Custom("LT_LANDMARKS")
AudioFeaturesType = io.Custom("LT_AUDIO_FEATURES")
SpeakerType = io.Custom("LT_SPEAKER")
LatentCodecType = io.Custom("LT_LATENT_CODEC")
SpeechEncoderType = io.Custom("LT_SPEECH_ENCODER")

A2LModelType = io.Custom("LT_A2L")
L2VModelType = io.Custom("LT_L2V")
Wav2LipModelType = io.Custom("LT_WAV2LIP")
SOVQAEModelType = io.Custom("LT_SOVQAE")
SmootherModelType = io.Custom("LT_SMOOTHER")
DAEModelType = io.Custom("LT_DAE")
Speech2LatentModelType = io.Custom("LT_SPEECH2LATENT")
SemanticLatentsType = io.Custom("LT_SEMANTIC_LATENTS")  # float32 [T, z_sem] of a DAE

# Checkpoint kind (pipelines.checkpoint.MODEL_KINDS) → the socket type its loader outputs.
MODEL_TYPES = {
    "a2l": A2LModelType,
    "l2v": L2VModelType,
    "wav2lip": Wav2LipModelType,
    "sovqae": SOVQAEModelType,
    "smoother": SmootherModelType,
    "dae": DAEModelType,
    "speech2latent": Speech2LatentModelType,
}
