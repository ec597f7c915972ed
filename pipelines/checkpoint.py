"""One-file ``.safetensors`` checkpoints that carry their model's kind and config.

The header metadata holds ``landmarktalk.kind``, ``landmarktalk.config`` (JSON of the model's config
dataclass) and ``landmarktalk.format``; extra string fields may ride along (for example the latent
space an L2V model was trained in). Loading rebuilds the model from the stored config and loads the
weights with ``strict=True``: a wrong kind, a missing or unexpected key, a shape mismatch or a
truncated file is an error naming the file and what was expected.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import LandmarkTalkError

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_metadata", "MODEL_KINDS", "read_foreign_state_dict",
           "load_foreign_state_dict"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"

# kind → "module:Class"; a leading dot means relative to this package (ComfyUI imports the pack under its
# folder path, so absolute `pipelines.…` names don't resolve there). The class has a ``config_class`` attribute
# (a frozen dataclass) and an ``__init__(config)``. Imported lazily so a kind's dependencies load on use.
MODEL_KINDS: dict[str, str] = {
    "a2l": ".models.a2l:A2L",
    "smoother": ".audio.smoothing:TemporalSmoother",
    "l2v": ".models.l2v:L2VDenoiser",
    "face_autoencoder": ".models.face_autoencoder:FaceAutoencoder",
    "wav2lip": ".models.wav2lip:Wav2Lip",
    "syncnet": ".models.wav2lip:SyncNet",
    "sovqae": ".models.sovqae:SOVQAE",
    "dae": ".models.dae:DiffusionAutoencoder",
    "speech2latent": ".models.dae:SpeechToLatent",
    "lpips": ".evaluation.lpips:LPIPS",
    "fid_inception": ".evaluation.fid:FIDInception",
    "syncnet_v2": ".evaluation.syncnet:SyncNetV2",
}


def _model_class(kind: str) -> type[torch.nn.Module]:
    if kind not in MODEL_KINDS:
        raise LandmarkTalkError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(MODEL_KINDS))}")
    module_name, class_name = MODEL_KINDS[kind].split(":")
    module = importlib.import_module(module_name, __package__ if module_name.startswith(".") else None)
    return getattr(module, class_name)


def _kind_of(model: torch.nn.Module) -> str:
    for kind, target in MODEL_KINDS.items():
        if target.rsplit(":", 1)[1] != type(model).__name__:
            continue
        try:
            if _model_class(kind) is type(model):
                return kind
        except ImportError:
            continue
    raise LandmarkTalkError(f"{type(model).__name__} is not a registered model kind; add it to MODEL_KINDS")


def save_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (weights + kind + config) to ``path`` atomically; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise LandmarkTalkError(f"{path}: checkpoint files end in .safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pick another name or pass overwrite=True")
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise LandmarkTalkError(f"{type(model).__name__} has no dataclass `config`; it cannot be saved")
    meta = {
        "landmarktalk.kind": _kind_of(model),
        "landmarktalk.config": json.dumps(dataclasses.asdict(config), sort_keys=True),
        "landmarktalk.format": FORMAT_VERSION,
    }
    for key, value in (metadata or {}).items():
        if not isinstance(value, str):
            raise LandmarkTalkError(f"checkpoint metadata {key!r} must be a string (store JSON for structures)")
        meta[key if key.startswith("landmarktalk.") else f"landmarktalk.{key}"] = value
    # safetensors refuses shared storage; contiguous CPU copies also make the file device-independent.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("saved %s checkpoint to %s", meta["landmarktalk.kind"], path)
    return path


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a checkpoint, checked to be one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise LandmarkTalkError(
            f"{path}: not a readable .safetensors file ({exc}); it may be truncated or of another format — "
            "re-copy it, or write it again with `python -m pipelines fit`/`train`"
        ) from exc
    if "landmarktalk.kind" not in meta:
        raise LandmarkTalkError(
            f"{path}: a .safetensors file without LandmarkTalk metadata; convert foreign weights with "
            "`python -m pipelines convert` or train one with `python -m pipelines train`"
        )
    if meta.get("landmarktalk.format") != FORMAT_VERSION:
        raise LandmarkTalkError(
            f"{path}: checkpoint format {meta.get('landmarktalk.format')!r}, this version reads {FORMAT_VERSION!r}"
        )
    return meta


def load_checkpoint(path: str | os.PathLike, kind: str, *, device: str | torch.device = "cpu") -> Any:
    """Rebuild the ``kind`` model stored in ``path`` and load its weights strictly; returns it in eval mode."""
    path = Path(path)
    if kind not in MODEL_KINDS:
        raise LandmarkTalkError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(MODEL_KINDS))}")
    meta = read_checkpoint_metadata(path)
    found = meta["landmarktalk.kind"]
    if found != kind:
        raise LandmarkTalkError(f"{path}: holds a {found!r} model, expected {kind!r}; pick a {kind} checkpoint")
    model_cls = _model_class(kind)
    config_cls = model_cls.config_class
    try:
        config_fields = json.loads(meta["landmarktalk.config"])
        config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config_fields.items()})
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise LandmarkTalkError(f"{path}: its stored config does not fit {config_cls.__name__} ({exc})") from exc
    model = model_cls(config)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise LandmarkTalkError(f"{path}: weights could not be read ({exc}); the file may be truncated") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if mismatched:
            parts.append(f"shape mismatch {mismatched[:3]}")
        raise LandmarkTalkError(f"{path}: does not match a {kind} model of its stored config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    model.checkpoint_metadata = {k: v for k, v in meta.items()}
    return model.to(device).eval()


def read_foreign_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch file published elsewhere (official Wav2Lip, pytorch-fid, SyncNet, LPIPS).

    Read with ``torch.load(weights_only=True)``, so no pickled code runs; a ``state_dict`` wrapper and
    DataParallel's ``module.`` prefix are removed. ``what`` names the file the user should give.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give {what}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler fails in many ways on foreign bytes (IndexError, KeyError, …)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LandmarkTalkError(
            f"{path}: not a PyTorch weights file that can be read without running code from it ({first_line}); "
            f"give {what} as downloaded"
        ) from exc
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(map(str, list(payload)[:5])) if isinstance(payload, dict) else ""
        raise LandmarkTalkError(
            f"{path}: holds no state_dict of tensors (found {type(payload).__name__}"
            f"{' with keys ' + keys if keys else ''}); give {what}"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_foreign_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike, *,
                            name: str, what: str) -> torch.nn.Module:
    """Strictly load ``state`` (from :func:`read_foreign_state_dict`) into ``model``; a file of another network
    gets an error naming what differs. BatchNorm step counters absent from old files are filled in."""
    expected = model.state_dict()
    state = dict(state)
    for key in expected:  # files saved before PyTorch 0.4.1 lack BatchNorm step counters (unused in eval)
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise LandmarkTalkError(f"{path}: not {name} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                                f"shape mismatch {mismatched[:3]}); give {what}")
    model.load_state_dict(state, strict=True)
    return model
