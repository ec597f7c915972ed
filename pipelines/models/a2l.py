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

import numpy as np
import torch
from torch import nn

from ..audio.smoothing import TemporalSmoother, TemporalSmootherConfig
from ..errors import LandmarkTalkError
from ..types import AudioFeatures, Landmarks

__all__ = ["A2LConfig", "A2L", "predict_landmarks", "to_canonical", "from_canonical", "align_to_reference", "lip_opening"]

_NUM_POINTS = 68
_EYE_CORNERS = (36, 39, 42, 45)  # corners barely move when blinking, unlike the lids
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
# Points that move rigidly with the skull: nose bridge and base, and the eye corners (not the lids,
# which blink, nor the brows, which emote, nor the jaw, which speaks).
_RIGID_POINTS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
# Which points the network moves. Speech barely determines eyes, brows and nose, and on a few minutes of
# data predicting them only adds error, so by default they stay where the reference (the pose source) has them.
_DRIVEN_POINTS = {"all": tuple(range(68)), "mouth_jaw": tuple(range(0, 17)) + tuple(range(48, 68))}


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


@torch.no_grad()
def predict_landmarks(
    model: A2L, features: AudioFeatures, reference: Landmarks, speaker: np.ndarray, *,
    speaker_frames: np.ndarray | None = None, chunk_frames: int = 2048,
) -> Landmarks:
    """Landmarks [T, 68, 2] in the reference's crop for every frame of ``features``.

    ``reference`` holds one frame (a photo: every output frame takes its pose) or T frames (a video: each
    output frame is laid onto its reference frame's rigid points, and the identity shape is the median
    of the frames aligned to the first, so the reference's own mouth motion does not leak into the result). ``speaker`` is a
    :func:`~pipelines.audio.compute_speaker_embedding` vector made with the model's ``speaker_method``.
    ``speaker_frames`` [N, 68, 2] (any crop) are landmarks of the speaker talking, whose mean mouth a
    ``mouth_start="mean_shape"`` model starts from; by default the reference frames themselves (for a
    photo that is its own mouth, so give frames of the speaker when you have them).
    """
    config = model.config
    feats = np.asarray(features.features)
    if features.kind != config.feature_kind:
        raise LandmarkTalkError(f"audio features are {features.kind!r}, the A2L model was trained on {config.feature_kind!r}")
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
    speaker = np.asarray(speaker, dtype=np.float32).reshape(-1)
    if speaker.shape != (config.speaker_dim,) or not np.isfinite(speaker).all():
        raise LandmarkTalkError(f"speaker: expected a finite [{config.speaker_dim}] embedding, got shape {speaker.shape}")
    canonical, frames = to_canonical(reference.points)
    shape = np.median(align_to_reference(canonical, canonical[0]), axis=0) if num_refs > 1 else canonical[0]
    mean_shape = None
    if config.mouth_start == "mean_shape":
        own = canonical if speaker_frames is None else np.asarray(speaker_frames, dtype=np.float32)
        if own.ndim != 3 or own.shape[1:] != (_NUM_POINTS, 2) or len(own) == 0:
            raise LandmarkTalkError(f"speaker_frames: expected landmarks [N, 68, 2] with N ≥ 1, got shape {own.shape}")
        mean_shape = align_to_reference(to_canonical(own)[0], shape).mean(axis=0)

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
    finally:
        model.train(was_training)
    predicted = np.concatenate(outputs)
    placed = align_to_reference(predicted, reference.points) if num_refs > 1 else from_canonical(predicted, frames[0])
    return Landmarks(points=placed.astype(np.float32), crop_size=reference.crop_size, fps=features.fps)
