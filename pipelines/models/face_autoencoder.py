"""The pack's own face autoencoder: a small KL-regularised image autoencoder (LDM "f = 4") for aligned crops.

L2V and DiffTalk diffuse in the latent space of an f = 4 autoencoder (64×64 latents for 256² faces).
When no ComfyUI VAE is given, this model provides that space; it is small enough to fit at 128² on a
CPU. Encoder and decoder are diffusers' ``Encoder``/``Decoder`` (ResNet blocks with GroupNorm and SiLU);
the encoder predicts a diagonal Gaussian (``double_z``), the decoder reads its mean.

Images are [B, 3, H, W] RGB in -1..1 with H and W divisible by ``downscale``; latents are
[B, latent_channels, H / downscale, W / downscale]. Trained by :mod:`pipelines.train.face_autoencoder_task`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LandmarkTalkError

__all__ = ["FaceAutoencoderConfig", "FaceAutoencoder", "FACE_AUTOENCODER_PRESETS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceAutoencoderConfig:
    """Architecture; ``image_size`` is the crop side it trains at (it runs at any multiple of ``downscale``)."""

    image_size: int = 128
    block_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    latent_channels: int = 4
    mid_attention: bool = False

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_channels) - 1)


FACE_AUTOENCODER_PRESETS: dict[str, FaceAutoencoderConfig] = {
    # 128² crops → 32² × 4 latents; narrow at full resolution so it trains on a CPU
    # (measured ≈ 1.1 s per batch of 8 on one busy core).
    "cpu128": FaceAutoencoderConfig(),
    # 256² crops → 64² × 4 latents (the papers' setting), for a GPU fit.
    "256": FaceAutoencoderConfig(image_size=256, block_channels=(64, 128, 256), layers_per_block=2, norm_groups=32,
                                 mid_attention=True),
}


class FaceAutoencoder(nn.Module):
    """KL autoencoder: ``encode`` → Gaussian posterior mean (or a sample), ``decode`` → image."""

    config_class = FaceAutoencoderConfig

    def __init__(self, config: FaceAutoencoderConfig):
        super().__init__()
        from diffusers.models.autoencoders.vae import Decoder, Encoder

        if any(c % config.norm_groups for c in config.block_channels):
            raise LandmarkTalkError(f"face autoencoder: block_channels {config.block_channels} must be multiples "
                                    f"of norm_groups {config.norm_groups}")
        self.config = config
        n = len(config.block_channels)
        self.encoder = Encoder(
            in_channels=3, out_channels=config.latent_channels, down_block_types=("DownEncoderBlock2D",) * n,
            block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, act_fn="silu", double_z=True,
            mid_block_add_attention=config.mid_attention,
        )
        self.decoder = Decoder(
            in_channels=config.latent_channels, out_channels=3, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, act_fn="silu", mid_block_add_attention=config.mid_attention,
        )

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.config.downscale
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % f or images.shape[-2] % f:
            raise LandmarkTalkError(
                f"face autoencoder: images must be [B,3,H,W] with H, W divisible by {f}; got {tuple(images.shape)}"
            )

    def posterior(self, images: torch.Tensor):
        """The encoder's diagonal Gaussian (diffusers ``DiagonalGaussianDistribution``) over latents."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        self._check_images(images)
        return DiagonalGaussianDistribution(self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latent means [B, C, H/f, W/f] of images in -1..1."""
        return self.posterior(images).mean

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, h·f, w·f] (about -1..1, not clamped) from latents."""
        return self.decoder(latents)

    def forward(self, images: torch.Tensor, *, sample: bool | None = None):
        """Reconstruct ``images``; returns ``(reconstruction, posterior)``.

        ``sample`` draws a latent from the posterior (the VAE's reparameterisation); by default it does so
        in training mode and uses the mean in eval mode.
        """
        posterior = self.posterior(images)
        use_sample = self.training if sample is None else sample
        latents = posterior.sample() if use_sample else posterior.mean
        return self.decode(latents), posterior
