"""LPIPS (Zhang et al. 2018), AlexNet variant v0.1, and the temporal tLP built on it.

The network is AlexNet's convolutional trunk; the five ReLU outputs are unit-normalised over
channels, their squared differences are weighted by learned 1×1 "linear heads", averaged over space
and summed over layers. Inputs are RGB in -1..1, shifted and scaled per channel first.

Weights are never downloaded. Either convert once to one pack checkpoint
(``convert_lpips_weights`` → ``lpips_alex.safetensors``) or put the two official files side by side:
torchvision's ImageNet AlexNet ``alexnet-owt-7be5be79.pth`` and LPIPS's linear heads ``alex.pth``
(v0.1). ``.pth`` files are read with ``torch.load(weights_only=True)``, which never runs pickled code.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, read_foreign_state_dict, save_checkpoint
from ..errors import LandmarkTalkError

__all__ = ["LPIPSConfig", "LPIPS", "load_lpips", "find_lpips_weights", "convert_lpips_weights", "lpips_scores"]

logger = logging.getLogger(__name__)

LPIPS_FILE = "lpips_alex.safetensors"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
HEADS_FILE = "alex.pth"
EXPECTED_FILES = f"{LPIPS_FILE} (or the official {ALEXNET_FILE} + LPIPS v0.1 {HEADS_FILE})"

_CHANNELS = (64, 192, 384, 256, 256)
_TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs in AlexNet's `features` whose outputs LPIPS compares
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's ScalingLayer: ImageNet statistics expressed in -1..1 units
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


@dataclass(frozen=True)
class LPIPSConfig:
    backbone: str = "alexnet"
    version: str = "0.1"


class LPIPS(nn.Module):
    """Learned perceptual distance between two image batches [B,3,H,W] in -1..1 → [B]."""

    config_class = LPIPSConfig

    def __init__(self, config: LPIPSConfig | None = None):
        super().__init__()
        self.config = config or LPIPSConfig()
        if self.config.backbone != "alexnet" or self.config.version != "0.1":
            raise LandmarkTalkError(f"LPIPS {self.config.backbone} v{self.config.version}: "
                                    "only alexnet v0.1 is supported")
        # Layer indices match torchvision's alexnet().features so the ImageNet weights load by name.
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations of the five compared layers for images in -1..1."""
        x = (images - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS))
        return taps

    def compare(self, taps_a: list[torch.Tensor], taps_b: list[torch.Tensor]) -> torch.Tensor:
        """Distance [B] between two outputs of :meth:`embed`."""
        return sum(head((a - b).pow(2)).mean(dim=(1, 2, 3)) for head, a, b in zip(self.heads, taps_a, taps_b))

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.compare(self.embed(images_a), self.embed(images_b))


# ------------------------------------------------------------------------------------------- weights


def find_lpips_weights(folder: str | os.PathLike) -> Path | tuple[Path, Path] | None:
    """The LPIPS weights in ``folder``: the pack file, else the official pair, else None."""
    folder = Path(folder)
    if (folder / LPIPS_FILE).is_file():
        return folder / LPIPS_FILE
    if (folder / ALEXNET_FILE).is_file() and (folder / HEADS_FILE).is_file():
        return folder / ALEXNET_FILE, folder / HEADS_FILE
    return None


def _state_from_official(alexnet_path: Path, heads_path: Path) -> dict[str, torch.Tensor]:
    trunk = read_foreign_state_dict(alexnet_path, f"torchvision's ImageNet AlexNet {ALEXNET_FILE}")
    heads = read_foreign_state_dict(heads_path, f"the LPIPS v0.1 linear heads {HEADS_FILE}")
    state = {k: v for k, v in trunk.items() if k.startswith("features.")}
    for i in range(len(_CHANNELS)):
        key = f"lin{i}.model.1.weight"  # LPIPS wraps each head as Sequential(Dropout, Conv2d)
        if key not in heads:
            raise LandmarkTalkError(f"{heads_path}: lacks {key}; it is not LPIPS's alex.pth v0.1 "
                                    f"(found keys {sorted(heads)[:4]})")
        state[f"heads.{i}.weight"] = heads[key]
    return state


def _load_state(model: LPIPS, state: dict[str, torch.Tensor], source: str) -> LPIPS:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or mismatched:
        raise LandmarkTalkError(f"{source}: not AlexNet + LPIPS v0.1 weights (missing {missing[:3]}, "
                                f"shape mismatch {mismatched[:3]}); give {EXPECTED_FILES}")
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model.eval()


def load_lpips(source: str | os.PathLike | tuple, *, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS-Alex from a pack ``.safetensors``, an (alexnet.pth, alex.pth) pair, or a folder holding either."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        found = find_lpips_weights(source)
        if found is None:
            raise FileNotFoundError(f"{source}: holds no LPIPS weights; put {EXPECTED_FILES} there")
        source = found
    if isinstance(source, tuple):
        alexnet_path, heads_path = (Path(p) for p in source)
        model = _load_state(LPIPS(), _state_from_official(alexnet_path, heads_path), f"{alexnet_path} + {heads_path}")
        return model.to(device)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such LPIPS weights file; give {EXPECTED_FILES}")
    return load_checkpoint(path, "lpips", device=device)


def convert_lpips_weights(alexnet_path: str | os.PathLike, heads_path: str | os.PathLike,
                          dst: str | os.PathLike) -> Path:
    """Write the official AlexNet + LPIPS v0.1 head files as one pack checkpoint; never overwrites."""
    alexnet_path, heads_path, dst = Path(alexnet_path), Path(heads_path), Path(dst)
    model = _load_state(LPIPS(), _state_from_official(alexnet_path, heads_path), f"{alexnet_path} + {heads_path}")
    digests = {}
    for label, path in (("alexnet", alexnet_path), ("heads", heads_path)):
        digests[f"{label}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    metadata = {"converted_from": f"{alexnet_path.name} + {heads_path.name}", **digests}
    return save_checkpoint(model, dst, metadata=metadata)


# ------------------------------------------------------------------------------------------- scores


def _to_input(frames: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    x = x.float() / 255.0 if frames.dtype == np.uint8 else x.float()
    return x.permute(0, 3, 1, 2) * 2.0 - 1.0  # t h w c -> t c h w, 0..1 -> -1..1


@torch.no_grad()
def lpips_scores(
    net: LPIPS,
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    previous: tuple | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """LPIPS of each pred frame against its gt frame, and of each frame against the one before.

    ``pred``/``gt``: [T,H,W,3], uint8 or float 0..1. Returns ``(distance, pred_change, gt_change, last)``,
    each [T]; ``*_change[0]`` is NaN unless ``previous`` (the ``last`` of the preceding chunk) is given,
    so a long video can be scored chunk by chunk. tLP (TecoGAN) is ``|pred_change - gt_change|``.
    """
    if pred.shape != gt.shape or pred.ndim != 4:
        raise LandmarkTalkError(f"pred {pred.shape} and gt {gt.shape}: give two frame arrays [T,H,W,3] of one shape")
    device = next(net.parameters()).device
    count = len(pred)
    distance, pred_change, gt_change = (np.full(count, np.nan) for _ in range(3))
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        taps_pred = net.embed(_to_input(pred[start:stop], device))
        taps_gt = net.embed(_to_input(gt[start:stop], device))
        distance[start:stop] = net.compare(taps_pred, taps_gt).cpu().numpy()
        # Each frame against its predecessor: shift the batch by one, with the carried frame in front.
        for taps, change, side in ((taps_pred, pred_change, 0), (taps_gt, gt_change, 1)):
            before = None if previous is None else previous[side]
            if before is None:
                shifted = [t[:-1] for t in taps]
            else:
                shifted = [torch.cat([b, t[:-1]]) for b, t in zip(before, taps)]
            offset = 0 if before is not None else 1
            if stop - start - offset > 0:
                change[start + offset:stop] = net.compare(shifted, [t[offset:] for t in taps]).cpu().numpy()
        previous = ([t[-1:] for t in taps_pred], [t[-1:] for t in taps_gt])
    return distance, pred_change, gt_change, previous
