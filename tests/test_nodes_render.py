"""Render and Fit nodes: files in, files out (COMFYUI_DIR). Tiny random models; the fit engine is stubbed."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg

import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("comfy")
    models_dir = use_scratch_folders(root)
    checkpoint = pack_module("pipelines.checkpoint")
    latents = pack_module("pipelines.latents")
    ae_module, l2v_module, a2l_module = (pack_module(f"pipelines.models.{m}") for m in ("face_autoencoder", "l2v", "a2l"))
    torch.manual_seed(0)
    ae = ae_module.FaceAutoencoder(ae_module.FaceAutoencoderConfig(image_size=32, block_channels=(8, 8, 8), norm_groups=4))
    checkpoint.save_checkpoint(ae, models_dir / "ae.safetensors")
    space = latents.face_autoencoder_codec(ae).name
    l2v = l2v_module.L2VDenoiser(l2v_module.L2VConfig(image_size=32, latent_space=space, block_channels=(16, 32),
                                                      embed_dim=32, landmark_tokens=4, landmark_hidden=32))
    checkpoint.save_checkpoint(l2v, models_dir / "l2v.safetensors", metadata={"latent_space": space})
    a2l = a2l_module.A2L(replace(a2l_module.A2LConfig.preset("tiny"), speaker_method="logmel"))
    checkpoint.save_checkpoint(a2l, models_dir / "a2l.safetensors")
    sovqae_module = pack_module("pipelines.models.sovqae")
    sovqae = sovqae_module.SOVQAE(sovqae_module.SOVQAEConfig(image_size=32, block_channels=(16, 32), norm_groups=8,
                                                             latent_dim=8, codebook_size=32))
    checkpoint.save_checkpoint(sovqae, models_dir / "sovqae.safetensors")
    shutil.copy(shared_data / "images" / "happy.png", root / "input" / "face.png")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(shared_data / "audio" / "RD_Radio31_000.wav"), "-t", "0.6",
                    str(root / "input" / "speech.wav")], check=True)
    loaders = pack_module("nodes.loaders")
    return {
        "root": root,
        "a2l": loaders.LandmarkTalkLoadA2L.execute(model_name="a2l.safetensors").result[0],
        "l2v": loaders.LandmarkTalkLoadL2V.execute(model_name="l2v.safetensors").result[0],
        "codec": loaders.LandmarkTalkLoadLatentCodec.execute(model_name="ae.safetensors").result[0],
        "sovqae": loaders.LandmarkTalkLoadSOVQAE.execute(model_name="sovqae.safetensors").result[0],
    }


def _render(scratch, **overrides):
    kwargs = dict(face="face.png", audio="speech.wav", a2l=scratch["a2l"], l2v=scratch["l2v"], codec=scratch["codec"],
                  steps=2, chunk_frames=8, filename_prefix="video/test")
    return pack_module("nodes.render").LandmarkTalkRender.execute(**{**kwargs, **overrides})


def test_render_lists_input_files_and_writes_a_talking_video(scratch):
    schema = pack_module("nodes.render").LandmarkTalkRender.define_schema()
    options = {i.id: i.options for i in schema.inputs if i.id in ("face", "audio")}
    assert options == {"face": ["face.png"], "audio": ["speech.wav"]}
    out = _render(scratch)
    (video,) = out.result
    saved = out.ui.as_dict()["images"][0]
    path = scratch["root"] / "output" / saved["subfolder"] / saved["filename"]
    assert path.is_file() and saved["filename"].startswith("test_")
    info = pack_module("pipelines.media").probe_media(path)
    assert info.frame_count == round(0.6 * 25) and info.has_audio and (info.width, info.height) == (256, 256)
    assert video.get_dimensions() == (256, 256)
    again = _render(scratch).ui.as_dict()["images"][0]["filename"]
    assert again != saved["filename"]  # never overwrites


def test_render_passes_the_motion_settings(scratch, monkeypatch):
    render = pack_module("nodes.render")
    seen = []

    def fake_render_video(face, audio, models, out, settings, **kwargs):
        seen.append(settings)
        Path(out).write_bytes(b"")
        return out

    monkeypatch.setattr(render, "render_video", fake_render_video)
    _render(scratch)
    _render(scratch, motion_scale=0.3, center_motion=False)
    assert (seen[0].motion_scale, seen[0].center_motion) == (render.RENDER_MOTION_SCALE, True)
    assert (seen[1].motion_scale, seen[1].center_motion) == (0.3, False)


def _saved_frames(scratch, out):
    saved = out.ui.as_dict()["images"][0]
    path = scratch["root"] / "output" / saved["subfolder"] / saved["filename"]
    return pack_module("pipelines.media").read_video(path)[0]


def test_render_with_a_sovqae_refines_the_pasted_faces(scratch):
    plain = _saved_frames(scratch, _render(scratch))
    refined = _saved_frames(scratch, _render(scratch, sovqae=scratch["sovqae"]))
    assert refined.shape == plain.shape and len(refined) == round(0.6 * 25)
    # The random SOVQAE changes the pasted mouth and jaw; the corners of the photo stay the source's.
    assert abs(refined.astype(int) - plain.astype(int))[:, 150:220, 80:180].mean() > 2
    assert abs(refined.astype(int) - plain.astype(int))[:, :20, :20].mean() < 1


def test_cancelled_render_leaves_no_file(scratch):
    import comfy.model_management as mm

    before = set((scratch["root"] / "output").rglob("*"))
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _render(scratch, filename_prefix="video/cancelled")
    finally:
        mm.interrupt_current_processing(False)
    assert set((scratch["root"] / "output").rglob("*")) - before <= {scratch["root"] / "output" / "video"}


def test_render_names_a_missing_input_file(scratch):
    with pytest.raises(FileNotFoundError, match="audio: 'gone.wav'"):
        _render(scratch, audio="gone.wav")


def test_fit_trains_into_a_named_model_folder(scratch, monkeypatch):
    fit = pack_module("nodes.fit")
    shutil.copy(scratch["root"] / "input" / "face.png", scratch["root"] / "input" / "clip.mp4")
    calls = {}

    def fake_fit(clip, out_dir, **kwargs):
        calls.update(clip=clip, out_dir=out_dir, **kwargs)
        kwargs["progress"]("a2l", 3, 10)
        return {"files": {"a2l": "a2l.safetensors"}, "seconds": {"a2l": 12.0}}

    monkeypatch.setattr(fit, "fit_person", fake_fit)
    out = fit.LandmarkTalkFit.execute(clip="clip.mp4", name="bob", preset="tiny", holdout=0.0, steps=0, seed=3)
    (record,) = out.result
    assert json.loads(record)["seconds"] == {"a2l": 12.0}
    assert "holdout_report" not in json.loads(record)  # no hold-out asked for: none scored
    assert calls["out_dir"].endswith("models/bob") and calls["steps"] is None and calls["seed"] == 3
    assert calls["clip"].endswith("input/clip.mp4")
    assert out.ui["landmarktalk_summary"][:2] == ["models/landmarktalk/bob/", "a2l 12 s"]
    for bad in ("../escape", "a/b", ""):
        with pytest.raises(ValueError, match="name"):
            fit.LandmarkTalkFit.execute(clip="clip.mp4", name=bad)
    scored = {}

    def fake_holdout(models_dir, **kwargs):
        scored.update(models_dir=models_dir, **kwargs)
        return "report.json"

    monkeypatch.setattr(fit, "evaluate_holdout", fake_holdout)
    out = fit.LandmarkTalkFit.execute(clip="clip.mp4", name="bob", holdout=0.2, holdout_seeds=3)
    assert json.loads(out.result[0])["holdout_report"] == "report.json" and calls["holdout"] == 0.2
    # scored as the Render node renders (with its seed search), once per asked-for run
    assert scored["models_dir"] == calls["out_dir"] and scored["seeds"] == 3 and scored["seed_candidates"] == fit.SEED_SEARCH_CANDIDATES == 8
    assert scored["denoise"] == fit.RENDER_DENOISE == 0.4
    assert scored["motion_scale"] == fit.RENDER_MOTION_SCALE == 0.75 and scored["center_motion"] is True


def test_fit_trains_with_autograd_although_comfyui_runs_nodes_in_inference_mode(scratch, monkeypatch):
    fit = pack_module("nodes.fit")
    seen = {}

    def fake_fit(clip, out_dir, **kwargs):
        weight = torch.ones(2, requires_grad=True)
        (weight * 3).sum().backward()  # what the training loop does
        seen["grad"] = weight.grad.tolist()
        return {"files": {}, "seconds": {}}

    monkeypatch.setattr(fit, "fit_person", fake_fit)
    shutil.copy(scratch["root"] / "input" / "face.png", scratch["root"] / "input" / "clip.mp4")
    with torch.inference_mode():  # as ComfyUI's executor calls every node
        fit.LandmarkTalkFit.execute(clip="clip.mp4", name="carol")
    assert seen["grad"] == [3.0, 3.0]
