"""convert: official-layout .pth → .safetensors, exact keys and outputs, never runs pickled code, clear errors."""
from __future__ import annotations

import os

import pytest
import torch

from pipelines import cli
from pipelines.checkpoint import load_checkpoint, read_checkpoint_metadata
from pipelines.convert import convert_official_checkpoint
from pipelines.errors import LandmarkTalkError
from pipelines.models.wav2lip import SyncNet, Wav2Lip


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics too, so eval-mode outputs depend on every buffer."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(1234)
    return model.eval()


def _official_file(model: torch.nn.Module, path, prefix="module.") -> None:
    """What the original training scripts write: DataParallel keys inside a dict with optimiser state."""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters()][:2], lr=1e-4).state_dict()
    torch.save({"state_dict": state, "optimizer": optimizer, "global_step": 250000, "global_epoch": 17}, path)


@pytest.fixture
def convert_cli(monkeypatch):
    monkeypatch.setitem(cli._COMMANDS, "convert", "pipelines.convert:add_convert_command")
    return cli.main


def test_wav2lip_conversion_keeps_every_key_and_output(tmp_path, convert_cli):
    original = _randomised(Wav2Lip())
    assert sum(p.numel() for p in original.parameters()) == 36_298_035
    source = tmp_path / "wav2lip_gan.pth"
    _official_file(original, source)
    out = tmp_path / "wav2lip_gan.safetensors"
    assert convert_cli(["convert", "wav2lip", str(source), str(out)]) == 0

    loaded = load_checkpoint(out, "wav2lip")
    assert set(loaded.state_dict()) == set(original.state_dict())
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.manual_seed(1)
    audio, faces = torch.randn(3, 1, 80, 16), torch.rand(3, 6, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(audio, faces), original(audio, faces))
    meta = read_checkpoint_metadata(out)
    assert meta["landmarktalk.kind"] == "wav2lip" and meta["landmarktalk.converted_from"] == "wav2lip_gan.pth"
    assert len(meta["landmarktalk.source_sha256"]) == 64

    # refuses to overwrite, through the CLI (exit code 2 with a message) and the function
    assert convert_cli(["convert", "wav2lip", str(source), str(out)]) == 2
    with pytest.raises(FileExistsError, match="already exists"):
        convert_official_checkpoint("wav2lip", source, out)


def test_syncnet_conversion_and_a_prefixless_state_dict(tmp_path):
    original = _randomised(SyncNet())
    source = tmp_path / "lipsync_expert.pth"
    _official_file(original, source, prefix="")
    out = convert_official_checkpoint("syncnet", source, tmp_path / "expert.safetensors")
    loaded = load_checkpoint(out, "syncnet")
    audio, faces = torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96)
    with torch.no_grad():
        for a, b in zip(loaded(audio, faces), original(audio, faces)):
            assert torch.equal(a, b)
    with pytest.raises(LandmarkTalkError, match="holds a 'syncnet' model, expected 'wav2lip'"):
        load_checkpoint(out, "wav2lip")


def test_wrong_network_is_named(tmp_path):
    source = tmp_path / "lipsync_expert.pth"
    _official_file(SyncNet(), source)
    with pytest.raises(LandmarkTalkError, match=r"SyncNet lip-sync expert \(convert it with `convert syncnet`\)"):
        convert_official_checkpoint("wav2lip", source, tmp_path / "x.safetensors")
    generator = tmp_path / "wav2lip.pth"
    _official_file(Wav2Lip(), generator)
    with pytest.raises(LandmarkTalkError, match="Wav2Lip generator"):
        convert_official_checkpoint("syncnet", generator, tmp_path / "y.safetensors")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_non_checkpoints_are_rejected_without_running_their_code(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(LandmarkTalkError, match="not a PyTorch weights file"):
        convert_official_checkpoint("wav2lip", text, tmp_path / "a.safetensors")

    flag = tmp_path / "code_ran"

    class _Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": {"x": _Payload()}}, hostile)
    with pytest.raises(LandmarkTalkError, match="without running code"):
        convert_official_checkpoint("wav2lip", hostile, tmp_path / "b.safetensors")
    assert not flag.exists()

    tensors_only = tmp_path / "plain.pth"
    torch.save({"weights": [torch.zeros(3)]}, tensors_only)
    with pytest.raises(LandmarkTalkError, match="no state_dict"):
        convert_official_checkpoint("wav2lip", tensors_only, tmp_path / "c.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_official_checkpoint("wav2lip", tmp_path / "missing.pth", tmp_path / "d.safetensors")


def test_changed_layer_shapes_are_refused(tmp_path):
    model = Wav2Lip()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.output_block.1.weight"] = torch.zeros(3, 64, 1, 1)
    source = tmp_path / "variant.pth"
    torch.save({"state_dict": state}, source)
    with pytest.raises(LandmarkTalkError, match="output_block.1.weight"):
        convert_official_checkpoint("wav2lip", source, tmp_path / "v.safetensors")
