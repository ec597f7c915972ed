"""L2V: the landmark-conditioned latent diffusion renderer (Tan et al. 2024, §II-C; DiffTalk, Shen et al. 2023).

A UNet (diffusers' ``UNet2DConditionModel``) denoises a face crop's latent given, concatenated on channels,

- ``pose``: the target frame with its lower face masked, encoded (head pose, background, upper face);
- ``identity``: a reference frame of the same person (teeth, lips, skin), ≥ 60 frames away in training;
- ``landmark_image``: the target landmarks rasterised without the codec (3 channels: face
  outline/eyes/brows/nose lines, filled outer lips, filled inner mouth), at the latent side or, with
  ``landmark_raster_scale`` s > 1, at s times it and pixel-unshuffled onto the latent grid.

and, through cross-attention keys/values, tokens from an MLP over the 68 normalised landmark coordinates,
optionally joined by audio feature tokens (DiffTalk's smoothed audio windows, already smoothed by the
audio stage). The landmark image is rasterised onto the latent grid instead of being encoded by the codec
(the papers encode it): thin line drawings are far from what image autoencoders are trained on, a codec-free
map works unchanged with any codec (including a ComfyUI VAE), and it saves one encoder pass per frame.

Landmark condition dropout (image zeroed, tokens replaced by learned null tokens) is trained so that
sampling can use classifier-free guidance on the landmarks. Latents are normalised inside the model's
space by ``(z - latent_shift) * latent_scale`` (measured on the training latents, as LDM's scale factor).

Public helpers build the inputs from crops (:func:`encode_pose_latents`, masking with
:func:`pipelines.face.masks.lower_face_mask`; :func:`landmark_inputs`),
sample a clip (:func:`render_latents`) and load a checkpoint checked against a codec (:func:`load_l2v`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import LandmarkTalkError

__all__ = ["L2VConfig", "L2VDenoiser", "L2V_PRESETS", "load_l2v", "encode_pose_latents", "landmark_inputs",
           "render_latents"]

logger = logging.getLogger(__name__)

_NUM_POINTS = 68
_LANDMARK_CHANNELS = 3


@dataclass(frozen=True)
class L2VConfig:
    """Architecture, latent space and diffusion settings of an L2V denoiser.

    ``image_size`` is the crop side the model renders; ``downscale``/``latent_channels``/``latent_space``
    describe the codec it was trained with (latent side = ``image_size // downscale``).
    ``cross_attention`` flags, per UNet level, whether that level has cross-attention blocks.
    ``attention_heads`` is the number of heads per attention layer. ``audio_dim`` > 0 adds
    ``audio_window`` audio tokens per frame. ``landmark_raster_scale`` s: the landmark image is drawn at
    s × the latent side and folded into the latent grid by pixel-unshuffle (3·s² input channels), so the
    lip outlines keep s times finer positions than an image drawn at the latent side (s = 1).
    """

    image_size: int = 128
    downscale: int = 4
    latent_channels: int = 4
    latent_space: str = ""
    latent_shift: float = 0.0
    latent_scale: float = 1.0
    block_channels: tuple[int, ...] = (32, 64)
    cross_attention: tuple[bool, ...] = (False, True)
    layers_per_block: int = 1
    attention_heads: int = 8
    norm_groups: int = 8
    embed_dim: int = 64
    landmark_tokens: int = 8
    landmark_hidden: int = 256
    audio_dim: int = 0
    audio_window: int = 0
    landmark_raster_scale: int = 1
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downscale

    @property
    def landmark_image_size(self) -> int:
        """Side of the landmark image the model takes (:func:`landmark_inputs`)."""
        return self.latent_size * self.landmark_raster_scale


L2V_PRESETS: dict[str, L2VConfig] = {
    # 128² crops (32² latents with an f = 4 codec), ~1 M parameters: trains on a CPU in minutes.
    "tiny": L2VConfig(),
    # Twice the width and two layers per block (~6 M parameters with TAEF2 latents): the `tiny` fit's L2V.
    # On a 3000-step CPU fit it reached a lower hold-out loss than `tiny` at 6000 steps and made the render
    # depend far less on its noise seed (docs/RESULTS.md). Its landmark image is drawn at 4× the latent side
    # (2 crop pixels a cell with TAEF2's f = 8): lips placed to a pixel, not to an 8-pixel latent cell, cut the
    # true-landmark render's mouth error on vretalking_face_1 from 1.20 to 0.88 px (docs/RESULTS.md).
    "small": L2VConfig(block_channels=(64, 128), layers_per_block=2, landmark_raster_scale=4),
    # The papers' setting: 256² crops, 64² × 4 latents with an f = 4 codec.
    "base": L2VConfig(image_size=256, block_channels=(128, 256, 384, 512), cross_attention=(False, True, True, True),
                      layers_per_block=2, attention_heads=8, norm_groups=32, embed_dim=256, landmark_tokens=16,
                      landmark_hidden=512),
}


class L2VDenoiser(nn.Module):
    """ε/v-predicting UNet over concat[z_t, z_pose, z_identity, landmark image] with landmark (+audio) tokens."""

    config_class = L2VConfig

    def __init__(self, config: L2VConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self._check_config(config)
        self.config = config
        c, d = config.latent_channels, config.embed_dim
        self.landmark_mlp = nn.Sequential(
            nn.Linear(_NUM_POINTS * 2, config.landmark_hidden), nn.SiLU(),
            nn.Linear(config.landmark_hidden, config.landmark_hidden), nn.SiLU(),
            nn.Linear(config.landmark_hidden, config.landmark_tokens * d),
        )
        self.token_position = nn.Parameter(torch.randn(config.landmark_tokens, d) * 0.02)
        num_tokens = config.landmark_tokens
        if config.audio_dim:
            self.audio_proj = nn.Linear(config.audio_dim, d)
            self.audio_position = nn.Parameter(torch.randn(config.audio_window, d) * 0.02)
            num_tokens += config.audio_window
        # What the cross-attention sees when the landmark condition is dropped (classifier-free guidance).
        self.null_tokens = nn.Parameter(torch.randn(num_tokens, d) * 0.02)
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention))
        self.unet = UNet2DConditionModel(
            sample_size=config.latent_size, in_channels=3 * c + _LANDMARK_CHANNELS * config.landmark_raster_scale ** 2,
            out_channels=c,
            down_block_types=down, up_block_types=up, block_out_channels=config.block_channels,
            layers_per_block=config.layers_per_block, norm_num_groups=config.norm_groups, cross_attention_dim=d,
            attention_head_dim=config.attention_heads,  # diffusers' legacy name: this is the head count
        )

    @staticmethod
    def _check_config(config: L2VConfig) -> None:
        if config.image_size % config.downscale:
            raise LandmarkTalkError(
                f"l2v: image_size {config.image_size} is not a multiple of downscale {config.downscale}"
            )
        levels = len(config.block_channels)
        if len(config.cross_attention) != levels:
            raise LandmarkTalkError(
                f"l2v: cross_attention needs one flag per level ({levels}), got {config.cross_attention}"
            )
        if config.latent_size % 2 ** (levels - 1):
            raise LandmarkTalkError(
                f"l2v: latent side {config.latent_size} must be divisible by {2 ** (levels - 1)} for {levels} UNet levels"
            )
        if any(ch % config.norm_groups for ch in config.block_channels):
            raise LandmarkTalkError(
                f"l2v: block_channels {config.block_channels} must be multiples of norm_groups {config.norm_groups}"
            )
        if config.prediction_type not in ("epsilon", "v_prediction"):
            raise LandmarkTalkError(f"l2v: prediction_type {config.prediction_type!r}; use 'epsilon' or 'v_prediction'")
        if bool(config.audio_dim) != bool(config.audio_window):
            raise LandmarkTalkError("l2v: set both audio_dim and audio_window (or neither)")
        if config.landmark_raster_scale < 1:
            raise LandmarkTalkError(f"l2v: landmark_raster_scale {config.landmark_raster_scale}; give 1 or more")

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Codec latents → the model's unit-scale latents."""
        return (latents - self.config.latent_shift) * self.config.latent_scale

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The model's latents → codec latents."""
        return latents / self.config.latent_scale + self.config.latent_shift

    def condition_tokens(self, landmark_points: torch.Tensor, audio: torch.Tensor | None = None,
                         drop_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-attention tokens [B, N, embed_dim] from landmarks [B, 68, 2] in -1..1 (and audio [B, W, D])."""
        b = landmark_points.shape[0]
        tokens = self.landmark_mlp(landmark_points.reshape(b, -1)).view(b, self.config.landmark_tokens, -1)
        tokens = tokens + self.token_position
        if self.config.audio_dim:
            if audio is None or audio.shape[1:] != (self.config.audio_window, self.config.audio_dim):
                got = None if audio is None else tuple(audio.shape)
                expected = f"[B,{self.config.audio_window},{self.config.audio_dim}]"
                raise LandmarkTalkError(f"l2v: this model takes audio features {expected}, got {got}")
            tokens = torch.cat([tokens, self.audio_proj(audio) + self.audio_position], dim=1)
        if drop_condition is not None:
            keep = (~drop_condition).to(tokens.dtype).view(b, 1, 1)
            tokens = tokens * keep + self.null_tokens.to(tokens.dtype) * (1 - keep)
        return tokens

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        pose: torch.Tensor,
        identity: torch.Tensor,
        landmark_image: torch.Tensor,
        landmark_points: torch.Tensor,
        audio: torch.Tensor | None = None,
        drop_condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The ε or v prediction [B, C, h, w] for normalised ``noisy`` latents at training ``timesteps`` [B].

        ``pose``/``identity``: normalised latents [B, C, h, w]; ``landmark_image``: [B, 3, s·h, s·w] in 0..1
        (s = ``landmark_raster_scale``);
        ``landmark_points``: [B, 68, 2] in -1..1; ``drop_condition``: bool [B], True drops the landmark
        (and audio) condition.
        """
        b = noisy.shape[0]
        if drop_condition is not None:
            landmark_image = landmark_image * (~drop_condition).to(landmark_image.dtype).view(b, 1, 1, 1)
        tokens = self.condition_tokens(landmark_points, audio, drop_condition)
        # (s h) (s w) → (3 s s) h w: every fine raster cell keeps a channel of its own.
        landmark_image = F.pixel_unshuffle(landmark_image, self.config.landmark_raster_scale)
        x = torch.cat([noisy, pose, identity, landmark_image.to(noisy.dtype)], dim=1)
        timesteps = torch.as_tensor(timesteps, device=noisy.device).expand(b)
        return self.unet(x, timesteps, encoder_hidden_states=tokens).sample


def _check_latent_space(model: L2VDenoiser, codec, where: str) -> None:
    config = model.config
    stored = getattr(model, "checkpoint_metadata", {}).get("landmarktalk.latent_space", config.latent_space)
    problems = []
    if stored and codec.name != stored:
        problems.append(f"it was trained in latent space {stored!r} but the codec is {codec.name!r}")
    if codec.channels != config.latent_channels or codec.downscale != config.downscale:
        problems.append(f"it expects {config.latent_channels}-channel latents at 1/{config.downscale} scale, "
                        f"the codec gives {codec.channels} at 1/{codec.downscale}")
    if problems:
        raise LandmarkTalkError(
            f"{where}: {'; '.join(problems)}; use the autoencoder the L2V model was trained with, or fit an L2V "
            "model for this one"
        )


def load_l2v(path: str | os.PathLike, codec=None, *, device: str | torch.device = "cpu") -> L2VDenoiser:
    """Load an L2V checkpoint; with ``codec`` given, refuse it unless it was trained in that codec's latent space."""
    from ..checkpoint import load_checkpoint

    model = load_checkpoint(path, "l2v", device=device)
    if codec is not None:
        _check_latent_space(model, codec, str(path))
    return model


# ---- condition inputs --------------------------------------------------------------------------------------
# The L2V landmark image is drawn here rather than with pipelines.face.raster.rasterize_landmarks (lines
# only): filled outer-lip and inner-mouth channels make the opening an area, which a small model picks up
# far sooner (measured on the drawn-face test clip after 120 steps, same mask: correlation of rendered
# mouth darkness with the opening 0.90 with these channels vs −0.15 with the colour-coded lines).
_OPEN_LINES = (range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36))
_CLOSED_LINES = (range(36, 42), range(42, 48))
_OUTER_LIPS, _INNER_LIPS = range(48, 60), range(60, 68)
_RASTER_OVERSAMPLE = 4
_SUBPIXEL_BITS = 4


def _as_points(landmarks_px) -> np.ndarray:
    points = np.asarray(landmarks_px.detach().cpu() if isinstance(landmarks_px, torch.Tensor) else landmarks_px,
                        dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (_NUM_POINTS, 2):
        raise LandmarkTalkError(f"landmarks: expected [T,68,2] crop pixels, got {points.shape}")
    return points


def _rasterize_landmarks(points: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """float32 [T, 3, size, size] in 0..1: drawn at 4× ``size`` with sub-pixel precision, then area-averaged."""
    big = size * _RASTER_OVERSAMPLE
    scale = big / crop_size * (1 << _SUBPIXEL_BITS)
    out = np.empty((len(points), _LANDMARK_CHANNELS, size, size), np.float32)
    canvas = np.zeros((_LANDMARK_CHANNELS, big, big), np.uint8)
    for t, frame in enumerate(points):
        fixed = np.round(frame * scale).astype(np.int32)
        canvas[:] = 0
        lines = [fixed[list(r)] for r in _OPEN_LINES]
        cv2.polylines(canvas[0], lines, False, 255, 2, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.polylines(canvas[0], [fixed[list(r)] for r in _CLOSED_LINES], True, 255, 2, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.fillPoly(canvas[1], [fixed[list(_OUTER_LIPS)]], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.fillPoly(canvas[2], [fixed[list(_INNER_LIPS)]], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
        for c in range(_LANDMARK_CHANNELS):
            out[t, c] = cv2.resize(canvas[c], (size, size), interpolation=cv2.INTER_AREA) / 255.0
    return out


def landmark_inputs(landmarks_px, crop_size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The landmark condition: (image [T, 3, image_size, image_size] in 0..1, coordinates [T, 68, 2] in -1..1).

    ``landmarks_px``: [T, 68, 2] in pixels of a ``crop_size``² crop (iBUG order); ``image_size``: the
    model's :attr:`L2VConfig.landmark_image_size`.
    """
    from ..face.raster import landmark_coordinates

    points = _as_points(landmarks_px)
    image = torch.from_numpy(_rasterize_landmarks(points, crop_size, image_size))
    return image, torch.from_numpy(landmark_coordinates(points, crop_size, signed=True))


def encode_pose_latents(codec, crops: torch.Tensor, landmarks_px, *, landmarks_crop_size: int | None = None,
                        chunk_size: int = 16) -> torch.Tensor:
    """Codec latents [T, C, h, w] (on CPU) of crops [T, 3, S, S] in -1..1 with the lower face masked to grey.

    The mask is :func:`pipelines.face.masks.lower_face_mask` of ``landmarks_px`` [T, 68, 2], the frames'
    own landmarks in pixels of a ``landmarks_crop_size``² crop (default S): the template jaw placed by
    the head pose, so the mask does not leak how open the mouth is.
    """
    from ..face.masks import lower_face_mask

    points = _as_points(landmarks_px)
    if crops.ndim != 4 or crops.shape[1] != 3 or len(crops) != len(points):
        raise LandmarkTalkError(f"crops: expected [{len(points)},3,S,S] in -1..1, got {tuple(crops.shape)}")
    out = []
    for start in range(0, len(crops), chunk_size):
        part = crops[start:start + chunk_size]
        mask = torch.from_numpy(lower_face_mask(points[start:start + chunk_size], part.shape[-1],
                                                source_size=landmarks_crop_size))
        out.append(codec.encode(part * (1.0 - mask[:, None].to(part.device, part.dtype))).cpu())
    return torch.cat(out)


@torch.no_grad()
def render_latents(
    model: L2VDenoiser,
    codec,
    *,
    pose: torch.Tensor,
    identity: torch.Tensor,
    landmark_images: torch.Tensor,
    landmark_points: torch.Tensor,
    audio: torch.Tensor | None = None,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    chunk_size: int = 16,
    progressive: float = 0.0,
    previous: torch.Tensor | None = None,
    denoise: float = 1.0,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sample the face latents of T frames; returns codec latents [T, C, h, w] float32 on ``device``.

    - ``pose`` [T, C, h, w]: codec latents of the masked frames (:func:`encode_pose_latents`);
      ``identity`` [1 or T, C, h, w]: codec latents of the reference frame(s);
      ``landmark_images`` [T, 3, s·h, s·w], ``landmark_points`` [T, 68, 2]: from :func:`landmark_inputs`;
      ``audio`` [T, W, D] when the model takes audio tokens.
    - ``noise`` [C, h, w]: the initial noise every frame shares (temporal coherence); drawn from
      ``generator`` (CPU) when not given. Pass the same ``noise`` to every call of a streamed clip.
    - ``guidance``: classifier-free guidance scale on the landmark condition (1 = off, one pass per step).
    - ``progressive`` in 0..1: DiffTalk's progressive reference. Each chunk's identity latent is
      ``(1 - p) * identity + p * previous``, where ``previous`` is the last frame generated before the
      chunk (with ``chunk_size=1`` and ``p=1`` exactly "reference of frame i+1 = generated frame i").
      ``previous`` [1, C, h, w] carries it across calls (pass ``out[-1:]`` of the last call).
    - ``denoise`` in (0, 1]: below 1 each frame's sampling starts from its identity reference (after the
      progressive mix) noised to that strength instead of pure noise (:func:`pipelines.sampling.sample_latents`):
      the reference's lips are kept where the landmarks ask for no change, and redrawn where they do.
    - ``callback(step, total, x0)`` counts steps over all chunks; raise from it to cancel.
    - ``device``/``dtype``: where and how the model runs (bf16 → ``torch.autocast``; state stays fp32).
    """
    from ..sampling import Denoiser, guided_denoiser, make_scheduler, sample_latents

    _check_latent_space(model, codec, "l2v model")
    config = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    frames = pose.shape[0]
    latent_shape = (config.latent_channels, config.latent_size, config.latent_size)
    raster = config.landmark_image_size
    checks = {"pose": (pose, latent_shape),
              "landmark_images": (landmark_images, (_LANDMARK_CHANNELS, raster, raster)),
              "landmark_points": (landmark_points, (_NUM_POINTS, 2))}
    for name, (value, shape) in checks.items():
        if tuple(value.shape) != (frames, *shape):
            raise LandmarkTalkError(f"render_latents: {name} must be {(frames, *shape)}, got {tuple(value.shape)}")
    if identity.ndim != 4 or tuple(identity.shape[1:]) != latent_shape or identity.shape[0] not in (1, frames):
        shape = ", ".join(map(str, latent_shape))
        raise LandmarkTalkError(f"render_latents: identity must be [1 or {frames}, {shape}], got {tuple(identity.shape)}")
    if not 0.0 <= progressive <= 1.0:
        raise LandmarkTalkError(f"progressive {progressive}: give a mix in 0..1 (0 = fixed reference)")
    if noise is None:
        noise = torch.randn(latent_shape, generator=generator)
    noise = noise.reshape(1, *latent_shape).to(device=device, dtype=torch.float32)

    scheduler = make_scheduler(sampler, num_train_timesteps=config.num_train_timesteps,
                               beta_schedule=config.beta_schedule, prediction_type=config.prediction_type)
    denoiser = Denoiser(model, scheduler, autocast_dtype=dtype)
    chunks = range(0, frames, max(1, chunk_size))
    total = steps * len(chunks)
    out = []
    for index, start in enumerate(chunks):
        part = slice(start, start + chunk_size)
        n = len(range(frames)[part])
        conditions = {
            "pose": model.normalize_latents(pose[part].to(device, torch.float32)),
            "landmark_image": landmark_images[part].to(device, torch.float32),
            "landmark_points": landmark_points[part].to(device, torch.float32),
        }
        reference = (identity if identity.shape[0] == 1 else identity[part]).to(device, torch.float32)
        if progressive > 0 and previous is not None:
            reference = (1 - progressive) * reference + progressive * previous.to(device, torch.float32)
        conditions["identity"] = model.normalize_latents(reference).expand(n, *latent_shape)
        if audio is not None:
            conditions["audio"] = audio[part].to(device, torch.float32)

        def denoise_fn(x, sigma, drop, conditions=conditions):
            repeat = x.shape[0] // n  # 2 when guidance doubles the batch
            batch = {k: torch.cat([v] * repeat) for k, v in conditions.items()}
            return denoiser(x, sigma, drop_condition=drop, **batch)

        def chunk_callback(step, _steps, x0, offset=index * steps):
            if callback is not None:
                callback(offset + step, total, x0)

        x = sample_latents(guided_denoiser(denoise_fn, guidance), noise.expand(n, *latent_shape), scheduler, steps,
                           callback=chunk_callback, init=conditions["identity"], denoise_strength=denoise)
        x = model.denormalize_latents(x)
        out.append(x)
        previous = x[-1:]
    return torch.cat(out)
