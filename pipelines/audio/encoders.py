"""Optional local speech encoders (wav2vec2, HuBERT… through ``transformers``) as a feature source.

The user gives a folder saved with ``save_pretrained`` (``config.json`` + weights), or a file inside it;
nothing is ever downloaded. Without ``transformers`` installed, loading fails with a message saying so.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LandmarkTalkError

__all__ = ["SpeechEncoder", "load_speech_encoder", "encode_speech"]

logger = logging.getLogger(__name__)

_CHUNK_SECONDS = 20.0  # bounds attention memory on long audio; boundary effects are a few 20 ms steps


@dataclass
class SpeechEncoder:
    """A loaded encoder: ``model`` returns ``last_hidden_state`` [1, F, dim] every ``step_s`` seconds."""

    model: Any
    normalize: bool
    step_s: float
    dim: int
    name: str
    device: str = "cpu"
    path: str = ""  # the save_pretrained folder it was loaded from


def load_speech_encoder(path: str | os.PathLike, *, device: str = "cpu") -> SpeechEncoder:
    """Load a local wav2vec2/HuBERT-style checkpoint folder (never downloads)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"speech encoder {path}: no such file or folder; give a folder saved with save_pretrained")
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        raise LandmarkTalkError(f"speech encoder {path}: no config.json beside it; give the whole save_pretrained folder")
    try:
        import transformers
    except ImportError as exc:
        raise LandmarkTalkError(
            f"speech encoder {path}: the `transformers` package is not installed; `pip install transformers` "
            "or use the built-in log-mel features (kind='logmel80')"
        ) from exc
    import torch

    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
    normalize = True
    if (folder / "preprocessor_config.json").is_file():
        extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        normalize = bool(getattr(extractor, "do_normalize", True))
        if getattr(extractor, "sampling_rate", 16000) != 16000:
            raise LandmarkTalkError(f"speech encoder {path}: expects {extractor.sampling_rate} Hz input; only 16 kHz encoders are supported")
    strides = getattr(config, "conv_stride", None) or [5, 2, 2, 2, 2, 2, 2]
    step_s = float(np.prod(strides)) / 16000.0
    with torch.no_grad():
        probe = model(torch.zeros(1, 16000, device=device)).last_hidden_state
    logger.info("loaded speech encoder %s (%s, %d dims every %.0f ms)", folder, config.model_type, probe.shape[-1], step_s * 1000)
    return SpeechEncoder(model=model, normalize=normalize, step_s=step_s, dim=int(probe.shape[-1]), name=folder.name,
                         device=device, path=str(folder.resolve()))


def encode_speech(encoder: SpeechEncoder, mono_16k: np.ndarray) -> tuple[np.ndarray, float]:
    """Hidden states [F, dim] of 16 kHz mono audio and their step in seconds."""
    import torch

    chunk = int(_CHUNK_SECONDS * 16000)
    outputs = []
    with torch.no_grad():
        for start in range(0, len(mono_16k), chunk):
            piece = mono_16k[start:start + chunk].astype(np.float32)
            if len(piece) < 400:  # shorter than the encoder's receptive field: pad with silence
                piece = np.pad(piece, (0, 400 - len(piece)))
            if encoder.normalize:
                piece = (piece - piece.mean()) / np.sqrt(piece.var() + 1e-7)
            hidden = encoder.model(torch.from_numpy(piece)[None].to(encoder.device)).last_hidden_state
            outputs.append(hidden[0].float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float32), encoder.step_s
