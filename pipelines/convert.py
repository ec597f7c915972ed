"""``python -m pipelines convert wav2lip|syncnet IN.pth OUT.safetensors``: official Wav2Lip weights → pack checkpoints.

The official ``.pth`` files are pickles; they are read with ``torch.load(weights_only=True)``, which
rebuilds tensors and plain containers only and never runs code from the file. The ``state_dict`` is
taken, the ``module.`` prefix of DataParallel training is stripped, the keys and shapes are checked
strictly against the model, and the result is written once through ``save_checkpoint``.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path

import torch

from .checkpoint import read_foreign_state_dict, save_checkpoint
from .errors import LandmarkTalkError

__all__ = ["convert_official_checkpoint", "add_convert_command"]

logger = logging.getLogger(__name__)

_OFFICIAL_NAMES = {"wav2lip": "wav2lip.pth or wav2lip_gan.pth", "syncnet": "lipsync_expert.pth"}


def _build(kind: str) -> torch.nn.Module:
    from .models.wav2lip import SyncNet, Wav2Lip

    if kind == "wav2lip":
        return Wav2Lip()
    if kind == "syncnet":
        return SyncNet()
    raise LandmarkTalkError(f"convert: unknown kind {kind!r}; choose wav2lip or syncnet")


def _looks_like(keys: set[str]) -> str:
    """Which official network a key set belongs to, for error messages."""
    if any(k.startswith("face_encoder_blocks.") for k in keys) and any(k.startswith("binary_pred.") for k in keys):
        return "the Wav2Lip GAN's visual-quality discriminator (not needed for inference)"
    if any(k.startswith("face_decoder_blocks.") for k in keys):
        return "a Wav2Lip generator (convert it with `convert wav2lip`)"
    if any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys):
        return "a SyncNet lip-sync expert (convert it with `convert syncnet`)"
    return "not a Wav2Lip-family network"


def convert_official_checkpoint(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert an official ``kind`` checkpoint (wav2lip or syncnet) to a pack ``.safetensors``; never overwrites."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose another output name or delete it first")
    model = _build(kind)
    state = read_foreign_state_dict(src, f"the official {kind} .pth checkpoint")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    # Checkpoints written before PyTorch 1.1 lack BatchNorm step counters; they are unused in eval mode.
    counters = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise LandmarkTalkError(
            f"{src}: is {_looks_like(set(state))}, not the official {kind} network "
            f"({len(missing)} missing keys e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]}); "
            f"give {_OFFICIAL_NAMES[kind]}"
        )
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if mismatched:
        raise LandmarkTalkError(
            f"{src}: layer shapes differ from the official {kind} network ({'; '.join(mismatched[:3])}); "
            "this is a modified variant the pack does not support"
        )
    for key in counters:
        state[key] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, strict=True)
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    metadata = {"converted_from": src.name, "source_sha256": digest.hexdigest()}
    save_checkpoint(model.eval(), dst, metadata=metadata)
    logger.info("converted %s (%s) to %s", src.name, kind, dst)
    return dst


def _run_convert(args: argparse.Namespace) -> int:
    convert_official_checkpoint(args.kind, args.source, args.output)
    return 0


def add_convert_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert official Wav2Lip / SyncNet .pth weights to .safetensors (once, offline)",
        description="Read an official Wav2Lip checkpoint without executing pickled code and write a "
        "LandmarkTalk .safetensors file (refuses to overwrite).",
    )
    parser.add_argument("kind", choices=["wav2lip", "syncnet"],
                        help="wav2lip: wav2lip.pth / wav2lip_gan.pth; syncnet: lipsync_expert.pth")
    parser.add_argument("source", help="the official .pth file")
    parser.add_argument("output", help="the .safetensors file to write (e.g. models/landmarktalk/wav2lip_gan.safetensors)")
    parser.set_defaults(func=_run_convert)
