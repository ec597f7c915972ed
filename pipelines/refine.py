"""Detail refinement of lip-sync output (LaDTalk's second stage) and the degradations SOVQAE trains on.

A foundation lip-sync model (Wav2Lip) returns a 96² face pasted into the frame: blurred, often
JPEG-compressed, softest around the mouth. :func:`degrade_faces` draws such damage at random for
training; :func:`wav2lip_like` is one fixed version of it for evaluation; :func:`refine_frames` runs a
person's SOVQAE over any lip-sync output's aligned crops.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .errors import LandmarkTalkError

__all__ = ["degrade_faces", "wav2lip_like", "refine_frames"]

logger = logging.getLogger(__name__)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _lower_face_mask(height: int, width: int, device) -> torch.Tensor:
    """[1,1,H,W] 0 above ~45 % of the height, 1 below ~55 %, linear in between (Wav2Lip's generated half)."""
    rows = torch.linspace(0, 1, height, device=device)
    return ((rows - 0.45) / 0.10).clamp(0, 1).view(1, 1, height, 1).expand(1, 1, height, width)


def _resample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Down to ``size``² (antialiased) and back up bilinearly, as a 96² face box pasted back does."""
    height, width = image.shape[-2:]
    small = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip one [1,3,H,W] 0..1 image through JPEG at ``quality``."""
    array = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    ok, encoded = cv2.imencode(".jpg", array[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise LandmarkTalkError("JPEG encoding failed in degrade_faces; check the OpenCV installation")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return torch.from_numpy(decoded).to(image.device, image.dtype).permute(2, 0, 1)[None] / 255


def degrade_faces(images: torch.Tensor, generator: torch.Generator, *, clean_probability: float = 0.15) -> torch.Tensor:
    """Random lip-sync-like damage for [B,3,H,W] 0..1 crops; each image draws its own recipe.

    With probability ``clean_probability`` an image is left sharp (so the model learns to keep sharp
    input). Otherwise, each with its own probability: a Wav2Lip-like down/up-sampling to 25–60 % of
    the crop side (whole face or lower face), a Gaussian blur (σ 0.5–2 px per 128 px, whole or lower
    face), Gaussian noise (σ 0.01–0.05) and a JPEG round trip (quality 30–90).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise LandmarkTalkError(f"images: expected [B,3,H,W], got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    lower = _lower_face_mask(height, width, images.device).to(images.dtype)
    out = []
    for image in images.split(1):
        if float(torch.rand((), generator=generator)) < clean_probability:
            out.append(image)
            continue
        damaged = image
        if float(torch.rand((), generator=generator)) < 0.8:
            size = max(4, int(round(min(height, width) * _uniform(generator, 0.25, 0.6))))
            resampled = _resample(damaged, size)
            whole = float(torch.rand((), generator=generator)) < 0.5
            damaged = resampled if whole else damaged * (1 - lower) + resampled * lower
        if float(torch.rand((), generator=generator)) < 0.5:
            blurred = _gaussian_blur(damaged, _uniform(generator, 0.5, 2.0) * height / 128)
            whole = float(torch.rand((), generator=generator)) < 0.5
            damaged = blurred if whole else damaged * (1 - lower) + blurred * lower
        if float(torch.rand((), generator=generator)) < 0.4:
            noise = torch.randn(damaged.shape, generator=generator).to(damaged.device, damaged.dtype)
            damaged = damaged + noise * _uniform(generator, 0.01, 0.05)
        damaged = damaged.clamp(0, 1)
        if float(torch.rand((), generator=generator)) < 0.5:
            damaged = _jpeg(damaged, int(round(_uniform(generator, 30, 90))))
        out.append(damaged)
    return torch.cat(out)


def wav2lip_like(images: torch.Tensor, *, scale: float = 96 / 256, jpeg_quality: int = 80) -> torch.Tensor:
    """A fixed foundation-model look for evaluation: whole crop resampled to ``scale`` of its side, lower face blurred (σ 1 px per 128 px), JPEG."""
    height, width = images.shape[-2:]
    damaged = _resample(images, max(4, int(round(min(height, width) * scale))))
    lower = _lower_face_mask(height, width, images.device).to(images.dtype)
    damaged = damaged * (1 - lower) + _gaussian_blur(damaged, height / 128) * lower
    return torch.cat([_jpeg(image, jpeg_quality) for image in damaged.clamp(0, 1).split(1)])


@torch.no_grad()
def refine_frames(
    model,
    crops: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
):
    """Refine aligned face crops [T,H,W,3] (uint8, or float 0..1 as ComfyUI IMAGE) with a SOVQAE; same type, shape, dtype back.

    Crops of another size are resized to the model's ``image_size`` and back. Moves ``model`` to
    ``device``/``dtype``; ``progress(done, total)`` is called per batch.
    """
    is_tensor = isinstance(crops, torch.Tensor)
    array = crops if is_tensor else np.asarray(crops)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise LandmarkTalkError(f"crops: expected [T,H,W,3] face crops, got shape {tuple(array.shape)}")
    integer = (array.dtype == torch.uint8) if is_tensor else (array.dtype == np.uint8)
    if not integer and not (array.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                            if is_tensor else np.issubdtype(array.dtype, np.floating)):
        raise LandmarkTalkError(f"crops: dtype {array.dtype}; give uint8 0..255 or float 0..1")
    total, height, width = array.shape[:3]
    size = model.config.image_size
    model = model.to(device=device, dtype=dtype).eval()
    results = []
    for start in range(0, total, batch_size):
        chunk = array[start:start + batch_size]
        batch = chunk if is_tensor else torch.from_numpy(np.ascontiguousarray(chunk))
        batch = batch.to(device=device).permute(0, 3, 1, 2).float()
        batch = batch / 255 if integer else batch
        if (height, width) != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        refined = model(batch.to(dtype)).float()
        if (height, width) != (size, size):
            refined = F.interpolate(refined, size=(height, width), mode="bicubic", align_corners=False)
        results.append(refined.clamp(0, 1).permute(0, 2, 3, 1).cpu())
        if progress is not None:
            progress(min(start + batch_size, total), total)
    out = torch.cat(results) if results else torch.zeros((0, height, width, 3))
    if integer:
        out = (out * 255).round().to(torch.uint8)
    if is_tensor:
        return out.to(array.dtype)
    return out.numpy().astype(array.dtype, copy=False)
