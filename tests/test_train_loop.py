"""The shared training loop: it learns, keeps EMA, resumes, refuses to clobber, and writes its logs."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from pipelines.checkpoint import MODEL_KINDS, load_checkpoint
from pipelines.train import TrainConfig, train_model


@dataclass(frozen=True)
class _LineConfig:
    dims: int = 4
    tag: str = ""  # changes no weight shape, only what the model is


class _Line(torch.nn.Module):
    config_class = _LineConfig

    def __init__(self, config: _LineConfig):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(config.dims, 1)

    def forward(self, x):
        return self.proj(x)


class _LineTask:
    """y = x·w + 0.5 with fixed w; a linear model can fit it exactly."""

    def __init__(self):
        self.w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def _batch(self, generator, n):
        x = torch.randn(n, 4, generator=generator)
        return {"x": x, "y": x @ self.w + 0.5}

    def sample_batch(self, generator, batch_size):
        return self._batch(generator, batch_size)

    def validation_batches(self, batch_size):
        return [self._batch(torch.Generator().manual_seed(123), 64)]

    def compute_loss(self, model, batch):
        err = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return err, {"mse": err.detach()}


@pytest.fixture
def line_kind(monkeypatch):
    monkeypatch.setitem(MODEL_KINDS, "test_line", f"{__name__}:_Line")
    return "test_line"


def test_training_lowers_loss_and_writes_checkpoint_logs_and_curve(tmp_path, line_kind):
    torch.manual_seed(0)
    model = _Line(_LineConfig())
    task = _LineTask()
    before = float(task.compute_loss(model, task.validation_batches(64)[0])[0])
    out = tmp_path / "line.safetensors"
    result = train_model(
        model, task, TrainConfig(steps=300, batch_size=32, learning_rate=5e-2, ema_decay=0.99, val_every=100, log_every=10), out
    )
    assert result.final_validation_loss < 0.01 * before
    loaded = load_checkpoint(out, line_kind)
    assert float(task.compute_loss(loaded, task.validation_batches(64)[0])[0]) < 0.01 * before
    log = json.loads((tmp_path / "line.train.json").read_text())
    assert len(log["history"]["val_loss"]) == 3
    assert (tmp_path / "line.loss.png").stat().st_size > 1000


def test_resume_continues_from_saved_step(tmp_path, line_kind):
    out = tmp_path / "line.safetensors"
    torch.manual_seed(0)
    first = train_model(_Line(_LineConfig()), _LineTask(), TrainConfig(steps=40, batch_size=8, learning_rate=1e-2, log_every=10), out)
    assert first.steps == 40
    calls = []
    second = train_model(
        _Line(_LineConfig()), _LineTask(), TrainConfig(steps=60, batch_size=8, learning_rate=1e-2, log_every=10), out,
        progress=lambda step, total, logs: calls.append(step),
    )
    assert calls[0] == 41 and calls[-1] == 60
    assert second.history["step"] == [10, 20, 30, 40, 50, 60]


def test_resume_refuses_the_state_of_another_model(tmp_path, line_kind):
    from pipelines.errors import LandmarkTalkError

    out = tmp_path / "line.safetensors"
    train_model(_Line(_LineConfig()), _LineTask(), TrainConfig(steps=4, batch_size=8, log_every=2), out)
    more = TrainConfig(steps=8, batch_size=8, log_every=2)
    with pytest.raises(LandmarkTalkError, match="line.train-state.pt: the saved training state of another model.*"
                                                "delete it and line.safetensors"):
        train_model(_Line(_LineConfig(tag="other")), _LineTask(), more, out)
    # A state saved before configs were stored in it: the weights' shapes still tell.
    state_path = tmp_path / "line.train-state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["model_config"]
    torch.save(state, state_path)
    with pytest.raises(LandmarkTalkError, match="another model \\(Error\\(s\\) in loading state_dict"):
        train_model(_Line(_LineConfig(dims=5)), _LineTask(), more, out)
    assert train_model(_Line(_LineConfig()), _LineTask(), more, out).steps == 8


def test_refuses_to_overwrite_an_existing_file(tmp_path, line_kind):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match="mine.safetensors"):
        train_model(_Line(_LineConfig()), _LineTask(), TrainConfig(steps=2, batch_size=2), out)
    assert out.read_bytes() == b"user's file"


def test_cancel_from_progress_leaves_no_checkpoint(tmp_path, line_kind):
    out = tmp_path / "line.safetensors"

    def cancel(step, total, logs):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(_Line(_LineConfig()), _LineTask(), TrainConfig(steps=50, batch_size=4), out, progress=cancel)
    assert not out.exists()
    assert not list(tmp_path.glob("*.tmp"))
