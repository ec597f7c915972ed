"""DAE-Talker (Du et al. 2023): a diffusion autoencoder for face crops and a Conformer speech→latent model.

:class:`DiffusionAutoencoder` holds a semantic encoder (crop → ``z_sem``, a small strided CNN whose last
feature map is flattened, so where the mouth and head are survives) and a conditional DDIM decoder:
diffusers' ``UNet2DModel`` predicting v (or ε) for a pixel-space crop, with ``z_sem`` projected onto the
timestep embedding (``class_embed_type="identity"``) and injected into every ResNet by scale-and-shift
group norm (``resnet_time_scale_shift="scale_shift"``), the AdaGN of diffusion autoencoders
(Preechakul et al. 2022). A frame is decoded from ``z_sem`` and a stochastic code ``x_T``; DAE-Talker keeps
one ``x_T`` (the DDIM inversion of a reference frame) for every frame of a video so the frames agree in
everything ``z_sem`` does not carry.

:class:`SpeechToLatent` maps per-frame audio feature windows ([T, W, D] from
:func:`pipelines.audio.compute_audio_features`) and a head-pose sequence (yaw, pitch, roll in radians,
from :func:`pipelines.dae.estimate_head_pose`) to the ``z_sem`` sequence through Conformer blocks
(Gulati et al. 2020: ½FFN, self-attention, convolution module, ½FFN, LayerNorm). Giving the pose as an
input is DAE-Talker's pose modelling: at inference the pose comes from a driving video or a curve.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LandmarkTalkError

__all__ = ["DAEConfig", "DiffusionAutoencoder", "Speech2LatentConfig", "SpeechToLatent", "DAE_PRESETS",
           "SPEECH2LATENT_PRESETS"]


@dataclass(frozen=True)
class DAEConfig:
    """Crop size, semantic code size, UNet widths and the diffusion schedule of a diffusion autoencoder.

    Pixels are in -1..1. The schedule is DDPM's linear one (pixel-space diffusion); the decoder predicts
    v (``"v_prediction"``) or ε (``"epsilon"``).
    """

    image_size: int = 64
    latent_dim: int = 128
    encoder_channels: tuple[int, ...] = (32, 64, 128, 128)
    block_channels: tuple[int, ...] = (16, 32, 64)
    attention: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    norm_groups: int = 8
    attention_heads: int = 4
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"


DAE_PRESETS: dict[str, DAEConfig] = {
    # 64² crops, ~1.4 M parameters: ~0.4 s per batch-8 step on one CPU thread.
    "tiny": DAEConfig(),
    # The paper's semantic code size on 128² crops; wants a GPU.
    "base": DAEConfig(image_size=128, latent_dim=512, encoder_channels=(64, 128, 256, 256, 512),
                      block_channels=(64, 128, 256, 256), attention=(False, False, True, True),
                      layers_per_block=2, norm_groups=32, attention_heads=8),
}


class _SemanticEncoder(nn.Module):
    """[B, 3, S, S] → [B, latent_dim]: strided convs to a 4² map, flattened (keeps where things are)."""

    def __init__(self, config: DAEConfig):
        super().__init__()
        layers, channels = [], 3
        for out in config.encoder_channels:
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.GroupNorm(min(8, out), out), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.encoder_channels)
        self.head = nn.Linear(channels * side * side, config.latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


class DiffusionAutoencoder(nn.Module):
    """Semantic encoder + v- (or ε-) predicting UNet decoder conditioned on ``z_sem``."""

    config_class = DAEConfig

    def __init__(self, config: DAEConfig):
        super().__init__()
        from diffusers import UNet2DModel

        levels = len(config.block_channels)
        if len(config.attention) != levels:
            raise LandmarkTalkError(f"dae: attention needs one flag per level ({levels}), got {config.attention}")
        if config.image_size % 2 ** max(levels - 1, len(config.encoder_channels)):
            raise LandmarkTalkError(
                f"dae: image_size {config.image_size} must be divisible by {2 ** len(config.encoder_channels)}"
            )
        self.config = config
        self.encoder = _SemanticEncoder(config)
        embed_dim = config.block_channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.latent_proj = nn.Sequential(nn.Linear(config.latent_dim, embed_dim), nn.SiLU(),
                                         nn.Linear(embed_dim, embed_dim))
        self.unet = UNet2DModel(
            sample_size=config.image_size, in_channels=3, out_channels=3,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention)),
            block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, attention_head_dim=config.block_channels[-1] // config.attention_heads,
            resnet_time_scale_shift="scale_shift", class_embed_type="identity",
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Crops [B, 3, S, S] in -1..1 → ``z_sem`` [B, latent_dim]."""
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise LandmarkTalkError(f"dae: expected crops [B, 3, {size}, {size}], got {tuple(images.shape)}")
        return self.encoder(images)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, z_sem: torch.Tensor) -> torch.Tensor:
        """v (or ε) prediction for ``noisy`` [B, 3, S, S] at ``timesteps`` [B] given ``z_sem`` [B, latent_dim]."""
        timesteps = torch.as_tensor(timesteps, device=noisy.device).expand(noisy.shape[0])
        condition = self.latent_proj(z_sem.to(noisy.dtype))
        return self.unet(noisy, timesteps, class_labels=condition).sample


@dataclass(frozen=True)
class Speech2LatentConfig:
    """Conformer speech(+pose) → ``z_sem``. ``audio_window``×``audio_dim`` is one frame's feature window
    (log-mel80 windows of 20 steps by default)."""

    audio_dim: int = 80
    audio_window: int = 20
    pose_dim: int = 3
    latent_dim: int = 128
    model_dim: int = 128
    layers: int = 2
    heads: int = 4
    conv_kernel: int = 7
    ff_mult: int = 4
    dropout: float = 0.1
    context_frames: int = 32  # frames per training window; inference runs overlapping windows of this length


SPEECH2LATENT_PRESETS: dict[str, Speech2LatentConfig] = {
    "tiny": Speech2LatentConfig(),
    "base": Speech2LatentConfig(latent_dim=512, model_dim=256, layers=4, heads=4, conv_kernel=15),
}


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(dim * mult, dim), nn.Dropout(dropout))


class _ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, BatchNorm→GroupNorm(1) (batch-size independent), SiLU, pointwise."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.depth_norm = nn.GroupNorm(1, dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # b t c
        y = self.pointwise_in(self.norm(x).transpose(1, 2))
        y = F.glu(y, dim=1)
        y = F.silu(self.depth_norm(self.depthwise(y)))
        return self.dropout(self.pointwise_out(y).transpose(1, 2))


class _ConformerBlock(nn.Module):
    def __init__(self, config: Speech2LatentConfig):
        super().__init__()
        d = config.model_dim
        self.ff1 = _FeedForward(d, config.ff_mult, config.dropout)
        self.attention_norm = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(config.dropout)
        self.conv = _ConvModule(d, config.conv_kernel, config.dropout)
        self.ff2 = _FeedForward(d, config.ff_mult, config.dropout)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attention_norm(x)
        x = x + self.attention_dropout(self.attention(h, h, h, need_weights=False)[0])
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class SpeechToLatent(nn.Module):
    """Audio windows [B, T, W, D] + pose [B, T, 3] → normalised ``z_sem`` [B, T, latent_dim].

    The buffers ``latent_mean``/``latent_std`` (and ``pose_mean``/``pose_std``) are measured on the
    training set; :meth:`predict_latents` returns ``z_sem`` in the DAE's own units.
    """

    config_class = Speech2LatentConfig

    def __init__(self, config: Speech2LatentConfig):
        super().__init__()
        self.config = config
        d = config.model_dim
        self.audio_proj = nn.Sequential(nn.LayerNorm(config.audio_window * config.audio_dim),
                                        nn.Linear(config.audio_window * config.audio_dim, d))
        self.pose_proj = nn.Linear(config.pose_dim, d)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_ConformerBlock(config) for _ in range(config.layers))
        self.head = nn.Linear(d, config.latent_dim)
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.latent_dim))
        self.register_buffer("pose_mean", torch.zeros(config.pose_dim))
        self.register_buffer("pose_std", torch.ones(config.pose_dim))

    def forward(self, audio: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        c = self.config
        if audio.ndim != 4 or audio.shape[2:] != (c.audio_window, c.audio_dim):
            raise LandmarkTalkError(
                f"speech2latent: audio features must be [B, T, {c.audio_window}, {c.audio_dim}], got {tuple(audio.shape)}; "
                "compute them with the window and kind the model was trained with"
            )
        if pose.shape != (*audio.shape[:2], c.pose_dim):
            raise LandmarkTalkError(f"speech2latent: pose must be [B, T, {c.pose_dim}] like the audio, got {tuple(pose.shape)}")
        pose = (pose - self.pose_mean) / self.pose_std
        x = self.audio_proj(audio.flatten(2)) + self.pose_proj(pose)
        x = self.input_dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def normalize_latents(self, z_sem: torch.Tensor) -> torch.Tensor:
        return (z_sem - self.latent_mean) / self.latent_std

    @torch.no_grad()
    def predict_latents(self, audio: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """``z_sem`` [B, T, latent_dim] in the DAE's units."""
        return self(audio, pose) * self.latent_std + self.latent_mean
