"""Checkpoint format: round trip, and every way a wrong file must fail loudly, naming the file."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from pipelines.checkpoint import MODEL_KINDS, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from pipelines.errors import LandmarkTalkError


@dataclass(frozen=True)
class _TinyConfig:
    width: int = 3
    sizes: tuple = (2, 5)


class _Tiny(torch.nn.Module):
    config_class = _TinyConfig

    def __init__(self, config: _TinyConfig):
        super().__init__()
        self.config = config
        self.a = torch.nn.Linear(config.width, config.sizes[1])
        self.register_buffer("scale", torch.arange(config.sizes[0], dtype=torch.float32))


@dataclass(frozen=True)
class _OtherConfig:
    width: int = 3


class _Other(torch.nn.Module):
    config_class = _OtherConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.b = torch.nn.Linear(config.width, 1)


@pytest.fixture(autouse=True)
def _kinds(monkeypatch):
    monkeypatch.setitem(MODEL_KINDS, "tiny_test", f"{__name__}:_Tiny")
    monkeypatch.setitem(MODEL_KINDS, "other_test", f"{__name__}:_Other")


def _saved(tmp_path, **config):
    torch.manual_seed(0)
    model = _Tiny(_TinyConfig(**config))
    path = save_checkpoint(model, tmp_path / "tiny.safetensors", metadata={"latent_space": "taef2"})
    return model, path


def test_round_trip_restores_config_weights_and_metadata(tmp_path):
    model, path = _saved(tmp_path, width=4, sizes=(3, 6))
    loaded = load_checkpoint(path, "tiny_test")
    assert loaded.config == _TinyConfig(width=4, sizes=(3, 6))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not loaded.training
    meta = read_checkpoint_metadata(path)
    assert meta["landmarktalk.kind"] == "tiny_test"
    assert meta["landmarktalk.latent_space"] == "taef2"


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    _, path = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="tiny.safetensors"):
        save_checkpoint(_Tiny(_TinyConfig(width=7)), path)
    assert path.read_bytes() == before
    save_checkpoint(_Tiny(_TinyConfig(width=7)), path, overwrite=True)
    assert load_checkpoint(path, "tiny_test").config.width == 7
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp files left


def test_wrong_kind_names_file_and_both_kinds(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(LandmarkTalkError, match=r"tiny\.safetensors.*'tiny_test'.*expected 'other_test'"):
        load_checkpoint(path, "other_test")


def _rewrite(path, tensors, meta):
    save_file(tensors, str(path), metadata=meta)


def test_missing_key_is_rejected(tmp_path):
    model, path = _saved(tmp_path)
    meta = read_checkpoint_metadata(path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "a.bias"}
    _rewrite(path, tensors, meta)
    with pytest.raises(LandmarkTalkError, match=r"tiny\.safetensors.*missing keys \['a\.bias'\]"):
        load_checkpoint(path, "tiny_test")


def test_extra_key_is_rejected(tmp_path):
    model, path = _saved(tmp_path)
    meta = read_checkpoint_metadata(path)
    tensors = {**{k: v.contiguous() for k, v in model.state_dict().items()}, "stray.weight": torch.zeros(2)}
    _rewrite(path, tensors, meta)
    with pytest.raises(LandmarkTalkError, match=r"unexpected keys \['stray\.weight'\]"):
        load_checkpoint(path, "tiny_test")


def test_shape_mismatch_is_rejected(tmp_path):
    model, path = _saved(tmp_path)
    meta = read_checkpoint_metadata(path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["a.weight"] = torch.zeros(5, 9)
    _rewrite(path, tensors, meta)
    with pytest.raises(LandmarkTalkError, match=r"shape mismatch.*a\.weight: file \(5, 9\) vs model \(5, 3\)"):
        load_checkpoint(path, "tiny_test")


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_file_is_rejected(tmp_path, fraction):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(LandmarkTalkError, match=r"tiny\.safetensors.*truncated"):
        load_checkpoint(path, "tiny_test")


def test_foreign_and_missing_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(LandmarkTalkError, match="without LandmarkTalk metadata"):
        load_checkpoint(plain, "tiny_test")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(LandmarkTalkError, match="notes.safetensors"):
        load_checkpoint(text, "tiny_test")
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_checkpoint(tmp_path / "nothere.safetensors", "tiny_test")


def test_unknown_kind_lists_known_ones(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(LandmarkTalkError, match="unknown model kind 'nope'.*a2l"):
        load_checkpoint(path, "nope")
