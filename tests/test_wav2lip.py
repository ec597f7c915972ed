"""Wav2Lip: official layout and size, the mel front end against an independent computation, boxes, inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import LandmarkTalkError
from pipelines.models.wav2lip import (
    SyncNet, SyncNetConfig, Wav2Lip, Wav2LipConfig, face_boxes, generator_input, lipsync_frames, mel_windows,
    wav2lip_melspectrogram,
)
from pipelines.schedule import source_frame_schedule
from pipelines.types import Audio, FaceTrack, frame_count_for
from shared_media import SHARED_DATA, SKIP_REASON

# ---------------------------------------------------------------------------------------------- model


def test_generator_has_the_official_size_names_and_shapes():
    model = Wav2Lip()
    count = sum(p.numel() for p in model.parameters())
    assert count == 36_298_035  # official Wav2Lip: ≈36.3 M
    assert abs(count - 36.3e6) / 36.3e6 < 0.01
    keys = model.state_dict()
    for name, shape in {
        "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
        "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
        "audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
        "audio_encoder.12.conv_block.1.running_var": (512,),
        "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),  # ConvTranspose: (in, out, k, k)
        "face_decoder_blocks.6.2.conv_block.1.num_batches_tracked": (),
        "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
        "output_block.1.weight": (3, 32, 1, 1),
    }.items():
        assert tuple(keys[name].shape) == shape, name
    assert len(keys) == 352
    model.eval()
    with torch.no_grad():
        single = model(torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
        timed = model(torch.randn(1, 5, 1, 80, 16), torch.rand(1, 6, 5, 96, 96))
    assert single.shape == (2, 3, 96, 96) and timed.shape == (1, 3, 5, 96, 96)
    assert 0 <= float(single.min()) and float(single.max()) <= 1  # sigmoid output


def test_timed_input_equals_frame_by_frame():
    torch.manual_seed(0)
    model = Wav2Lip(Wav2LipConfig(base_channels=2)).eval()
    audio, faces = torch.randn(2, 3, 1, 80, 16), torch.rand(2, 6, 3, 96, 96)
    with torch.no_grad():
        timed = model(audio, faces)
        for t in range(3):
            assert torch.allclose(timed[:, :, t], model(audio[:, t], faces[:, :, t]), atol=1e-6)


def test_syncnet_has_the_official_names_and_unit_embeddings():
    model = SyncNet().eval()
    keys = model.state_dict()
    assert tuple(keys["face_encoder.0.conv_block.0.weight"].shape) == (32, 15, 7, 7)
    assert tuple(keys["face_encoder.16.conv_block.0.weight"].shape) == (512, 512, 1, 1)
    assert tuple(keys["audio_encoder.12.conv_block.0.weight"].shape) == (512, 256, 3, 3)
    assert tuple(keys["audio_encoder.13.conv_block.0.weight"].shape) == (512, 512, 1, 1)
    assert "audio_encoder.14.conv_block.0.weight" not in keys  # two residuals after the (3, 2) stride, then 3×3, 1×1
    assert sum(p.numel() for p in model.parameters()) == 16_435_072
    with torch.no_grad():
        audio, face = SyncNet(SyncNetConfig(base_channels=4)).eval()(torch.randn(3, 1, 80, 16), torch.rand(3, 15, 48, 96))
    assert audio.shape == face.shape == (3, 64)
    assert torch.allclose(audio.norm(dim=1), torch.ones(3)) and torch.allclose(face.norm(dim=1), torch.ones(3))


def test_generator_input_masks_only_the_targets_lower_half():
    target, reference = torch.rand(2, 3, 96, 96) + 0.1, torch.rand(2, 3, 96, 96) + 0.1
    x = generator_input(target, reference)
    assert x.shape == (2, 6, 96, 96)
    assert torch.equal(x[:, :3, :48], target[:, :, :48]) and float(x[:, :3, 48:].abs().max()) == 0
    assert torch.equal(x[:, 3:], reference)


# ---------------------------------------------------------------------------------------------- mel


def _reference_mel(samples: np.ndarray) -> np.ndarray:
    """The original recipe written out step by step with numpy only (no librosa)."""
    x = samples.astype(np.float64)
    emphasised = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])  # y[n] = x[n] - 0.97 x[n-1]
    n_fft, hop = 800, 200
    padded = np.pad(emphasised, n_fft // 2, mode="reflect")  # centred frames
    count = 1 + len(emphasised) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(count)], axis=1)
    magnitude = np.abs(np.fft.rfft(frames, axis=0))  # [401, M]

    def hz_to_mel(f):  # Slaney: linear below 1 kHz, logarithmic above
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))

    def mel_to_hz(m):
        return np.where(m < 15, 200 * m / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    edges = mel_to_hz(np.linspace(hz_to_mel(55.0), hz_to_mel(7600.0), 82))
    bins = np.linspace(0, 8000, n_fft // 2 + 1)
    basis = np.zeros((80, len(bins)))
    for m in range(80):
        rising = (bins - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        basis[m] = np.maximum(0, np.minimum(rising, falling)) * 2 / (edges[m + 2] - edges[m])  # Slaney area norm
    decibels = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20  # min level -100 dB, ref 20 dB
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def _speech_or_chirp(seconds: float) -> np.ndarray:
    path = SHARED_DATA / "audio" / "RD_Radio31_000.wav"
    if path.is_file():
        import soundfile

        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        assert rate == 16000
        return data.mean(axis=1)[: int(seconds * 16000)]
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("fps, expected_frames", [(25.0, 50), (30.0, 60)])
def test_mel_windows_follow_the_recipe_at_any_fps(fps, expected_frames):
    samples = _speech_or_chirp(2.0)
    mel = wav2lip_melspectrogram(Audio(samples=samples[None], sample_rate=16000))
    reference = _reference_mel(samples)
    assert mel.shape == reference.shape == (80, 1 + 32000 // 200)
    assert np.abs(mel - reference).max() < 1e-5  # edges too: the reflect padding of old librosa
    assert mel.min() >= -4 and mel.max() <= 4 and mel.std() > 0.5  # real signal, not a constant

    frames = frame_count_for(2.0, fps)
    windows = mel_windows(mel, fps, frames)
    assert frames == expected_frames and windows.shape == (expected_frames, 80, 16)
    for i in range(frames):
        start = min(int(80 * (i / fps)), mel.shape[1] - 16)  # windows past the end take the last 16 steps
        assert np.abs(windows[i] - reference[:, start:start + 16]).max() < 1e-5, i
    assert np.array_equal(windows[-1], mel[:, -16:])


def test_mel_of_speech_file_resamples_and_downmixes():
    path = SHARED_DATA / "audio" / "vretalking_audio_2.wav"
    if not path.is_file():
        pytest.skip(SKIP_REASON)
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mel = wav2lip_melspectrogram(Audio(samples=data.T, sample_rate=rate))
    assert rate == 48000 and data.shape[1] == 2
    assert mel.shape == (80, 1 + int(round(len(data) * 16000 / rate)) // 200)


def test_short_audio_is_padded_to_one_window():
    mel = wav2lip_melspectrogram(Audio(samples=np.zeros((1, 1600), np.float32), sample_rate=16000))
    windows = mel_windows(mel, 25.0, 3)
    assert mel.shape == (80, 9) and windows.shape == (3, 80, 16)
    assert float(windows.max()) == -4.0  # digital silence sits at the floor


# ---------------------------------------------------------------------------------------------- boxes + inference


def _face_points(t: int, x0=20.0, x1=80.0, brow=30.0, chin=90.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = np.zeros((t, 68, 2), np.float32)
    points[:, :, 0] = rng.uniform(x0 + 5, x1 - 5, (t, 68))
    points[:, :, 1] = rng.uniform(brow + 5, chin - 5, (t, 68))
    points[:, 0, 0], points[:, 16, 0] = x0, x1
    points[:, 17:27, 1] = brow
    points[:, 8, 1] = chin
    return points


def test_face_boxes_pad_like_the_original_and_clip_to_the_frame():
    points = _face_points(4)
    boxes = face_boxes(points, (200, 200))
    # x from the jaw, top a fifth of brow-to-chin above the brows, bottom at the chin + 10 px pad
    assert boxes.tolist() == [[20, 18, 80, 100]] * 4
    assert face_boxes(points, (95, 200))[:, 3].tolist() == [95] * 4
    assert face_boxes(points, (200, 200), pads=(5, 0, 3, 4)).tolist() == [[17, 13, 84, 90]] * 4
    jumpy = np.array([[0, 0, 50, 50]] * 4 + [[50, 0, 100, 50]] + [[0, 0, 50, 50]] * 4)
    smoothed = face_boxes(jumpy, (200, 200), pads=(0, 0, 0, 0))
    assert smoothed[4, 0] == 10 and smoothed[0, 0] == 0  # a one-frame jump is averaged over 5 frames
    assert face_boxes(jumpy, (200, 200), pads=(0, 0, 0, 0), smooth_window=1)[4, 0] == 50
    with pytest.raises(LandmarkTalkError, match="faces"):
        face_boxes(np.zeros((3, 5)), (10, 10))
    with pytest.raises(LandmarkTalkError, match="outside"):
        face_boxes(np.array([[300, 300, 400, 400]]), (100, 100))


@pytest.mark.parametrize("num_source", [1, 3])
def test_lipsync_frames_changes_only_the_face_box(num_source):
    torch.manual_seed(0)
    model = Wav2Lip(Wav2LipConfig(base_channels=2))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (num_source, 120, 100, 3), dtype=np.uint8)
    points = _face_points(num_source)
    track = FaceTrack(landmarks=points, confidence=np.ones(num_source, np.float32),
                      transforms=np.tile(np.eye(2, 3, dtype=np.float32), (num_source, 1, 1)), crop_size=64,
                      frame_size=(120, 100), fps=25.0)
    audio = Audio(samples=rng.standard_normal((1, 16000)).astype(np.float32) * 0.1, sample_rate=16000)
    calls = []
    out = lipsync_frames(model, frames, track, audio, 25.0, batch_size=8, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (25, 120, 100, 3) and out.dtype == np.uint8
    assert calls[-1] == (25, 25) and len(calls) == 4
    schedule = source_frame_schedule(num_source, 25)
    x1, y1, x2, y2 = face_boxes(track, (120, 100))[0]
    for i in (0, 7, 24):
        source = frames[schedule[i]]
        outside = np.ones((120, 100), bool)
        outside[y1:y2, x1:x2] = False
        assert np.array_equal(out[i][outside], source[outside])
        assert np.abs(out[i, y1:y2, x1:x2].astype(int) - source[y1:y2, x1:x2]).mean() > 10
    with pytest.raises(LandmarkTalkError, match="frames"):
        lipsync_frames(model, frames.astype(np.float32), track, audio, 25.0)
