"""Which source frame drives each output frame when the audio and the face video differ in length."""
from __future__ import annotations

import numpy as np

from .errors import LandmarkTalkError

__all__ = ["source_frame_schedule", "LENGTH_MODES"]

LENGTH_MODES = ("pingpong", "loop")


def source_frame_schedule(num_source: int, num_output: int, mode: str = "pingpong") -> np.ndarray:
    """int64 [num_output] indices into the source frames.

    Output length always follows the audio. A shorter audio cuts the video; a longer one plays it
    forward and back (``pingpong``, no jump at the seam) or restarts it (``loop``).
    """
    if mode not in LENGTH_MODES:
        raise LandmarkTalkError(f"length mode {mode!r}: choose one of {', '.join(LENGTH_MODES)}")
    if num_source < 1:
        raise LandmarkTalkError("the face video has no frames; give a video with at least one frame, or a photo")
    if num_output < 0:
        raise LandmarkTalkError(f"output frame count {num_output} is negative")
    steps = np.arange(num_output, dtype=np.int64)
    if num_source == 1:
        return np.zeros(num_output, dtype=np.int64)
    if mode == "loop":
        return steps % num_source
    period = 2 * num_source - 2
    phase = steps % period
    return np.where(phase < num_source, phase, period - phase)
