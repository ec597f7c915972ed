"""Face crops ↔ latents behind one interface, whatever autoencoder provides the latent space.

A :class:`LatentCodec` is a named pair of functions: ``encode(images [B,3,H,W] float -1..1) -> latents
[B, channels, H/downscale, W/downscale]`` and ``decode(latents) -> images``. Its ``name`` identifies the
latent space, so a diffusion model trained in one space refuses another. Codecs:

- :func:`face_autoencoder_codec`: the pack's own KL autoencoder (``face_autoencoder:<weights hash>``);
- :func:`callable_codec`: any pair of callables, e.g. a ComfyUI VAE's ``encode``/``decode`` wrapped by a node;
- :func:`taef2_codec`: TAEF2, madebyollin's MIT-licensed tiny autoencoder for the FLUX.2 latent space
  (32 channels, f = 8), built from diffusers' ``EncoderTiny``/``DecoderTiny`` plus the FLUX.2 variant's
  mid-block GroupNorm branch, loaded from ``taef2_encoder.pth``/``taef2_decoder.pth``.

:func:`load_latent_codec` picks one from a path (what the CLI's ``--codec`` takes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import LandmarkTalkError

__all__ = ["LatentCodec", "face_autoencoder_codec", "callable_codec", "taef2_codec", "load_latent_codec"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentCodec:
    """A latent space: ``name`` (its id), ``channels``, spatial ``downscale`` and the two mappings.

    ``module`` is the torch module behind the functions, when there is one, so :meth:`to` can move it;
    its encode/decode functions move their inputs to the module's device and dtype. Outputs are float32.
    """

    name: str
    channels: int
    downscale: int
    encode_fn: Callable[[torch.Tensor], torch.Tensor]
    decode_fn: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module | None = None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LatentCodec":
        """Move the codec's module (if any) to ``device``/``dtype``; returns ``self``."""
        if self.module is not None:
            self.module.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents [B, channels, H/downscale, W/downscale] float32 of images [B, 3, H, W] in -1..1."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise LandmarkTalkError(f"{self.name}: images must be [B,3,H,W] in -1..1, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.downscale or w % self.downscale:
            raise LandmarkTalkError(
                f"{self.name}: image size {h}×{w} is not divisible by the codec's downscale {self.downscale}; "
                f"crop or resize to a multiple of {self.downscale}"
            )
        latents = self.encode_fn(images)
        expected = (images.shape[0], self.channels, h // self.downscale, w // self.downscale)
        if tuple(latents.shape) != expected:
            raise LandmarkTalkError(f"{self.name}: encoder returned {tuple(latents.shape)}, expected {expected}")
        return latents.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, h·downscale, w·downscale] float32, about -1..1 (not clamped)."""
        if latents.ndim != 4 or latents.shape[1] != self.channels:
            raise LandmarkTalkError(
                f"{self.name}: latents must be [B,{self.channels},h,w], got {tuple(latents.shape)}"
            )
        return self.decode_fn(latents).float()

    def encode_frames(self, frames: np.ndarray | torch.Tensor, *, chunk_size: int = 16) -> torch.Tensor:
        """Latents of uint8 RGB frames [T, H, W, 3], encoded ``chunk_size`` at a time (returned on CPU)."""
        out = []
        for start in range(0, len(frames), chunk_size):
            chunk = torch.as_tensor(np.asarray(frames[start:start + chunk_size]))
            images = chunk.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            out.append(self.encode(images).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.channels, 0, 0)

    def decode_frames(self, latents: torch.Tensor, *, chunk_size: int = 16) -> np.ndarray:
        """uint8 RGB frames [T, H, W, 3] decoded ``chunk_size`` at a time."""
        out = []
        for start in range(0, len(latents), chunk_size):
            images = self.decode(latents[start:start + chunk_size])
            out.append(images.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def _module_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    p = next(module.parameters())
    return x.to(device=p.device, dtype=p.dtype)


def _weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha1()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def face_autoencoder_codec(model: nn.Module) -> LatentCodec:
    """The codec of a :class:`pipelines.models.face_autoencoder.FaceAutoencoder`; its name hashes the weights."""
    model.eval()
    return LatentCodec(
        name=f"face_autoencoder:{_weights_hash(model)}",
        channels=model.config.latent_channels,
        downscale=model.config.downscale,
        encode_fn=lambda images: model.encode(_module_input(model, images)),
        decode_fn=lambda latents: model.decode(_module_input(model, latents)),
        module=model,
    )


def callable_codec(
    name: str,
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    *,
    channels: int,
    downscale: int,
) -> LatentCodec:
    """A codec from two callables over -1..1 images (a ComfyUI node adapts ``vae.encode``/``vae.decode`` this way).

    ``name`` must identify the latent space (e.g. the VAE's model type), since models trained in it record it.
    """
    if not name:
        raise LandmarkTalkError("callable_codec: give a non-empty latent space name (e.g. the VAE's type)")
    if channels < 1 or downscale < 1:
        raise LandmarkTalkError(f"callable_codec {name}: channels {channels} and downscale {downscale} must be ≥ 1")
    return LatentCodec(name=name, channels=channels, downscale=downscale, encode_fn=encode, decode_fn=decode)


# ---- TAEF2 -----------------------------------------------------------------------------------------------

_TAEF2_CHANNELS = 32
_TAEF2_ENCODER_MID = (11, 12, 13)  # EncoderTiny layer indices of the three blocks at 1/8 resolution
_TAEF2_DECODER_MID = (2, 3, 4)  # DecoderTiny layer indices of the first three blocks


def _pooled_tiny_block(channels: int) -> nn.Module:
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    class PooledTinyBlock(AutoencoderTinyBlock):
        """A TAESD block plus the FLUX.2 variant's branch: x + conv1x1 → GroupNorm(4) → ReLU → conv1x1 (4× wide)."""

        def __init__(self):
            super().__init__(channels, channels, "relu")
            wide = 4 * channels
            self.pool = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(),
                                      nn.Conv2d(wide, channels, 1, bias=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x + self.pool(x))

    return PooledTinyBlock()


class _TinyAutoencoder(nn.Module):
    """TAEF2's layout: diffusers' EncoderTiny/DecoderTiny (64 channels, f = 8) with pooled mid blocks."""

    def __init__(self, latent_channels: int = _TAEF2_CHANNELS):
        super().__init__()
        from diffusers.models.autoencoders.vae import DecoderTiny, EncoderTiny

        self.encoder = EncoderTiny(3, latent_channels, num_blocks=(1, 3, 3, 3), block_out_channels=(64,) * 4,
                                   act_fn="relu")
        self.decoder = DecoderTiny(latent_channels, 3, num_blocks=(3, 3, 3, 1), block_out_channels=(64,) * 4,
                                   upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
        for i in _TAEF2_ENCODER_MID:
            self.encoder.layers[i] = _pooled_tiny_block(64)
        for i in _TAEF2_DECODER_MID:
            self.decoder.layers[i] = _pooled_tiny_block(64)


def _load_pth_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad pickle
        raise LandmarkTalkError(f"{path}: not a readable TAEF2 state dict ({exc})") from exc
    return {k: v.float() for k, v in state.items()}


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise LandmarkTalkError(
            f"{path}: not a TAEF2 file (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {shapes[:3]}); use taef2_encoder.pth/taef2_decoder.pth from madebyollin/taesd"
        )
    module.load_state_dict(state, strict=True)


def taef2_codec(folder: str | os.PathLike) -> LatentCodec:
    """TAEF2 from a folder holding ``taef2_encoder.pth`` and ``taef2_decoder.pth`` (name ``"taef2"``, 32 ch, f = 8)."""
    folder = Path(folder)
    model = _TinyAutoencoder()
    encoder_path, decoder_path = folder / "taef2_encoder.pth", folder / "taef2_decoder.pth"
    for path in (encoder_path, decoder_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TAEF2 weights not found; put taef2_encoder.pth and taef2_decoder.pth "
                                    "(github.com/madebyollin/taesd) in that folder")
    # Upstream keys are nn.Sequential indices; diffusers' decoder applies the tanh clamp in forward, so its
    # layer indices are one lower than the upstream file's (which holds the clamp as layer 0).
    _load_strict(model.encoder, {f"layers.{k}": v for k, v in _load_pth_state(encoder_path).items()}, encoder_path)
    decoder_state = {}
    for key, value in _load_pth_state(decoder_path).items():
        index, rest = key.split(".", 1)
        decoder_state[f"layers.{int(index) - 1}.{rest}"] = value
    _load_strict(model.decoder, decoder_state, decoder_path)
    model.eval().requires_grad_(False)
    return LatentCodec(
        name="taef2", channels=_TAEF2_CHANNELS, downscale=8,
        encode_fn=lambda images: model.encoder(_module_input(model, images)),
        decode_fn=lambda latents: model.decoder(_module_input(model, latents)),
        module=model,
    )


def load_latent_codec(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LatentCodec:
    """A codec from a path: a face autoencoder ``.safetensors`` checkpoint, or a folder (or one of the
    ``.pth`` files) of TAEF2 weights."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from .checkpoint import load_checkpoint

        return face_autoencoder_codec(load_checkpoint(path, "face_autoencoder", device=device))
    folder = path.parent if path.suffix == ".pth" else path
    if (folder / "taef2_encoder.pth").is_file():
        return taef2_codec(folder).to(device)
    if not path.exists():
        raise FileNotFoundError(f"--codec {path}: no such file or folder")
    raise LandmarkTalkError(
        f"--codec {path}: give a face autoencoder checkpoint (.safetensors, from `python -m pipelines train "
        "face_autoencoder`) or a folder holding taef2_encoder.pth and taef2_decoder.pth"
    )
