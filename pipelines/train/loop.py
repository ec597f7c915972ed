"""The training loop every model shares: Accelerate, bf16 on CUDA, EMA, validation, resume, loss curves.

A model brings a :class:`TrainTask` (how to draw a batch, how to score one); the loop owns the optimiser,
devices, mixed precision, EMA, checkpoints and logs. Run under ``accelerate launch`` for several GPUs:
each process draws its own batches and gradients are averaged by Accelerate.

Files written next to ``out`` (``name.safetensors``):
- ``name.safetensors``: the EMA weights (what inference loads), through ``save_checkpoint``;
- ``name.train-state.pt``: optimiser, raw weights, EMA, step, RNG and history, for ``resume``;
- ``name.train.json`` and ``name.loss.png``: the loss history and its curve.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch

from ..checkpoint import save_checkpoint
from ..errors import LandmarkTalkError

__all__ = ["TrainConfig", "TrainTask", "TrainResult", "train_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model; the model's own settings live in its config."""

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 turns EMA off
    val_every: int = 100
    log_every: int = 10
    save_every: int = 500
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" = bf16 on CUDA, full precision on CPU; or "no" / "bf16"
    resume: bool = True
    overwrite: bool = False


class TrainTask(Protocol):
    """What a model's training needs to say; the loop does the rest."""

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> Any:
        """A random training batch (tensors on CPU; nested dict/list/tuple is fine)."""

    def validation_batches(self, batch_size: int) -> Iterable[Any]:
        """A fixed, finite set of validation batches (may be empty)."""

    def compute_loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise and named parts for the log."""


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final_validation_loss(self) -> float | None:
        values = self.history.get("val_loss") or []
        return values[-1] if values else None


def _side_file(out: Path, suffix: str) -> Path:
    return out.with_name(out.name.removesuffix(".safetensors") + suffix)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _plot_losses(history: dict[str, list], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(history["step"], history["loss"], label="train", linewidth=1)
    if history.get("val_step"):
        ax.plot(history["val_step"], history["val_loss"], "o-", label="validation", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


@torch.no_grad()
def _validation_loss(model, task, batch_size: int, device, autocast) -> float | None:
    total, count = 0.0, 0
    for batch in task.validation_batches(batch_size):
        with autocast():
            loss, _ = task.compute_loss(model, _to_device(batch, device))
        total += float(loss)
        count += 1
    return total / count if count else None


def _model_config_json(model: torch.nn.Module) -> str | None:
    """The model's config dataclass as JSON (what a resumed training must match), or None without one."""
    config = getattr(model, "config", None)
    return json.dumps(asdict(config), sort_keys=True, default=str) if is_dataclass(config) else None


def train_model(
    model: torch.nn.Module,
    task: TrainTask,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``config.steps`` steps and save its EMA weights to ``out``.

    ``progress(step, total, logs)`` is called every step; raise from it to cancel (the last saved state
    stays resumable). Resumes from ``out``'s train-state file when one exists and ``config.resume``.
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    out = Path(out)
    if out.suffix != ".safetensors":
        raise LandmarkTalkError(f"--out {out}: checkpoints end in .safetensors")
    state_path = _side_file(out, ".train-state.pt")
    resuming = config.resume and state_path.is_file()
    if out.exists() and not resuming and not config.overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)

    mixed = config.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available())
    device = accelerator.device
    torch.manual_seed(config.seed)

    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def lr_factor(step: int) -> float:
        # Linear warm-up then cosine decay to 10 %: robust for both 50-step tests and long fits.
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        t = min(1.0, (step - config.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True) if config.ema_decay > 0 else None

    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_loss": [], "parts": []}
    start_step = 0
    generator = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    if resuming:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model_config = _model_config_json(model)
        stored = state.get("model_config")
        try:
            if stored is not None and model_config is not None and stored != model_config:
                raise RuntimeError(f"model config {stored} there, {model_config} asked for now")
            model.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise LandmarkTalkError(
                f"{state_path}: the saved training state of another model ({str(exc).splitlines()[0]}); to start over with "
                f"these settings delete it and {out.name} from {out.parent}/, or resume with the settings it was begun with"
            ) from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"])
        history = state["history"]
        start_step = int(state["step"])
        logger.info("resuming %s from step %d of %d", out.name, start_step, config.steps)

    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.to(device)
    unwrapped = accelerator.unwrap_model(model)

    def save_state(step: int) -> None:
        if not accelerator.is_main_process:
            return
        _atomic_torch_save(
            {
                "model": unwrapped.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "generator": generator.get_state(),
                "history": history,
                "step": step,
                "train_config": json.dumps(asdict(config)),
                "model_config": _model_config_json(unwrapped),
            },
            state_path,
        )

    def evaluate_with_ema() -> float | None:
        model.eval()
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        try:
            return _validation_loss(unwrapped, task, config.batch_size, device, accelerator.autocast)
        finally:
            if ema is not None:
                ema.restore(unwrapped.parameters())
            model.train()

    started = time.perf_counter()
    model.train()
    running: dict[str, float] = {}
    for step in range(start_step, config.steps):
        batch = _to_device(task.sample_batch(generator, config.batch_size), device)
        with accelerator.autocast():
            loss, parts = task.compute_loss(model, batch)
        if not torch.isfinite(loss):
            save_state(step)
            raise LandmarkTalkError(
                f"training {out.name}: loss became {float(loss)} at step {step}; lower --lr or check the data"
            )
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unwrapped.parameters())

        logs = {"loss": float(loss.detach()), **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in parts.items()}}
        for k, v in logs.items():
            running[k] = running.get(k, 0.0) + v
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            count = config.log_every if done % config.log_every == 0 else done % config.log_every
            mean = {k: v / count for k, v in running.items()}
            history["step"].append(done)
            history["loss"].append(mean["loss"])
            history["parts"].append(mean)
            running.clear()
            logger.debug("step %d loss %.5f", done, mean["loss"])
        if config.val_every and (done % config.val_every == 0 or done == config.steps):
            val = evaluate_with_ema()
            if val is not None:
                history["val_step"].append(done)
                history["val_loss"].append(val)
                logs["val_loss"] = val
        if done % config.save_every == 0 and done != config.steps:
            save_state(done)
        if progress is not None:
            progress(done, config.steps, logs)

    final_step = max(start_step, config.steps)
    seconds = time.perf_counter() - started
    # The state keeps the raw weights (and the EMA separately) so `resume` with more steps continues the run.
    save_state(final_step)
    if ema is not None:
        ema.copy_to(unwrapped.parameters())
    if accelerator.is_main_process:
        save_checkpoint(unwrapped, out, metadata=metadata, overwrite=True)
        _atomic_text(
            json.dumps({"train_config": asdict(config), "history": history, "seconds": seconds}, indent=1),
            _side_file(out, ".train.json"),
        )
        if history["step"]:
            _plot_losses(history, _side_file(out, ".loss.png"), out.name)
    return TrainResult(checkpoint=out, steps=final_step, history=history, seconds=seconds)
