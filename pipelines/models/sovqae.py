"""SOVQAE (LaDTalk): a person-specific vector-quantised autoencoder that restores a lip-sync output's detail.

LaDTalk's argument: a VQ autoencoder trained on one person's sharp faces maps a blurred or noisy
version of those faces onto the same discrete codes (the codebook snaps small latent errors back,
with a bound set by the encoder's Lipschitz constant and the code spacing), so its decoder redraws the
sharp texture. Here that is trained directly: the encoder sees degraded crops
(:func:`pipelines.refine.degrade_faces`), the decoder must return the sharp crop, and a codebook
regulariser pulls each degraded latent onto the code the sharp crop selects.

- encoder/decoder: diffusers' ``Encoder``/``Decoder`` (ResNet blocks, GroupNorm, SiLU), downsampling
  ``2**(len(block_channels) - 1)``; both presets keep a 32×32 code grid ("space" is the code grid size:
  finer grids keep more detail, coarser ones absorb more noise);
- quantiser: :class:`EMAVectorQuantizer`, codebook updated by exponential moving averages of the
  sharp latents assigned to each code (no codebook gradient), dead codes restarted from live latents.

Images are [B, 3, S, S] RGB in 0..1 at the model's ``image_size``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..errors import LandmarkTalkError

__all__ = ["SOVQAEConfig", "SOVQAE", "EMAVectorQuantizer", "SOVQAE_PRESETS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SOVQAEConfig:
    """Architecture and quantiser settings (loss weights are training options, see ``sovqae_task``)."""

    image_size: int = 256
    block_channels: tuple[int, ...] = (64, 128, 128, 256)
    layers_per_block: int = 1
    norm_groups: int = 32
    latent_dim: int = 32
    codebook_size: int = 1024
    codebook_decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA assignments per batch below which a code is restarted
    mid_attention: bool = False

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.block_channels) - 1)


SOVQAE_PRESETS: dict[str, SOVQAEConfig] = {
    # 256² crops, 32² codes: the default for a GPU fit.
    "256": SOVQAEConfig(),
    # 128² crops, 32² codes, a third of the width: trains on a CPU in minutes.
    "cpu128": SOVQAEConfig(image_size=128, block_channels=(32, 64, 96), norm_groups=16, latent_dim=32,
                           codebook_size=512),
}


class EMAVectorQuantizer(nn.Module):
    """Nearest-code quantiser whose codebook follows an exponential moving average of its assigned latents.

    Buffers (saved with the model): ``codebook`` [K, D], ``cluster_size`` [K] (EMA of assignments per
    call) and ``embed_sum`` [K, D]. A code whose ``cluster_size`` falls below ``dead_code_threshold``
    is moved onto a latent of the current batch, drawn where the codebook fits worst (k-means++
    sampling); the all-zero start makes the first update initialise (nearly) every code from data.
    """

    def __init__(self, num_codes: int, dim: int, *, decay: float = 0.99, dead_code_threshold: float = 1.0,
                 eps: float = 1e-5):
        super().__init__()
        if num_codes < 2 or dim < 1 or not 0.0 < decay < 1.0:
            raise LandmarkTalkError(f"quantiser: {num_codes} codes of {dim} dims with decay {decay}; "
                                    "give ≥ 2 codes, ≥ 1 dim and a decay in (0, 1)")
        self.num_codes, self.dim, self.decay, self.eps = num_codes, dim, decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.register_buffer("codebook", torch.randn(num_codes, dim))
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_sum", torch.zeros(num_codes, dim))

    def distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared distances [N, K] from latents [N, D] to every code (float32)."""
        codebook = self.codebook.float()
        return (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None]).clamp_min(0)

    def codes_for(self, latents: torch.Tensor) -> torch.Tensor:
        """Indices [B, H, W] of the nearest code for latents [B, D, H, W]."""
        flat = latents.float().permute(0, 2, 3, 1).reshape(-1, self.dim)
        b, _, h, w = latents.shape
        return self.distances(flat).argmin(1).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes [B, D, H, W] for indices [B, H, W]."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    def forward(self, latents: torch.Tensor, *, update_codebook: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised latents with a straight-through gradient, indices [B,H,W]); updates the codebook if asked."""
        indices = self.codes_for(latents)
        quantised = self.lookup(indices).to(latents.dtype)
        if update_codebook:
            self._update(latents.detach().float().permute(0, 2, 3, 1).reshape(-1, self.dim), indices.flatten())
        return latents + (quantised - latents).detach(), indices

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        # Laplace smoothing keeps rarely used codes finite.
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        live = self.cluster_size >= self.dead_code_threshold
        self.codebook.copy_(torch.where(live[:, None], self.embed_sum / smoothed.clamp_min(self.eps)[:, None],
                                        self.codebook))
        dead = ~live
        if dead.any():
            fresh = self._spread_picks(flat, int(dead.sum()))
            if distributed:
                dist.broadcast(fresh, src=0)  # every process must restart to the same codes
            # Twice the threshold gives a restarted code some steps to attract latents before it can expire.
            self.codebook[dead] = fresh
            self.embed_sum[dead] = fresh * 2 * self.dead_code_threshold
            self.cluster_size[dead] = 2 * self.dead_code_threshold
            logger.debug("restarted %d dead codes", int(dead.sum()))

    def _spread_picks(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` latents drawn k-means++ style: each with probability ∝ squared distance to the nearest
        live code or earlier pick, so restarts land where the codebook covers the data worst."""
        live = self.cluster_size >= self.dead_code_threshold
        nearest = (self.distances(flat)[:, live].min(1).values if live.any()
                   else torch.full((flat.shape[0],), 1.0, device=flat.device))
        picks = []
        for _ in range(count):
            weights = nearest + 1e-12
            choice = flat[torch.multinomial(weights / weights.sum(), 1)[0]]
            picks.append(choice)
            nearest = torch.minimum(nearest, (flat - choice).pow(2).sum(1))
        return torch.stack(picks)


def _finite_differences(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


class SOVQAE(nn.Module):
    """Encoder → EMA vector quantiser → decoder over face crops; ``forward`` refines [B,3,S,S] 0..1 images."""

    config_class = SOVQAEConfig

    def __init__(self, config: SOVQAEConfig | None = None):
        super().__init__()
        from diffusers.models.autoencoders.vae import Decoder, Encoder

        self.config = config = config or SOVQAEConfig()
        if config.image_size % config.downsampling:
            raise LandmarkTalkError(
                f"SOVQAEConfig: image_size {config.image_size} is not a multiple of the downsampling "
                f"{config.downsampling}; pick a size divisible by it"
            )
        if any(c % config.norm_groups for c in config.block_channels):
            raise LandmarkTalkError(
                f"SOVQAEConfig: block_channels {config.block_channels} must be multiples of norm_groups {config.norm_groups}"
            )
        levels = len(config.block_channels)
        self.encoder = Encoder(
            in_channels=3, out_channels=config.latent_dim, down_block_types=("DownEncoderBlock2D",) * levels,
            block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, double_z=False, mid_block_add_attention=config.mid_attention,
        )
        self.quantizer = EMAVectorQuantizer(config.codebook_size, config.latent_dim, decay=config.codebook_decay,
                                            dead_code_threshold=config.dead_code_threshold)
        self.decoder = Decoder(
            in_channels=config.latent_dim, out_channels=3, up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, mid_block_add_attention=config.mid_attention,
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous latents [B, D, S/f, S/f] for images in 0..1."""
        return self.encoder(images * 2 - 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (unclamped, ~0..1) from quantised latents."""
        return (self.decoder(latents) + 1) / 2

    def forward(self, images: torch.Tensor, target: torch.Tensor | None = None, **loss_weights):
        """Refined images; with ``target``, the training ``(loss, parts)`` of :meth:`training_losses`.

        Training goes through ``forward`` so a DistributedDataParallel wrapper sees the call and syncs gradients.
        """
        if target is not None:
            return self.training_losses(images, target, **loss_weights)
        quantised, _ = self.quantizer(self.encode(images))
        return self.decode(quantised)

    def training_losses(
        self,
        degraded: torch.Tensor,
        sharp: torch.Tensor,
        *,
        commitment_weight: float = 0.25,
        robustness_weight: float = 1.0,
        usage_weight: float = 0.1,
        edge_weight: float = 0.5,
        usage_temperature: float = 0.1,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for restoring ``sharp`` from ``degraded`` (both [B,3,S,S] 0..1); updates the codebook in train mode.

        - reconstruction: L1 + ``edge_weight`` × L1 of image gradients (the detail LaDTalk restores);
        - commitment: sharp latents stay near their codes (the codebook itself moves by EMA);
        - robustness (codebook regulariser): degraded latents are pulled onto the codes the sharp crop selects,
          so degradations up to that margin decode to the sharp face;
        - usage: 1 − normalised entropy of the batch's mean soft assignment, against codebook collapse.
        """
        sharp_latents = self.encode(sharp)
        _, sharp_codes = self.quantizer(sharp_latents, update_codebook=self.training)
        sharp_targets = self.quantizer.lookup(sharp_codes).to(sharp_latents.dtype)
        degraded_latents = self.encode(degraded)
        quantised, _ = self.quantizer(degraded_latents)
        restored = self.decode(quantised)

        reconstruction = F.l1_loss(restored.float(), sharp.float())
        (rdx, rdy), (sdx, sdy) = _finite_differences(restored.float()), _finite_differences(sharp.float())
        edges = F.l1_loss(rdx, sdx) + F.l1_loss(rdy, sdy)
        commitment = F.mse_loss(sharp_latents.float(), sharp_targets.float())
        robustness = F.mse_loss(degraded_latents.float(), sharp_targets.float())

        flat = sharp_latents.float().permute(0, 2, 3, 1).reshape(-1, self.config.latent_dim)
        distances = self.quantizer.distances(flat)
        probabilities = torch.softmax(-distances / (usage_temperature * distances.mean().detach() + 1e-8), dim=1)
        mean_assignment = probabilities.mean(0)
        entropy = -(mean_assignment * (mean_assignment + 1e-10).log()).sum()
        usage = 1 - entropy / torch.log(torch.tensor(float(self.config.codebook_size)))

        total = (reconstruction + edge_weight * edges + commitment_weight * commitment
                 + robustness_weight * robustness + usage_weight * usage)
        used = torch.unique(sharp_codes).numel() / self.config.codebook_size
        return total, {
            "reconstruction": reconstruction.detach(), "edges": edges.detach(), "commitment": commitment.detach(),
            "robustness": robustness.detach(), "usage": usage.detach(), "codes_used": torch.tensor(used),
        }
