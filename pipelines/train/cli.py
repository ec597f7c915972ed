"""``python -m pipelines train KIND --data ... --out ...``: one command for every trainable model.

Each kind has a task module exposing ``add_task_arguments(parser)`` and ``build_training(args)``, which
returns ``(model, task, metadata)``; the shared options and the loop are the same for all.
"""
from __future__ import annotations

import argparse
import importlib
import logging

from .loop import TrainConfig, train_model

__all__ = ["add_train_command", "train_config_from_args", "train_from_argv"]

logger = logging.getLogger(__name__)

# kind → task module. A kind whose module is missing (optional dependencies) is left out of the CLI.
TASK_MODULES: dict[str, str] = {
    "a2l": ".a2l_task",
    "l2v": ".l2v_task",
    "face_autoencoder": ".face_autoencoder_task",
    "wav2lip": ".wav2lip_task",
    "syncnet": ".syncnet_task",
    "sovqae": ".sovqae_task",
    "dae": ".dae_task",
    "speech2latent": ".speech2latent_task",
}


def add_train_options(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None) -> None:
    """The optimisation options every model shares (also used by `fit`)."""
    d = defaults or TrainConfig()
    group = parser.add_argument_group("training")
    group.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (default %(default)s)")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per step (default %(default)s)")
    group.add_argument("--lr", type=float, default=d.learning_rate, help="peak learning rate (default %(default)s)")
    group.add_argument("--ema-decay", type=float, default=d.ema_decay, help="EMA decay, 0 = off (default %(default)s)")
    group.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps")
    group.add_argument("--save-every", type=int, default=d.save_every, help="save resumable state every N steps")
    group.add_argument("--seed", type=int, default=d.seed, help="random seed")
    group.add_argument(
        "--mixed-precision", choices=["auto", "no", "bf16"], default=d.mixed_precision,
        help="auto = bf16 on CUDA, fp32 on CPU",
    )
    group.add_argument("--no-resume", action="store_true", help="ignore a saved train state next to --out")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def train_config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    values = dict(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, ema_decay=args.ema_decay,
        val_every=args.val_every, save_every=args.save_every, seed=args.seed,
        mixed_precision=args.mixed_precision, resume=not args.no_resume, overwrite=args.overwrite,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _tqdm_progress(desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="step", dynamic_ncols=True)

    def progress(step: int, total: int, logs: dict[str, float]) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss")}, refresh=False)
        bar.refresh()
        if step >= total:
            bar.close()

    return progress


def train_from_argv(kind: str, argv: list[str], progress=None) -> float:
    """Train one model exactly as ``python -m pipelines train KIND ARGV`` would (for ``fit``); returns seconds.

    ``progress(kind, step, total)`` is called as training goes.
    """
    import time

    module = importlib.import_module(TASK_MODULES[kind], __package__)
    parser = argparse.ArgumentParser(prog=f"fit/{kind}")
    parser.add_argument("--out", required=True)
    module.add_task_arguments(parser)
    add_train_options(parser, getattr(module, "DEFAULT_TRAIN_CONFIG", None))
    args = parser.parse_args(argv)
    model, task, metadata = module.build_training(args)
    started = time.perf_counter()
    train_model(model, task, train_config_from_args(args), args.out, metadata=metadata,
                progress=(lambda step, total, logs: progress(kind, step, total)) if progress else None)
    return time.perf_counter() - started


def _run_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(TASK_MODULES[args.kind], __package__)
    model, task, metadata = module.build_training(args)
    result = train_model(
        model, task, train_config_from_args(args), args.out, metadata=metadata, progress=_tqdm_progress(args.kind)
    )
    val = result.final_validation_loss
    logger.info(
        "wrote %s after %d steps in %.0f s%s", result.checkpoint, result.steps, result.seconds,
        f", validation loss {val:.5g}" if val is not None else "",
    )
    return 0


def add_train_command(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train one model kind on prepared clip caches")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind, module_name in TASK_MODULES.items():
        try:
            module = importlib.import_module(module_name, __package__)
        except ImportError as exc:
            if not (exc.name or "").endswith(module_name.lstrip(".")):
                logger.debug("train %s unavailable", kind, exc_info=True)
            continue
        sub = kinds.add_parser(kind, help=(module.__doc__ or kind).strip().splitlines()[0])
        sub.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
        module.add_task_arguments(sub)
        add_train_options(sub, getattr(module, "DEFAULT_TRAIN_CONFIG", None))
        sub.set_defaults(func=_run_train)
