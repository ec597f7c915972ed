"""Video nodes (nodes/video.py) called with ComfyUI-shaped values against a real ComfyUI (COMFYUI_DIR)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_harness import SKIP_REASON, comfy_audio, comfy_available, pack_module

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@pytest.fixture
def node():
    return pack_module("nodes.video").LandmarkTalkMatchFramesToAudio


def _frames(count: int) -> torch.Tensor:
    # Frame i is filled with the value i/100, so the output says which source frame it came from.
    return torch.arange(count, dtype=torch.float32).div(100).view(count, 1, 1, 1).expand(count, 4, 6, 3).clone()


def _source_indices(images: torch.Tensor) -> list[int]:
    return [round(v * 100) for v in images[:, 0, 0, 0].tolist()]


def test_longer_audio_plays_frames_forward_and_back(node):
    audio = comfy_audio(np.zeros(16000), 16000)  # 1 s at 10 fps → 10 frames
    images, frame_count, fps = node.execute(images=_frames(4), audio=audio, fps=10.0, length_mode="pingpong").result
    assert frame_count == 10 and images.shape == (10, 4, 6, 3) and fps == 10.0
    assert _source_indices(images) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_loop_restarts_and_shorter_audio_cuts(node):
    looped, _, _ = node.execute(images=_frames(3), audio=comfy_audio(np.zeros(8000), 8000), fps=7.0,
                             length_mode="loop").result
    assert _source_indices(looped) == [0, 1, 2, 0, 1, 2, 0]
    cut, count, _ = node.execute(images=_frames(50), audio=comfy_audio(np.zeros((2, 5292)), 44100), fps=25.0).result
    assert count == 3 == len(cut) and _source_indices(cut) == [0, 1, 2]  # 0.12 s at 25 fps


def test_frame_count_follows_the_pack_wide_rounding_rule(node):
    frame_count_for = pack_module("pipelines.types").frame_count_for
    audio = comfy_audio(np.zeros(24000 * 3 + 7), 24000)
    _, count, _ = node.execute(images=_frames(2), audio=audio, fps=29.97).result
    assert count == frame_count_for((24000 * 3 + 7) / 24000, 29.97) == 90


def test_audio_shorter_than_a_frame_is_an_error(node):
    with pytest.raises(ValueError, match="shorter than one frame"):
        node.execute(images=_frames(2), audio=comfy_audio(np.zeros(100), 16000), fps=25.0)
