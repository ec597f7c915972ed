"""Person-specific fit: one clip of a person → the models a render needs, in one folder.

``fit`` prepares the clip cache once, then trains what is missing through the same task modules and loop
as ``python -m pipelines train``: the face autoencoder (unless a codec is given), A2L, and L2V in that
autoencoder's latent space. A model file already in the folder is kept (delete it to retrain); a run
cut short resumes from its train-state file. With ``holdout`` > 0 the tail of the clip is never trained
on, so ``evaluate_holdout`` can render it from its own audio and compare with the truth.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .cache import load_clip_caches
from .errors import LandmarkTalkError
from .render import MODEL_FILES, SPEAKER_FILE

__all__ = ["FitPreset", "FIT_PRESETS", "fit_person", "read_fit_record"]

logger = logging.getLogger(__name__)

FIT_RECORD = "fit.json"
# Which models each rendering path fits on the person's clip.
FIT_PATHS = ("l2v", "ladtalk")
SOVQAE_FILE = "sovqae.safetensors"


@dataclass(frozen=True)
class FitPreset:
    """Crop size and per-model (preset, steps, batch size) for one fit."""

    crop_size: int
    face_autoencoder: tuple[str, int, int]
    a2l: tuple[str, int, int]
    l2v: tuple[str, int, int]
    sovqae: tuple[str, int, int]


FIT_PRESETS: dict[str, FitPreset] = {
    # CPU minutes per model on one clip; quality is modest but every stage is real. SOVQAE: 1200 steps, as
    # 600 left the refined L2V renders short of the still baseline on vretalking_face_1 (docs/RESULTS.md).
    "tiny": FitPreset(crop_size=128, face_autoencoder=("cpu128", 1500, 8), a2l=("tiny", 1500, 8),
                      l2v=("small", 3000, 8), sovqae=("cpu128", 1200, 8)),
    # Paper-like sizes (64² latents at 256² crops); meant for a GPU.
    "base": FitPreset(crop_size=256, face_autoencoder=("256", 20000, 16), a2l=("small", 8000, 16),
                      l2v=("base", 60000, 16), sovqae=("256", 20000, 16)),
}


@dataclass
class FitRecord:
    clip: str
    preset: str
    holdout: float
    codec: str
    path: str = "l2v"
    cache_dir: str | None = None  # where the clip was prepared; the hold-out render reads the same cache
    speech_encoder: str | None = None  # the wav2vec2/HuBERT folder A2L reads (None: log-mel); renders load it
    a2l_init: str | None = None  # the A2L checkpoint the person's A2L was fine-tuned from (None: from scratch)
    files: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def read_fit_record(models_dir: str | os.PathLike) -> dict | None:
    path = Path(models_dir) / FIT_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def fit_person(
    clip: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str = "tiny",
    path: str = "l2v",
    holdout: float = 0.0,
    codec: str | os.PathLike | None = None,
    steps: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    speech_encoder: str | os.PathLike | None = None,
    a2l_init: str | os.PathLike | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Train one rendering path's models on ``clip``; returns the fit record.

    ``path`` "l2v": the face autoencoder (unless ``codec``), A2L and L2V. "ladtalk": the SOVQAE refiner (the
    Wav2Lip foundation comes from the official weights, converted with ``convert wav2lip``).

    ``steps`` overrides every model's step count (for quick plumbing runs). ``speech_encoder``: a local
    wav2vec2/HuBERT folder (``save_pretrained``) whose hidden states A2L reads instead of log-mel; the record
    keeps its path, so renders find it. ``a2l_init``: an A2L checkpoint (trained on more speech, e.g. many clips
    with ``train a2l``) that the person's A2L is fine-tuned from, keeping its settings. ``progress(model, step, total)``.
    """
    from .train.cli import train_from_argv

    if preset not in FIT_PRESETS:
        raise LandmarkTalkError(f"--preset {preset!r}: choose one of {', '.join(FIT_PRESETS)}")
    if path not in FIT_PATHS:
        raise LandmarkTalkError(f"--path {path!r}: choose one of {', '.join(FIT_PATHS)}")
    if not 0.0 <= holdout < 0.9:
        raise LandmarkTalkError(f"--holdout {holdout}: give a fraction in [0, 0.9), e.g. 0.2")
    plan = FIT_PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    [cache] = load_clip_caches(clip, crop_size=plan.crop_size, cache_dir=cache_dir)
    record = FitRecord(clip=str(Path(clip).resolve()), preset=preset, path=path, holdout=holdout,
                       codec=str(Path(codec).resolve()) if codec else MODEL_FILES["codec"],
                       cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None,
                       speech_encoder=str(Path(speech_encoder).resolve()) if speech_encoder else None,
                       a2l_init=str(Path(a2l_init).resolve()) if a2l_init else None)
    common = ["--data", str(cache.root), "--holdout", str(holdout), "--seed", str(seed)]

    def options(model_preset: tuple[str, int, int]) -> list[str]:
        name, model_steps, batch = model_preset
        return ["--preset", name, "--steps", str(steps or model_steps), "--batch-size", str(batch)]

    jobs: list[tuple[str, str, list[str]]] = []
    codec_path = Path(codec) if codec else out / MODEL_FILES["codec"]
    if path == "ladtalk":
        jobs.append(("sovqae", SOVQAE_FILE, options(plan.sovqae)))
    else:
        if codec is None:
            jobs.append(("face_autoencoder", MODEL_FILES["codec"], options(plan.face_autoencoder)))
        jobs.append(("a2l", MODEL_FILES["a2l"], options(plan.a2l) + (
            ["--speech-encoder", record.speech_encoder] if speech_encoder else []) + (
            ["--init", record.a2l_init] if a2l_init else [])))
        jobs.append(("l2v", MODEL_FILES["l2v"], options(plan.l2v) + ["--codec", str(codec_path),
                                                                       "--image-size", str(plan.crop_size)]))
    for kind, filename, extra in jobs:
        target = out / filename
        record.files[kind] = filename
        state = target.with_name(target.name.removesuffix(".safetensors") + ".train-state.pt")
        if kind == "a2l" and target.is_file():  # kept or resumed, it must read the features asked for
            _check_kept_a2l(target, speech_encoder)
        if target.is_file() and not state.is_file():
            logger.info("keeping %s (delete it to retrain)", target)
            continue
        logger.info("fitting %s → %s", kind, target)
        record.seconds[kind] = round(train_from_argv(kind, ["--out", str(target), *common, *extra], progress), 1)
    if path == "l2v":
        _save_speaker(cache, holdout, out)
    (out / FIT_RECORD).write_text(json.dumps(asdict(record), indent=1))
    return asdict(record)


def _check_kept_a2l(path: Path, speech_encoder) -> None:
    """A kept A2L must read the features this fit asks for; otherwise renders would silently use the old kind."""
    from .checkpoint import load_checkpoint
    from .models.a2l import speech_encoder_name

    kept = speech_encoder_name(load_checkpoint(path, "a2l").config)
    wanted = Path(speech_encoder).name if speech_encoder else None
    if kept != wanted:
        def describe(name):
            return f"the speech encoder {name!r}" if name else "log-mel features"
        raise LandmarkTalkError(
            f"{path} reads {describe(kept)}, but this fit asks for {describe(wanted)}; delete {path.name} from "
            f"{path.parent}/ to retrain it, or fit with the same --speech-encoder")


def _save_speaker(cache, holdout: float, out: Path) -> None:
    """The person's voice embedding, as A2L saw it in training, so a render needs no voice of its own
    (silence, another speaker, or TTS all drive the fitted person)."""
    import numpy as np

    from .checkpoint import load_checkpoint
    from .train.a2l_task import _clip_speaker

    method = load_checkpoint(out / MODEL_FILES["a2l"], "a2l").config.speaker_method
    train, _ = cache.train_val_frames(holdout)
    np.save(out / SPEAKER_FILE, _clip_speaker(cache, train, method))
