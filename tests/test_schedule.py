import numpy as np
import pytest

from pipelines.errors import LandmarkTalkError
from pipelines.schedule import source_frame_schedule


def test_shorter_audio_cuts_the_video():
    assert source_frame_schedule(10, 4).tolist() == [0, 1, 2, 3]


def test_pingpong_plays_forward_and_back_without_jumps():
    idx = source_frame_schedule(4, 11, "pingpong")
    assert idx.tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert np.abs(np.diff(idx)).max() == 1


def test_loop_restarts():
    assert source_frame_schedule(3, 7, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_photo_and_bad_inputs():
    assert source_frame_schedule(1, 5).tolist() == [0] * 5
    with pytest.raises(LandmarkTalkError, match="no frames"):
        source_frame_schedule(0, 5)
    with pytest.raises(LandmarkTalkError, match="bounce"):
        source_frame_schedule(5, 5, "bounce")
