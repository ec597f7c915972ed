"""Where the real test media lives, for parametrising tests at collection time."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SKIP_REASON = f"real test media not found at {SHARED_DATA}; clone the project beside shared/ to run these"


def shared_clips() -> list[Path]:
    """Every talking clip in ../shared/data/clips (empty when the folder is absent)."""
    return sorted((SHARED_DATA / "clips").glob("*.mp4"))


def shared_audio() -> list[Path]:
    """Every speech file in ../shared/data/audio."""
    return sorted((SHARED_DATA / "audio").glob("*.wav"))
