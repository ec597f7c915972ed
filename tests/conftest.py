"""Shared fixtures: the real media in ../shared/data (skipped with a message when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared_media import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder of real test media; tests using it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real test media not found at {SHARED_DATA}; clone the project beside shared/ to run these")
    return SHARED_DATA
