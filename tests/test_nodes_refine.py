"""LaDTalk nodes (Wav2Lip lip-sync, SOVQAE refine) with tiny random-weight models via the real loaders (COMFYUI_DIR)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_audio, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data):
    models_dir = use_scratch_folders(tmp_path_factory.mktemp("comfy"))
    checkpoint = pack_module("pipelines.checkpoint")
    wav2lip, sovqae = pack_module("pipelines.models.wav2lip"), pack_module("pipelines.models.sovqae")
    torch.manual_seed(0)
    checkpoint.save_checkpoint(wav2lip.Wav2Lip(wav2lip.Wav2LipConfig(base_channels=4)), models_dir / "w2l.safetensors")
    checkpoint.save_checkpoint(sovqae.SOVQAE(sovqae.SOVQAEConfig(image_size=32, block_channels=(16, 32), norm_groups=8,
                                                                 latent_dim=8, codebook_size=32)),
                               models_dir / "sovqae.safetensors")
    loaders = pack_module("nodes.loaders")
    frame = pack_module("pipelines.media").read_image(shared_data / "images" / "happy.png")
    frames = torch.from_numpy(np.repeat(frame[None], 3, axis=0)).float() / 255
    (track,) = pack_module("nodes.face").LandmarkTalkTrackFace.execute(images=frames, fps=25.0, crop_size=96).result
    t = np.arange(8000) / 16000
    return {
        "wav2lip": loaders.LandmarkTalkLoadWav2Lip.execute(model_name="w2l.safetensors").result[0],
        "sovqae": loaders.LandmarkTalkLoadSOVQAE.execute(model_name="sovqae.safetensors").result[0],
        "frames": frames, "track": track, "speech": comfy_audio(0.3 * np.sin(2 * np.pi * 200 * t), 16000),
    }


def test_loaders_only_list_their_kind(setup):
    loaders = pack_module("nodes.loaders")
    assert loaders.LandmarkTalkLoadWav2Lip.define_schema().inputs[0].options == ["w2l.safetensors"]
    assert loaders.LandmarkTalkLoadSOVQAE.define_schema().inputs[0].options == ["sovqae.safetensors"]


def test_lipsync_on_full_frames_changes_only_the_face_box(setup):
    node = pack_module("nodes.refine").LandmarkTalkWav2LipLipSync
    (out,) = node.execute(wav2lip=setup["wav2lip"], images=setup["frames"], audio=setup["speech"], fps=25.0,
                          face_track=setup["track"], batch_size=4).result
    assert out.shape == (13, 256, 256, 3)  # round(0.5 s × 25 fps) by the pack rule (12.5 → 13), not 3 frames
    changed = (out[0] - setup["frames"][0]).abs().amax(-1) > 1 / 255
    ys, xs = np.nonzero(changed.numpy())
    landmarks = setup["track"].landmarks[0]
    assert changed.any() and landmarks[:, 0].min() - 30 < xs.min() and xs.max() < landmarks[:, 0].max() + 30
    assert not changed[:, :20].any() and not changed[:20].any()  # the frame border is untouched


def test_lipsync_on_aligned_crops_with_landmarks(setup):
    face = pack_module("nodes.face")
    crops, landmarks = face.LandmarkTalkAlignFaces.execute(images=setup["frames"], face_track=setup["track"]).result
    (out,) = pack_module("nodes.refine").LandmarkTalkWav2LipLipSync.execute(
        wav2lip=setup["wav2lip"], images=crops, audio=setup["speech"], fps=10.0, landmarks=landmarks).result
    assert out.shape == (5, 96, 96, 3)


def test_lipsync_needs_exactly_one_face_source(setup):
    node = pack_module("nodes.refine").LandmarkTalkWav2LipLipSync
    with pytest.raises(ValueError, match="exactly one"):
        node.execute(wav2lip=setup["wav2lip"], images=setup["frames"], audio=setup["speech"])


def test_sovqae_refines_crops_whatever_the_batching(setup):
    node = pack_module("nodes.refine").LandmarkTalkSOVQAERefine
    crops = torch.rand(5, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    (one,) = node.execute(sovqae=setup["sovqae"], crops=crops, batch_size=1).result
    (all_,) = node.execute(sovqae=setup["sovqae"], crops=crops, batch_size=16).result
    assert one.shape == crops.shape and one.dtype == crops.dtype and 0 <= one.min() and one.max() <= 1
    assert torch.allclose(one, all_, atol=1e-5) and not torch.allclose(one, crops, atol=0.05)
    assert next(setup["sovqae"].model.parameters()).dtype == torch.float32  # ComfyUI's copy left as loaded


def test_cancel_stops_the_lipsync(setup):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack_module("nodes.refine").LandmarkTalkWav2LipLipSync.execute(
                wav2lip=setup["wav2lip"], images=setup["frames"], audio=setup["speech"], face_track=setup["track"])
    finally:
        mm.interrupt_current_processing(False)
