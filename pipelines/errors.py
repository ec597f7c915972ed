"""The pack's error type: a ValueError whose message names the input, the problem and the fix."""

__all__ = ["LandmarkTalkError"]


class LandmarkTalkError(ValueError):
    """Bad input or a bad file; the message says which and what to do instead."""
