"""FID's Inception-v3 (the TensorFlow 2015-12-05 graph as ported by pytorch-fid) and its pool features.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the 2048-d pool
features of real and generated images. Only this particular Inception gives comparable numbers: it
differs from torchvision's in four blocks (average pools that ignore padding, and a max pool in the
last block). Layer names follow torchvision's ``Inception3`` so pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` loads by name (its 1008-class ``fc`` is not needed and is dropped).

With fewer frames than feature dimensions (2048) the covariances are rank-deficient and FID is
biased upwards; compare such figures only between runs of the same length.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoint import load_checkpoint, load_foreign_state_dict, read_foreign_state_dict

__all__ = ["FIDInceptionConfig", "FIDInception", "load_fid_inception", "find_fid_weights", "inception_features"]

logger = logging.getLogger(__name__)

FID_FILE = "fid_inception.safetensors"
OFFICIAL_PATTERN = "pt_inception-2015-12-05-*.pth"
EXPECTED_FILES = f"pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or {FID_FILE})"
_INPUT_SIZE = 299


@dataclass(frozen=True)
class FIDInceptionConfig:
    variant: str = "tf-2015-12-05"


class _ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU; torchvision's ``BasicConv2d``."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # The TF graph's last block max-pools where the paper's Inception average-pools.
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """Images [B,3,H,W] RGB in 0..1 → pool features [B,2048] (resized to 299² bilinearly first)."""

    config_class = FIDInceptionConfig

    def __init__(self, config: FIDInceptionConfig | None = None):
        super().__init__()
        self.config = config or FIDInceptionConfig()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(_INPUT_SIZE, _INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def find_fid_weights(folder: str | os.PathLike) -> Path | None:
    """The FID Inception weights in ``folder`` (the pack file first, else pytorch-fid's), or None."""
    folder = Path(folder)
    if (folder / FID_FILE).is_file():
        return folder / FID_FILE
    found = sorted(folder.glob(OFFICIAL_PATTERN)) if folder.is_dir() else []
    return found[0] if found else None


def load_fid_inception(source: str | os.PathLike, *, device: str | torch.device = "cpu") -> FIDInception:
    """FID's Inception from pytorch-fid's ``.pth`` (read without running pickled code), a pack file, or a folder."""
    path = Path(source)
    if path.is_dir():
        found = find_fid_weights(path)
        if found is None:
            raise FileNotFoundError(f"{path}: holds no FID Inception weights; put {EXPECTED_FILES} there")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FID Inception weights file; give {EXPECTED_FILES}")
    if path.suffix == ".safetensors":
        return load_checkpoint(path, "fid_inception", device=device)
    state = read_foreign_state_dict(path, EXPECTED_FILES)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier FID does not use
    model = load_foreign_state_dict(FIDInception(), state, path, name="FID's Inception-v3", what=EXPECTED_FILES)
    return model.to(device).eval()


@torch.no_grad()
def inception_features(net: FIDInception, frames: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Pool features [T,2048] float64 of frames [T,H,W,3] (uint8, or float in 0..1)."""
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch_size])).to(device)
        chunk = chunk.float() / 255.0 if frames.dtype == np.uint8 else chunk.float()
        out.append(net(chunk.permute(0, 3, 1, 2)).double().cpu().numpy())  # t h w c -> t c h w
    return np.concatenate(out) if out else np.zeros((0, 2048))
