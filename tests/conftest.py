"""Shared fixtures: the real media in ../shared/data (skipped with a message when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared_media import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder of real test media; tests using it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real test media not found at {SHARED_DATA}; clone the project beside shared/ to run these")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: on a shared 2-core machine it is many times faster per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
