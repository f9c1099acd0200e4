"""Fixtures shared by every test: the real data in ../shared/data (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest-xdist runs one process per core; torch's intra-op threads on top of that
# oversubscribe the CPU (measured: 25x slower training steps on a loaded 2-core machine).
# Set before torch is imported, and inherited by the CLI subprocesses the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder ../shared/data; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    return SHARED_DATA
