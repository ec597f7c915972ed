"""nodes/_convert.py and nodes/models_folder.py against a real ComfyUI (COMFYUI_DIR): conversions, model
loading into ComfyUI's memory manager, progress and Cancel."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_audio, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@dataclass(frozen=True)
class TinyConfig:
    channels: int = 3


class TinyNet(torch.nn.Module):
    """A registered-kind stand-in for the engine's models (a conv and a buffer)."""

    def __init__(self, config: TinyConfig = TinyConfig()):
        super().__init__()
        self.config = config
        self.conv = torch.nn.Conv2d(3, config.channels, 1)
        self.register_buffer("scale", torch.full((config.channels,), 2.0))


TinyNet.config_class = TinyConfig


@pytest.fixture
def convert():
    return pack_module("nodes._convert")


@pytest.fixture
def tiny_kind(monkeypatch):
    checkpoint = pack_module("pipelines.checkpoint")
    monkeypatch.setitem(checkpoint.MODEL_KINDS, "tiny_test", f"{__name__}:TinyNet")
    return checkpoint


def test_image_frames_round_trip_over_several_chunks(convert):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(130, 5, 7, 3), dtype=np.uint8)  # > 2 conversion chunks of 64
    image = convert.frames_to_image(frames)
    assert image.dtype == torch.float32 and image.shape == (130, 5, 7, 3)
    assert torch.allclose(image, torch.from_numpy(frames).float() / 255)
    np.testing.assert_array_equal(convert.image_to_frames(image), frames)


def test_image_to_frames_drops_alpha_expands_grey_and_clamps(convert):
    rgba = torch.rand(2, 4, 4, 4)
    np.testing.assert_array_equal(convert.image_to_frames(rgba), convert.image_to_frames(rgba[..., :3]))
    grey = torch.full((1, 3, 3, 1), 0.5)
    frames = convert.image_to_frames(grey)
    assert frames.shape == (1, 3, 3, 3) and (frames == 128).all()
    assert convert.image_to_frames(torch.full((3, 3, 3), 1.7)).max() == 255  # one image, out of range


@pytest.mark.parametrize("bad", [torch.zeros(2, 4, 4, 2), torch.zeros(0, 4, 4, 3), torch.zeros(4, 4)])
def test_image_to_frames_names_the_input_on_bad_shapes(convert, bad):
    with pytest.raises(ValueError, match="face_image"):
        convert.image_to_frames(bad, name="face_image")


def test_audio_round_trip_keeps_samples_and_rate(convert):
    samples = np.random.default_rng(1).uniform(-1, 1, size=(2, 1000)).astype(np.float32)
    audio = convert.audio_from_comfy(comfy_audio(samples, 22050))
    assert isinstance(audio, pack_module("pipelines.types").Audio)
    assert audio.sample_rate == 22050 and audio.samples.dtype == np.float32
    np.testing.assert_array_equal(audio.samples, samples)
    back = convert.audio_to_comfy(audio)
    assert back["sample_rate"] == 22050 and back["waveform"].shape == (1, 2, 1000)
    np.testing.assert_array_equal(back["waveform"][0].numpy(), samples)


def test_audio_batch_uses_first_item(convert):
    waveform = torch.stack([torch.zeros(1, 50), torch.ones(1, 50)])
    assert convert.audio_from_comfy({"waveform": waveform, "sample_rate": 16000}).samples.max() == 0


@pytest.mark.parametrize("bad", [{"waveform": torch.zeros(1, 1, 10)}, {"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000},
                                 {"waveform": torch.zeros(1, 1, 10), "sample_rate": 0}, "speech.wav"])
def test_audio_from_comfy_rejects_bad_values(convert, bad):
    with pytest.raises(ValueError, match="speech"):
        convert.audio_from_comfy(bad, name="speech")


def test_model_listing_filters_by_kind_and_skips_foreign_files(tmp_path, tiny_kind):
    models_dir = use_scratch_folders(tmp_path)
    tiny_kind.save_checkpoint(TinyNet(), models_dir / "tiny.safetensors")
    (models_dir / "foreign.safetensors").write_bytes(b"not a safetensors file")
    folder = pack_module("nodes.models_folder")
    assert set(folder.list_model_files()) == {"tiny.safetensors", "foreign.safetensors"}
    assert folder.list_model_files("tiny_test") == ["tiny.safetensors"]
    assert folder.list_model_files("a2l") == []


def test_loaded_model_goes_through_comfy_model_management(tmp_path, tiny_kind, convert):
    import comfy.model_management as mm

    models_dir = use_scratch_folders(tmp_path)
    saved = TinyNet()
    torch.nn.init.normal_(saved.conv.weight)
    tiny_kind.save_checkpoint(saved, models_dir / "tiny.safetensors")
    patcher = convert.load_model_patcher("tiny.safetensors", "tiny_test")
    device = convert.models_on_device(patcher)
    model = patcher.model
    assert isinstance(model, TinyNet) and device == mm.get_torch_device()
    assert torch.equal(model.conv.weight.cpu(), saved.conv.weight)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)
    mm.unload_all_models()  # what POST /free {"unload_models": true} runs
    assert not any(loaded.model is patcher for loaded in mm.current_loaded_models)


def test_missing_and_wrong_kind_models_say_what_to_do(tmp_path, tiny_kind, convert):
    models_dir = use_scratch_folders(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"a2l_name: 'gone.safetensors' is not in models/landmarktalk/"):
        convert.load_model_patcher("gone.safetensors", "tiny_test", input_name="a2l_name")
    tiny_kind.save_checkpoint(TinyNet(), models_dir / "tiny.safetensors")
    with pytest.raises(ValueError, match=r"model_name: .*tiny.safetensors.*expected 'a2l'"):
        convert.load_model_patcher("tiny.safetensors", "a2l")


def test_progress_moves_the_bar_and_cancel_interrupts(convert, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: seen.append((value, total)))
    progress = convert.NodeProgress()
    progress(0, 4)
    progress(4, 4, {"loss": 1.0})  # extra arguments (training logs, latents) are ignored
    assert seen == [(0, 4), (4, 4)]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            progress(1, 4)
    finally:
        mm.interrupt_current_processing(False)
    progress(2, 4)  # the flag was consumed: work goes on


def test_loader_base_loads_its_kind_and_refingerprints_a_rewritten_file(tmp_path, tiny_kind):
    import comfy.model_patcher

    loaders = pack_module("nodes.loaders")

    class TinyLoader(loaders.ModelLoader):
        KIND = "tiny_test"

    models_dir = use_scratch_folders(tmp_path)
    tiny_kind.save_checkpoint(TinyNet(), models_dir / "tiny.safetensors")
    (patcher,) = TinyLoader.execute(model_name="tiny.safetensors").result
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher) and isinstance(patcher.model, TinyNet)
    before = TinyLoader.fingerprint_inputs(model_name="tiny.safetensors")
    stat = os.stat(models_dir / "tiny.safetensors")
    os.utime(models_dir / "tiny.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert TinyLoader.fingerprint_inputs(model_name="tiny.safetensors") != before


def test_progress_of_a_stream_of_unknown_length_uses_the_given_total(convert, monkeypatch):
    import comfy.utils

    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: seen.append((value, total)))
    progress = convert.NodeProgress(total=40)
    chunks = list(convert.frame_chunks(np.zeros((40, 2, 2, 3), np.uint8), 16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    progress(16, 0)
    progress(40, 0)
    assert seen[0] == (16, 40) and seen[-1] == (40, 40)
