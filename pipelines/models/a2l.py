"""Audio-to-landmark network (A2L, Tan et al. 2024 §II-B): speech → 68 face landmarks per video frame.

Two LSTMs, as in the paper. The *context* network reads the per-frame content features (audio windows
through a small conv encoder, then DiffTalk's temporal smoother) together with the reference landmarks
and predicts a speaker-independent landmark sequence (eq. 1). The *identity* network reads the content
features, the speaker embedding and that intermediate sequence and refines it with the speaker's style
(eq. 2). Both predict offsets in a canonical, pose-free space: every shape is expressed in its own
eye-corner frame (origin between the eyes, x along the eye line, unit = inter-ocular distance), so the
model never has to learn head position or scale. Training targets are laid onto the reference by a
least-squares similarity over skull-fixed points, so only the face's non-rigid motion is left to
predict; :func:`predict_landmarks` maps the result back into the crop with the reference's frame. Output heads start at zero, so an untrained model returns its
starting shape: the reference unchanged (the still-face baseline) or, with ``mouth_start="mean_shape"``, the
reference with the speaker's mean mouth and jaw (the mean-mouth baseline), so training only has to add the
audio-driven deviations. With ``mouth_components = K > 0`` the heads predict K coefficients of a shape basis
(PCA of the training mouths, set by :meth:`A2L.set_shape_basis`) instead of 136 free coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..audio.smoothing import TemporalSmoother, TemporalSmootherConfig
from ..errors import LandmarkTalkError
from ..types import AudioFeatures, Landmarks

__all__ = ["A2LConfig", "A2L", "predict_landmarks", "stream_landmarks", "mean_landmark_motion", "to_canonical",
           "from_canonical", "align_to_reference", "lip_opening", "ENCODER_FEATURE_WINDOW", "speech_encoder_name",
           "feature_options"]

_NUM_POINTS = 68
_EYE_CORNERS = (36, 39, 42, 45)  # corners barely move when blinking, unlike the lids
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
# Points that move rigidly with the skull: nose bridge and base, and the eye corners (not the lids,
# which blink, nor the brows, which emote, nor the jaw, which speaks).
_RIGID_POINTS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
# Which points the network moves. Speech barely determines eyes, brows and nose, and on a few minutes of
# data predicting them only adds error, so by default they stay where the reference (the pose source) has them.
_DRIVEN_POINTS = {"all": tuple(range(68)), "mouth_jaw": tuple(range(0, 17)) + tuple(range(48, 68))}
# Encoder steps per window (20 ms for wav2vec2/HuBERT): the same 200 ms a 20-step log-mel window spans.
ENCODER_FEATURE_WINDOW = 10
_ENCODER_KIND = "encoder:"


@dataclass(frozen=True)
class A2LConfig:
    feature_dim: int = 80  # D of the audio feature windows
    feature_window: int = 20  # W
    feature_kind: str = "logmel80"
    speaker_dim: int = 256
    speaker_method: str = "ge2e"  # how the training speaker embeddings were made (ge2e | logmel)
    content_dim: int = 64  # D1 in the paper (256 there)
    speaker_proj_dim: int = 32
    hidden_dim: int = 128
    num_layers: int = 1
    smoother_half_window: int = 4  # frames each side; 0 turns the temporal smoother off
    dropout: float = 0.2  # on the content features (and between LSTM layers)
    driven_points: str = "mouth_jaw"  # "all" (the paper) or "mouth_jaw": eyes, brows and nose stay the reference's
    # Where the driven points start before any offset: "reference" (its own, possibly open, mouth) or
    # "mean_shape" (the mean of the speaker's frames, given as ``mean_shape`` to forward / predict_landmarks).
    mouth_start: str = "reference"
    mouth_components: int = 0  # K > 0: offsets are K coefficients of a fixed shape basis (PCA of training mouths)

    @classmethod
    def preset(cls, name: str, **overrides) -> "A2LConfig":
        """``tiny`` (tests), ``small`` (CPU fits on a few clips; ~0.4 M parameters), ``paper`` (D1 = D2 = 256)."""
        presets = {
            "tiny": cls(content_dim=16, speaker_proj_dim=8, hidden_dim=24, num_layers=1, smoother_half_window=2, dropout=0.0),
            "small": cls(),
            "paper": cls(content_dim=256, speaker_proj_dim=256, hidden_dim=256, num_layers=3, smoother_half_window=8,
                         dropout=0.1, driven_points="all"),
        }
        if name not in presets:
            raise LandmarkTalkError(f"A2L preset {name!r}: choose one of {', '.join(presets)}")
        return replace(presets[name], **overrides)

    def __post_init__(self):
        if self.driven_points not in _DRIVEN_POINTS:
            raise LandmarkTalkError(f"A2L driven_points {self.driven_points!r}: use one of {', '.join(_DRIVEN_POINTS)}")
        if self.mouth_start not in ("reference", "mean_shape"):
            raise LandmarkTalkError(f"A2L mouth_start {self.mouth_start!r}: use 'reference' or 'mean_shape'")
        most = 2 * len(_DRIVEN_POINTS[self.driven_points])
        if not 0 <= self.mouth_components <= most:
            raise LandmarkTalkError(f"A2L mouth_components {self.mouth_components}: give 0 (free coordinates) or 1..{most}")


def speech_encoder_name(config: A2LConfig) -> str | None:
    """The speech encoder whose hidden states an A2L model reads (``feature_kind="encoder:NAME"``, NAME being
    the encoder's folder name), or None for a log-mel model."""
    kind = config.feature_kind
    return kind[len(_ENCODER_KIND):] if kind.startswith(_ENCODER_KIND) else None


def _feature_hint(config: A2LConfig) -> str:
    name = speech_encoder_name(config)
    return (f"; compute them with the speech encoder {name!r} (Audio Features with Load Speech Encoder)" if name
            else "; compute them without a speech encoder")


def feature_options(config: A2LConfig, speech_encoder=None) -> dict:
    """Keyword arguments of :func:`~pipelines.audio.compute_audio_features` / ``iter_audio_features`` that
    make the features ``config``'s model was trained on, after checking that ``speech_encoder`` (a
    :class:`~pipelines.audio.encoders.SpeechEncoder` or None) is the one it needs."""
    name = speech_encoder_name(config)
    if name is None:
        if speech_encoder is not None:
            raise LandmarkTalkError(
                f"speech encoder {speech_encoder.name!r}: this A2L model reads log-mel features, not a speech encoder's; "
                "leave the speech encoder out (or fit A2L with --speech-encoder to use one)")
        return {"window": config.feature_window, "kind": config.feature_kind}
    if speech_encoder is None:
        raise LandmarkTalkError(
            f"this A2L model reads the hidden states of the speech encoder {name!r} ({config.feature_dim} dims); give "
            f"that save_pretrained folder with --speech-encoder (in ComfyUI: Load Speech Encoder)")
    if (speech_encoder.name, speech_encoder.dim) != (name, config.feature_dim):
        raise LandmarkTalkError(
            f"speech encoder {speech_encoder.name!r} ({speech_encoder.dim} dims): this A2L model was trained on "
            f"{name!r} ({config.feature_dim} dims); give the folder named {name!r} it was fitted with")
    return {"window": config.feature_window, "kind": "encoder", "encoder": speech_encoder}


class _WindowEncoder(nn.Module):
    """One audio window [W, D] → one content vector; strided convs along the window's time axis."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        width = max(out_dim, 32)
        self.net = nn.Sequential(
            nn.Conv1d(in_dim, width, 3, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.out = nn.Linear(width, out_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # n w d → n c
        return self.out(self.net(windows.transpose(1, 2)).mean(dim=2))


class A2L(nn.Module):
    """forward(features [B,T,W,D], reference [B,68,2] canonical, speaker [B,S], mean_shape [B,68,2] canonical or
    None) → canonical landmarks [B,T,68,2]. ``mean_shape`` (the speaker's mean shape laid onto the reference)
    is used only by ``mouth_start="mean_shape"`` models; None means the reference itself."""

    config_class = A2LConfig

    def __init__(self, config: A2LConfig):
        super().__init__()
        self.config = config
        c, h, flat = config.content_dim, config.hidden_dim, _NUM_POINTS * 2
        out = config.mouth_components or flat
        if config.mouth_components:
            # Rows span the driven points' motion; zeros until set_shape_basis (saved with the checkpoint).
            self.register_buffer("shape_basis", torch.zeros(config.mouth_components, flat))
        self.content = _WindowEncoder(config.feature_dim, c)
        self.smoother = (
            TemporalSmoother(TemporalSmootherConfig(dim=c, half_window=config.smoother_half_window))
            if config.smoother_half_window > 0 else None
        )
        dropout = config.dropout if config.num_layers > 1 else 0.0
        self.content_dropout = nn.Dropout(config.dropout)
        mask = torch.zeros(_NUM_POINTS, 2)
        mask[list(_DRIVEN_POINTS[config.driven_points])] = 1.0
        self.register_buffer("point_mask", mask.reshape(-1), persistent=False)
        self.reference_proj = nn.Linear(flat, c)
        self.context_lstm = nn.LSTM(2 * c, h, config.num_layers, batch_first=True, dropout=dropout)
        self.context_head = nn.Linear(h, out)
        # A direct, audio-independent linear path from the reference shape to the offsets: most of the
        # mouth offset is "forget the reference's own mouth opening" (linear in the reference), which an
        # LSTM with bounded hidden states fits only roughly.
        self.reference_skip = nn.Linear(flat, out)
        self.speaker_proj = nn.Linear(config.speaker_dim, config.speaker_proj_dim)
        self.intermediate_proj = nn.Linear(flat, c)
        self.identity_lstm = nn.LSTM(2 * c + config.speaker_proj_dim, h, config.num_layers, batch_first=True, dropout=dropout)
        self.identity_head = nn.Linear(h, out)
        for head in (self.context_head, self.identity_head, self.reference_skip):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def set_shape_basis(self, basis: torch.Tensor | np.ndarray) -> None:
        """Set the [K, 136] basis the heads' K coefficients multiply (``mouth_components = K`` models only)."""
        k = self.config.mouth_components
        basis = torch.as_tensor(np.asarray(basis), dtype=self.shape_basis.dtype) if k else None
        if basis is None or basis.shape != (k, _NUM_POINTS * 2) or not torch.isfinite(basis).all():
            raise LandmarkTalkError(
                f"A2L shape basis: expected a finite [{k}, {_NUM_POINTS * 2}] array for a mouth_components={k} model, got "
                f"{None if basis is None else tuple(basis.shape)}" + ("; this model predicts free coordinates" if not k else "")
            )
        self.shape_basis.copy_(basis.to(self.shape_basis.device))

    def _to_offsets(self, values: torch.Tensor) -> torch.Tensor:
        return values @ self.shape_basis if self.config.mouth_components else values

    def encode_content(self, features: torch.Tensor) -> torch.Tensor:
        """[B, T, W, D] audio windows → [B, T, content_dim] smoothed content features."""
        b, t, w, d = features.shape
        if (w, d) != (self.config.feature_window, self.config.feature_dim):
            raise LandmarkTalkError(
                f"A2L: audio features have windows of {w}×{d}, this model was trained on "
                f"{self.config.feature_window}×{self.config.feature_dim}; compute them with window={self.config.feature_window}"
            )
        content = self.content(features.reshape(b * t, w, d)).reshape(b, t, -1)
        return self.smoother(content) if self.smoother is not None else content

    def start_shape(self, reference: torch.Tensor, mean_shape: torch.Tensor | None) -> torch.Tensor:
        """[B,68,2] shape the offsets start from: the reference, or its driven points from ``mean_shape``."""
        if self.config.mouth_start == "reference" or mean_shape is None:
            return reference
        mask = self.point_mask.reshape(_NUM_POINTS, 2)
        return reference + (mean_shape - reference) * mask

    def decode(self, content, reference, speaker, state=None, mean_shape=None):
        """Content [B,T,C] → (landmarks, intermediate, state); ``state`` carries both LSTMs across chunks."""
        b, t, _ = content.shape
        ref_flat = self.start_shape(reference, mean_shape).reshape(b, 1, -1)
        ref_tokens = self.reference_proj(ref_flat).expand(b, t, -1)
        context_state, identity_state = state if state is not None else (None, None)
        content = self.content_dropout(content)
        hidden, context_state = self.context_lstm(torch.cat([content, ref_tokens], dim=-1), context_state)
        offsets = self._to_offsets(self.context_head(hidden) + self.reference_skip(ref_flat))
        intermediate = ref_flat + offsets * self.point_mask  # eq. 1: speaker-independent landmarks
        speaker_tokens = self.speaker_proj(speaker).reshape(b, 1, -1).expand(b, t, -1)
        identity_in = torch.cat([content, speaker_tokens, self.intermediate_proj(intermediate)], dim=-1)
        hidden, identity_state = self.identity_lstm(identity_in, identity_state)
        # eq. 2: refined with the speaker's style
        landmarks = intermediate + self._to_offsets(self.identity_head(hidden)) * self.point_mask
        shape = (b, t, _NUM_POINTS, 2)
        return landmarks.reshape(shape), intermediate.reshape(shape), (context_state, identity_state)

    def forward(self, features, reference, speaker, mean_shape=None, return_intermediate: bool = False):
        landmarks, intermediate, _ = self.decode(self.encode_content(features), reference, speaker, mean_shape=mean_shape)
        return (landmarks, intermediate) if return_intermediate else landmarks


def _eye_frame(points: np.ndarray) -> np.ndarray:
    """[..., 68, 2] crop pixels → [..., 2, 3] similarity matrices crop pixels → canonical units."""
    left = points[..., [_EYE_CORNERS[0], _EYE_CORNERS[1]], :].mean(axis=-2)
    right = points[..., [_EYE_CORNERS[2], _EYE_CORNERS[3]], :].mean(axis=-2)
    axis = right - left
    distance = np.linalg.norm(axis, axis=-1)
    if not np.all(distance > 1e-6):
        raise LandmarkTalkError("landmarks: the two eyes coincide in some frame; the landmarks are not a face")
    cos, sin = axis[..., 0] / distance, axis[..., 1] / distance
    origin = (left + right) / 2
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) / distance[..., None, None]
    offset = -np.einsum("...ij,...j->...i", rotation, origin)
    return np.concatenate([rotation, offset[..., None]], axis=-1).astype(np.float64)


def to_canonical(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks [..., 68, 2] in crop pixels → (canonical points, their [..., 2, 3] crop→canonical frames)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (_NUM_POINTS, 2):
        raise LandmarkTalkError(f"landmarks: expected [..., 68, 2] points, got shape {points.shape}")
    frames = _eye_frame(points)
    canonical = np.einsum("...ij,...pj->...pi", frames[..., :2], points) + frames[..., None, :, 2]
    return canonical.astype(np.float32), frames


def from_canonical(canonical: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Canonical points [..., 68, 2] back to crop pixels through the (broadcastable) frames [..., 2, 3]."""
    inverse = np.linalg.inv(frames[..., :2])
    shifted = np.asarray(canonical, dtype=np.float64) - frames[..., None, :, 2]
    return np.einsum("...ij,...pj->...pi", inverse, shifted).astype(np.float32)


def align_to_reference(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Move each shape [..., 68, 2] by the similarity that best lays its rigid points onto ``reference``'s.

    Least squares over 13 skull-fixed points (nose, eye corners): far steadier than a frame from the four
    eye corners alone, whose jitter a ~1 inter-ocular lever arm would amplify at the mouth.
    """
    points = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    z = points[..., _RIGID_POINTS, 0] + 1j * points[..., _RIGID_POINTS, 1]
    w = reference[..., _RIGID_POINTS, 0] + 1j * reference[..., _RIGID_POINTS, 1]
    zc = z - z.mean(axis=-1, keepdims=True)
    wc = w - w.mean(axis=-1, keepdims=True)
    # 2-D similarity as one complex factor a (rotation and scale) and a shift b: w ≈ a z + b.
    a = (np.conj(zc) * wc).sum(axis=-1) / np.maximum((np.abs(zc) ** 2).sum(axis=-1), 1e-12)
    b = w.mean(axis=-1) - a * z.mean(axis=-1)
    moved = a[..., None] * (points[..., 0] + 1j * points[..., 1]) + b[..., None]
    return np.stack([moved.real, moved.imag], axis=-1).astype(np.float32)


def lip_opening(points: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap [...] of landmarks [..., 68, 2], in the points' units."""
    points = np.asarray(points)
    gaps = [np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1) for a, b in _INNER_LIP_PAIRS]
    return np.mean(gaps, axis=0)


def _checked_speaker(speaker: np.ndarray, config: A2LConfig) -> np.ndarray:
    speaker = np.asarray(speaker, dtype=np.float32).reshape(-1)
    if speaker.shape != (config.speaker_dim,) or not np.isfinite(speaker).all():
        raise LandmarkTalkError(f"speaker: expected a finite [{config.speaker_dim}] embedding, got shape {speaker.shape}")
    return speaker


def _mean_start_shape(config: A2LConfig, canonical: np.ndarray, speaker_frames: np.ndarray | None, shape: np.ndarray,
                      counts: np.ndarray | None = None) -> np.ndarray | None:
    """A ``mouth_start="mean_shape"`` model's mean shape on ``shape``: of ``speaker_frames``, else of the
    reference frames ``canonical`` (each counted ``counts`` times when given)."""
    if config.mouth_start != "mean_shape":
        return None
    own = canonical if speaker_frames is None else np.asarray(speaker_frames, dtype=np.float32)
    if own.ndim != 3 or own.shape[1:] != (_NUM_POINTS, 2) or len(own) == 0:
        raise LandmarkTalkError(f"speaker_frames: expected landmarks [N, 68, 2] with N ≥ 1, got shape {own.shape}")
    aligned = align_to_reference(to_canonical(own)[0], shape)
    if speaker_frames is None and counts is not None:
        return (np.tensordot(counts, aligned.astype(np.float64), axes=1) / counts.sum()).astype(np.float32)
    return aligned.mean(axis=0)


def _shaped_motion(predicted: np.ndarray, start: np.ndarray, scale: float, offset: np.ndarray | None) -> np.ndarray:
    """``start + scale × (predicted - start - offset)``: the predicted motion re-centred and scaled."""
    if scale == 1.0 and offset is None:
        return predicted
    motion = predicted - start
    if offset is not None:
        motion = motion - offset
    return (start + scale * motion).astype(np.float32)


def _checked_motion_scale(motion_scale: float) -> float:
    if not (np.isfinite(motion_scale) and 0.0 <= motion_scale <= 2.0):
        raise LandmarkTalkError(f"motion scale {motion_scale}: give a factor in [0, 2] (1 = as predicted, 0 = a still mouth)")
    return float(motion_scale)


@torch.no_grad()
def predict_landmarks(
    model: A2L, features: AudioFeatures, reference: Landmarks, speaker: np.ndarray, *,
    speaker_frames: np.ndarray | None = None, chunk_frames: int = 2048, motion_scale: float = 1.0,
    center_motion: bool = False,
) -> Landmarks:
    """Landmarks [T, 68, 2] in the reference's crop for every frame of ``features``.

    ``reference`` holds one frame (a photo: every output frame takes its pose) or T frames (a video: each
    output frame is laid onto its reference frame's rigid points, and the identity shape is the median
    of the frames aligned to the first, so the reference's own mouth motion does not leak into the result). ``speaker`` is a
    :func:`~pipelines.audio.compute_speaker_embedding` vector made with the model's ``speaker_method``.
    ``speaker_frames`` [N, 68, 2] (any crop) are landmarks of the speaker talking, whose mean mouth a
    ``mouth_start="mean_shape"`` model starts from; by default the reference frames themselves (for a
    photo that is its own mouth, so give frames of the speaker when you have them).
    ``center_motion`` (a video reference only): shift the predicted motion so that its mean over the clip is
    zero, i.e. the mouth moves around the video's own median mouth rather than around where A2L drifts on
    unheard speech; ``motion_scale`` then scales it (docs/RESULTS.md, "Centring A2L's motion").
    """
    config = model.config
    motion_scale = _checked_motion_scale(motion_scale)
    feats = np.asarray(features.features)
    if features.kind != config.feature_kind:
        raise LandmarkTalkError(f"audio features are {features.kind!r}, the A2L model was trained on {config.feature_kind!r}"
                                + _feature_hint(config))
    if feats.ndim != 3 or len(feats) == 0:
        raise LandmarkTalkError(f"audio features: expected [T, W, D] with T ≥ 1, got shape {feats.shape}")
    if feats.shape[1:] != (config.feature_window, config.feature_dim):
        raise LandmarkTalkError(
            f"audio features have windows of {feats.shape[1]}×{feats.shape[2]}, the A2L model was trained on "
            f"{config.feature_window}×{config.feature_dim}; compute them with window={config.feature_window}"
        )
    num_frames, num_refs = len(feats), len(reference)
    if num_refs not in (1, num_frames):
        raise LandmarkTalkError(
            f"reference: {num_refs} frames for {num_frames} audio frames; give one frame, or one per audio frame "
            "(map a video onto the audio's length first)"
        )
    speaker = _checked_speaker(speaker, config)
    canonical, frames = to_canonical(reference.points)
    shape = np.median(align_to_reference(canonical, canonical[0]), axis=0) if num_refs > 1 else canonical[0]
    mean_shape = _mean_start_shape(config, canonical, speaker_frames, shape)

    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    was_training = model.training
    model.eval()
    try:
        ref_t = torch.as_tensor(shape, device=device, dtype=dtype)[None]
        spk_t = torch.as_tensor(speaker, device=device, dtype=dtype)[None]
        mean_t = None if mean_shape is None else torch.as_tensor(mean_shape, device=device, dtype=dtype)[None]
        content = torch.cat([
            model.content(torch.as_tensor(feats[i:i + chunk_frames], device=device, dtype=dtype))
            for i in range(0, num_frames, chunk_frames)
        ])[None]
        if model.smoother is not None:
            content = model.smoother(content)
        outputs, state = [], None
        for i in range(0, num_frames, chunk_frames):
            landmarks, _, state = model.decode(content[:, i:i + chunk_frames], ref_t, spk_t, state, mean_shape=mean_t)
            outputs.append(landmarks[0].float().cpu().numpy())
        start = model.start_shape(ref_t, mean_t)[0].float().cpu().numpy()
    finally:
        model.train(was_training)
    predicted = np.concatenate(outputs)
    offset = (predicted - start).mean(axis=0) if center_motion and num_refs > 1 else None
    predicted = _shaped_motion(predicted, start, motion_scale, offset)
    placed = align_to_reference(predicted, reference.points) if num_refs > 1 else from_canonical(predicted, frames[0])
    return Landmarks(points=placed.astype(np.float32), crop_size=reference.crop_size, fps=features.fps)


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.median(np.repeat(values, counts, axis=0), axis=0)`` without making the repeated array."""
    total = int(counts.sum())
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    reached = np.cumsum(counts[order], axis=0)  # how many repeated values lie at or below each ordered one

    def at_rank(rank: int) -> np.ndarray:
        return np.take_along_axis(ordered, (reached <= rank).sum(axis=0)[None], axis=0)[0]

    low = at_rank((total - 1) // 2)
    return low if total % 2 else np.mean(np.stack([low, at_rank(total // 2)]), axis=0)


@torch.no_grad()
def stream_landmarks(
    model: A2L, features: Iterable[AudioFeatures], reference: Landmarks, speaker: np.ndarray, *,
    schedule: np.ndarray | None = None, speaker_frames: np.ndarray | None = None, motion_scale: float = 1.0,
    motion_offset: np.ndarray | None = None,
) -> Iterator[Landmarks]:
    """:func:`predict_landmarks` for features that come a window at a time (e.g. from
    :func:`~pipelines.audio.iter_audio_features`): yields landmarks for consecutive frames, equal to the
    whole-clip result, holding only a window of features and the LSTMs' state.

    ``schedule`` [T] (int) names the reference frame each of the T output frames is laid onto; the result
    is that of ``predict_landmarks`` with the reference ``reference.points[schedule]``, without making it.
    Without it ``reference`` holds one frame (a photo) or one per output frame. The temporal smoother looks
    ``half_window`` frames ahead, so each yield trails the features read by that many frames.
    ``motion_offset`` [68, 2] (canonical units; :func:`mean_landmark_motion` of the same input centres the
    motion) is subtracted from the predicted motion, which ``motion_scale`` then scales, as in
    :func:`predict_landmarks`.
    """
    yield from _stream(model, features, reference, speaker, schedule=schedule, speaker_frames=speaker_frames,
                       motion_scale=_checked_motion_scale(motion_scale), motion_offset=motion_offset, place=True)


@torch.no_grad()
def mean_landmark_motion(
    model: A2L, features: Iterable[AudioFeatures], reference: Landmarks, speaker: np.ndarray, *,
    schedule: np.ndarray | None = None, speaker_frames: np.ndarray | None = None,
) -> np.ndarray:
    """Mean [68, 2] (canonical units) of A2L's predicted motion (prediction minus start shape) over the
    frames :func:`stream_landmarks` would make from the same input; pass it back as ``motion_offset`` to
    centre the motion. One extra pass of the model over the features, holding only a window of them."""
    total, frames = None, 0
    for motion in _stream(model, features, reference, speaker, schedule=schedule, speaker_frames=speaker_frames,
                          motion_scale=1.0, motion_offset=None, place=False):
        total = motion.sum(axis=0, dtype=np.float64) if total is None else total + motion.sum(axis=0)
        frames += len(motion)
    return (total / frames).astype(np.float32)


def _stream(model, features, reference, speaker, *, schedule, speaker_frames, motion_scale, motion_offset, place):
    """stream_landmarks' body; ``place`` False yields the raw canonical motion [t, 68, 2] instead."""
    config = model.config
    points = np.asarray(reference.points)
    if schedule is None:
        schedule = None if len(points) == 1 else np.arange(len(points))
    else:
        schedule = np.asarray(schedule, dtype=np.int64).reshape(-1)
        if len(schedule) == 0 or schedule.min() < 0 or schedule.max() >= len(points):
            raise LandmarkTalkError(
                f"schedule: indices must lie in 0..{len(points) - 1} (the reference's frames), got "
                f"{schedule.min() if len(schedule) else 'none'}..{schedule.max() if len(schedule) else ''}"
            )
        if len(schedule) == 1:
            points, schedule = points[schedule], None  # one output frame: predict_landmarks' photo case
    total = None if schedule is None else len(schedule)
    speaker = _checked_speaker(speaker, config)
    canonical, frames = to_canonical(points)
    if schedule is None:
        shape, counts = canonical[0], None
    else:
        counts = np.bincount(schedule, minlength=len(points))
        shape = _weighted_median(align_to_reference(canonical, canonical[schedule[0]]), counts)
    mean_shape = _mean_start_shape(config, canonical, speaker_frames, shape, counts)

    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    ref_t = torch.as_tensor(shape, device=device, dtype=dtype)[None]
    spk_t = torch.as_tensor(speaker, device=device, dtype=dtype)[None]
    mean_t = None if mean_shape is None else torch.as_tensor(mean_shape, device=device, dtype=dtype)[None]
    start = model.start_shape(ref_t, mean_t)[0].float().cpu().numpy()
    if motion_offset is not None:
        motion_offset = np.asarray(motion_offset, dtype=np.float32)
        if motion_offset.shape != (_NUM_POINTS, 2) or not np.isfinite(motion_offset).all():
            raise LandmarkTalkError(f"motion offset: expected a finite [68, 2] array (mean_landmark_motion), got "
                                    f"shape {motion_offset.shape}")
    ahead = model.smoother.config.half_window if model.smoother is not None else 0
    state, done, received = None, 0, 0
    content, content_start = None, 0  # unsmoothed content of frames content_start..received-1

    def decode_until(stop: int) -> Landmarks:
        """Landmarks of frames ``done..stop-1``: ``content`` holds frames from ``ahead`` before ``done`` (or the
        clip's start) to the last received, so the smoother sees what it sees in the whole clip."""
        nonlocal state, done, content, content_start
        smoothed = model.smoother(content) if model.smoother is not None else content
        first = done - content_start
        landmarks, _, state = model.decode(smoothed[:, first:first + stop - done], ref_t, spk_t, state, mean_shape=mean_t)
        predicted = landmarks[0].float().cpu().numpy()
        keep = max(stop - ahead, 0)
        if not place:
            content, content_start, done = content[:, keep - content_start:], keep, stop
            return predicted - start
        predicted = _shaped_motion(predicted, start, motion_scale, motion_offset)
        if schedule is None:
            placed = from_canonical(predicted, frames[0])
        else:
            placed = align_to_reference(predicted, points[schedule[done:stop]])
        content, content_start, done = content[:, keep - content_start:], keep, stop
        return Landmarks(points=placed.astype(np.float32), crop_size=reference.crop_size, fps=fps)

    was_training = model.training
    model.eval()
    fps = reference.fps
    try:
        for window in features:
            feats = np.asarray(window.features)
            if window.kind != config.feature_kind:
                raise LandmarkTalkError(
                    f"audio features are {window.kind!r}, the A2L model was trained on {config.feature_kind!r}"
                    + _feature_hint(config))
            if feats.ndim != 3 or feats.shape[1:] != (config.feature_window, config.feature_dim):
                raise LandmarkTalkError(
                    f"audio features: expected windows [t, {config.feature_window}, {config.feature_dim}], got shape "
                    f"{feats.shape}; compute them with window={config.feature_window}")
            if len(feats) == 0:
                continue
            fps = window.fps
            if total is not None and received + len(feats) > total:
                raise LandmarkTalkError(
                    f"reference: {total} frames for at least {received + len(feats)} audio frames; give one frame, "
                    "or one per audio frame")
            encoded = model.content(torch.as_tensor(feats, device=device, dtype=dtype))[None]
            content = encoded if content is None else torch.cat([content, encoded], dim=1)
            received += len(feats)
            if received - ahead > done:
                yield decode_until(received - ahead)
        if received == 0:
            raise LandmarkTalkError("audio features: no frames; give at least one frame of audio")
        if total is not None and received != total:
            raise LandmarkTalkError(
                f"reference: {total} frames for {received} audio frames; give one frame, or one per audio frame")
        if received > done:
            yield decode_until(received)
    finally:
        model.train(was_training)
