"""Audio stage: per-frame feature windows, DiffTalk's temporal smoother, speaker embeddings.

Heavy libraries (librosa, resemblyzer, transformers) load on first use, not on import.
"""

from .features import compute_audio_features
from .smoothing import TemporalSmoother, TemporalSmootherConfig, smooth_audio_features, smooth_landmark_track
from .speaker import compute_speaker_embedding

__all__ = [
    "compute_audio_features",
    "TemporalSmoother",
    "TemporalSmootherConfig",
    "smooth_audio_features",
    "smooth_landmark_track",
    "compute_speaker_embedding",
]
