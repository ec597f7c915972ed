"""Wav2Lip-family training on clip caches: SyncNet learns sync from a synthetic talking clip, the generator's loss falls."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines import cli
from pipelines.cache import write_clip_cache
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.models.wav2lip import SyncNet, SyncNetConfig, Wav2Lip, Wav2LipConfig
from pipelines.train import TrainConfig, train_model
from pipelines.train.syncnet_task import SyncNetTask
from pipelines.train.wav2lip_task import Wav2LipClips, Wav2LipTask
from pipelines.types import Audio, FaceTrack

FPS = 25.0
SIZE = 64


def _talking_clip(root, frames=125, seed=0):
    """A cartoon face whose mouth opening follows the loudness of a 220 Hz voice."""
    rng = np.random.default_rng(seed)
    knots = rng.uniform(0, 1, frames // 3 + 2) ** 2
    openness = np.interp(np.arange(frames) / 3, np.arange(len(knots)), knots)
    crops = np.full((frames, SIZE, SIZE, 3), (200, 160, 140), np.uint8)
    crops[:, 20:24, 18:26] = 40  # eyes
    crops[:, 20:24, 38:46] = 40
    for t in range(frames):
        half = 1 + int(round(openness[t] * 7))
        crops[t, 44 - half:44 + half, 22:42] = (90, 20, 30)
    crops = np.clip(crops.astype(int) + rng.integers(-6, 7, crops.shape), 0, 255).astype(np.uint8)
    seconds = frames / FPS
    n = int(seconds * 16000)
    envelope = np.interp(np.arange(n) / 16000 * FPS, np.arange(frames), openness)
    voice = np.sin(2 * np.pi * 220 * np.arange(n) / 16000) * envelope * 0.5 + rng.normal(0, 0.002, n)
    points = np.zeros((frames, 68, 2), np.float32)
    points[:, :, 0] = rng.uniform(14, 50, (frames, 68))
    points[:, :, 1] = rng.uniform(20, 56, (frames, 68))
    points[:, 0, 0], points[:, 16, 0] = 8, 56
    points[:, 17:27, 1] = 14
    points[:, 8, 1] = 58
    track = FaceTrack(landmarks=points, confidence=np.ones(frames, np.float32),
                      transforms=np.tile(np.eye(2, 3, dtype=np.float32), (frames, 1, 1)), crop_size=SIZE,
                      frame_size=(SIZE, SIZE), fps=FPS, filled=np.zeros(frames, bool))
    return write_clip_cache(root, crops=crops, landmarks=points, track=track,
                            audio=Audio(samples=voice[None].astype(np.float32), sample_rate=16000), fps=FPS,
                            source=f"synthetic-{seed}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _talking_clip(tmp_path_factory.mktemp("cache") / "clip")


def _validation_loss(model, task):
    model.eval()
    with torch.no_grad():
        losses = [float(task.compute_loss(model, b)[0]) for b in task.validation_batches(16)]
    return float(np.mean(losses))


def test_clip_data_cuts_boxes_and_aligns_mel_windows(clip):
    clips = Wav2LipClips([clip], holdout=0.2)
    assert clips.faces[0].shape == (125, 96, 96, 3)
    assert clips.train_starts[0].min() == 0 and clips.train_starts[0].max() == 100 - 5
    assert clips.val_starts[0].min() == 100 and clips.val_starts[0].max() <= 120
    # box (8, 2, 56, 68): the mouth (rows 36–52 of 64) lands in the lower half of the 96² face
    assert clips.faces[0][:, 60:80, 30:66].mean() < clips.faces[0][:, 5:30, 30:66].mean() - 30
    assert torch.equal(clips.mel_at(0, 10), torch.from_numpy(clips.mels[0][:, 32:48])[None])
    task = Wav2LipTask(clips)
    batch = task.sample_batch(torch.Generator().manual_seed(0), 3)
    assert batch["faces"].shape == (3, 6, 5, 96, 96) and batch["indiv_mels"].shape == (3, 5, 1, 80, 16)
    assert float(batch["faces"][:, :3, :, 48:].abs().max()) == 0 and batch["target"][:, :, :, 48:].mean() > 0.2


def test_syncnet_learns_in_sync_from_off_sync(clip, tmp_path):
    torch.manual_seed(0)
    model = SyncNet(SyncNetConfig(base_channels=4))
    task = SyncNetTask(Wav2LipClips([clip], holdout=0.2))
    labels = torch.cat([b["label"] for b in task.validation_batches(16)])
    assert 0.3 < float(labels.mean()) < 0.7
    before = _validation_loss(model, task)
    config = TrainConfig(steps=150, batch_size=16, learning_rate=2e-3, ema_decay=0.0, val_every=150, log_every=10)
    result = train_model(model.train(), task, config, tmp_path / "sync.safetensors")
    after = result.final_validation_loss
    first, last = result.history["parts"][0], result.history["parts"][-1]
    assert after < before - 0.05, (before, after)
    assert last["bce"] < first["bce"] and last["accuracy"] > 0.6
    assert load_checkpoint(tmp_path / "sync.safetensors", "syncnet").config == SyncNetConfig(base_channels=4)


def test_generator_loss_falls_with_a_frozen_expert(clip, tmp_path):
    torch.manual_seed(0)
    expert = SyncNet(SyncNetConfig(base_channels=4))
    expert_path = save_checkpoint(expert, tmp_path / "expert.safetensors")
    frozen = load_checkpoint(expert_path, "syncnet")
    reference = {k: v.clone() for k, v in frozen.state_dict().items()}
    model = Wav2Lip(Wav2LipConfig(base_channels=4))
    task = Wav2LipTask(Wav2LipClips([clip], holdout=0.2), syncnet=frozen, sync_weight=0.03)
    before = _validation_loss(model, task)
    config = TrainConfig(steps=80, batch_size=2, learning_rate=2e-3, ema_decay=0.0, val_every=80, log_every=5)
    result = train_model(model.train(), task, config, tmp_path / "w2l.safetensors")
    # the validation loss keeps the expert's 0.03-weighted sync term, which a random expert leaves high
    assert result.final_validation_loss < 0.7 * before, (before, result.final_validation_loss)
    assert result.history["parts"][-1]["l1"] < 0.7 * result.history["parts"][0]["l1"]
    assert "sync" in result.history["parts"][-1]
    for key, value in frozen.state_dict().items():  # the expert stays frozen
        assert torch.equal(value, reference[key]), key


def test_train_cli_runs_both_kinds(clip, tmp_path):
    sync_out = tmp_path / "expert.safetensors"
    common = ["--data", str(clip.root), "--steps", "2", "--batch-size", "2", "--val-every", "2"]
    assert cli.main(["train", "syncnet", "--out", str(sync_out), "--base-channels", "2", *common]) == 0
    out = tmp_path / "gen.safetensors"
    assert cli.main(["train", "wav2lip", "--out", str(out), "--base-channels", "2", "--syncnet", str(sync_out),
                     *common]) == 0
    model = load_checkpoint(out, "wav2lip")
    assert model.config.base_channels == 2
    assert json.loads(model.checkpoint_metadata["landmarktalk.trained_on"]) == ["synthetic-0"]
    history = json.loads((tmp_path / "gen.train.json").read_text())["history"]
    assert "sync" in history["parts"][-1]
