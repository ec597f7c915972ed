"""L2V nodes (loaders + nodes/sampling.py) with tiny random-weight models through the real loaders (COMFYUI_DIR)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_available, pack_module, use_scratch_folders

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)

FRAMES, CROP = 3, 48


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny face autoencoder + L2V in its latent space, saved to a scratch models/landmarktalk, loaded by the nodes."""
    models_dir = use_scratch_folders(tmp_path_factory.mktemp("comfy"))
    checkpoint = pack_module("pipelines.checkpoint")
    ae_module = pack_module("pipelines.models.face_autoencoder")
    l2v_module = pack_module("pipelines.models.l2v")
    latents = pack_module("pipelines.latents")
    torch.manual_seed(0)
    for name in ("ae.safetensors", "other_ae.safetensors"):
        ae = ae_module.FaceAutoencoder(ae_module.FaceAutoencoderConfig(image_size=32, block_channels=(8, 8, 8), norm_groups=4))
        checkpoint.save_checkpoint(ae, models_dir / name)
        if name == "ae.safetensors":
            space = latents.face_autoencoder_codec(ae).name
    config = l2v_module.L2VConfig(image_size=32, downscale=4, latent_channels=4, latent_space=space,
                                  block_channels=(16, 32), embed_dim=32, landmark_tokens=4, landmark_hidden=32)
    checkpoint.save_checkpoint(l2v_module.L2VDenoiser(config), models_dir / "l2v.safetensors",
                               metadata={"latent_space": space})
    loaders = pack_module("nodes.loaders")
    (codec,) = loaders.LandmarkTalkLoadLatentCodec.execute(model_name="ae.safetensors").result
    (other,) = loaders.LandmarkTalkLoadLatentCodec.execute(model_name="other_ae.safetensors").result
    (l2v,) = loaders.LandmarkTalkLoadL2V.execute(model_name="l2v.safetensors").result
    return {"codec": codec, "other": other, "l2v": l2v}


@pytest.fixture(scope="module")
def inputs():
    template = pack_module("pipelines.face._geometry").TEMPLATE
    landmarks = pack_module("pipelines.types").Landmarks(
        points=np.repeat(template[None] * CROP, FRAMES, axis=0).astype(np.float32), crop_size=CROP, fps=25.0)
    crops = torch.rand(FRAMES, CROP, CROP, 3, generator=torch.Generator().manual_seed(1))
    return crops, landmarks


@pytest.fixture(scope="module")
def sampling():
    return pack_module("nodes.sampling")


def test_loaders_list_only_their_kind(models):
    loaders = pack_module("nodes.loaders")
    options = loaders.LandmarkTalkLoadLatentCodec.define_schema().inputs[0].options
    assert sorted(options) == ["ae.safetensors", "other_ae.safetensors"]
    assert loaders.LandmarkTalkLoadL2V.define_schema().inputs[0].options == ["l2v.safetensors"]


def test_encode_sample_decode_shapes_and_seeds(models, inputs, sampling):
    crops, landmarks = inputs
    pose, identity = sampling.LandmarkTalkEncodeFaces.execute(
        l2v=models["l2v"], codec=models["codec"], crops=crops, landmarks=landmarks).result
    assert pose["samples"].shape == (FRAMES, 4, 8, 8) and identity["samples"].shape == (1, 4, 8, 8)
    sample = sampling.LandmarkTalkLandmarkDiffusionSampler.execute
    kwargs = dict(l2v=models["l2v"], codec=models["codec"], pose=pose, identity=identity, landmarks=landmarks,
                  steps=2, sampler="ddim", chunk_frames=2)
    (first,) = sample(seed=7, **kwargs).result
    (again,) = sample(seed=7, **kwargs).result
    (other,) = sample(seed=8, **kwargs).result
    assert first["samples"].shape == (FRAMES, 4, 8, 8) and torch.isfinite(first["samples"]).all()
    assert torch.equal(first["samples"], again["samples"]) and not torch.equal(first["samples"], other["samples"])
    # denoise below 1 starts from the identity latent: a small strength stays near it, the full one does not.
    (near,) = sample(seed=7, denoise=0.02, **kwargs).result
    gap = lambda out: float((out["samples"] - identity["samples"]).abs().mean())  # noqa: E731
    assert gap(near) < 0.5 * gap(first)
    (faces,) = sampling.LandmarkTalkDecodeFaces.execute(codec=models["codec"], latents=first).result
    assert faces.shape == (FRAMES, 32, 32, 3) and 0 <= faces.min() and faces.max() <= 1


def test_masked_pose_differs_from_the_unmasked_identity(models, inputs, sampling):
    crops, landmarks = inputs
    pose, identity = sampling.LandmarkTalkEncodeFaces.execute(
        l2v=models["l2v"], codec=models["codec"], crops=crops, landmarks=landmarks).result
    # The reference is crop 0 unmasked; pose 0 is crop 0 with its lower face masked.
    assert not torch.allclose(pose["samples"][:1], identity["samples"], atol=1e-4)
    reference = torch.zeros(1, CROP, CROP, 3)
    _, black = sampling.LandmarkTalkEncodeFaces.execute(l2v=models["l2v"], codec=models["codec"], crops=crops,
                                                        landmarks=landmarks, reference=reference).result
    assert not torch.allclose(black["samples"], identity["samples"])


def test_a_codec_of_another_latent_space_is_refused(models, inputs, sampling):
    crops, landmarks = inputs
    pose, identity = sampling.LandmarkTalkEncodeFaces.execute(
        l2v=models["l2v"], codec=models["other"], crops=crops, landmarks=landmarks).result
    with pytest.raises(ValueError, match="latent space"):
        sampling.LandmarkTalkLandmarkDiffusionSampler.execute(
            l2v=models["l2v"], codec=models["other"], pose=pose, identity=identity, landmarks=landmarks, steps=1)


def test_cancel_stops_the_sampler(models, inputs, sampling):
    import comfy.model_management as mm

    crops, landmarks = inputs
    pose, identity = sampling.LandmarkTalkEncodeFaces.execute(
        l2v=models["l2v"], codec=models["codec"], crops=crops, landmarks=landmarks).result
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            sampling.LandmarkTalkLandmarkDiffusionSampler.execute(
                l2v=models["l2v"], codec=models["codec"], pose=pose, identity=identity, landmarks=landmarks, steps=3)
    finally:
        mm.interrupt_current_processing(False)
