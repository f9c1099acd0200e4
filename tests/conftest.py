"""Fixtures shared by every test: the real data vendored in tests/data (see its PROVENANCE.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers_train import TinyDomain, make_tiny_pair

# pytest-xdist runs one process per core; torch's intra-op threads on top of that
# oversubscribe the CPU (measured: 25x slower training steps on a loaded 2-core machine).
# Set before torch is imported, and inherited by the CLI subprocesses the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEST_DATA = Path(__file__).resolve().parent / "data"

#: Every vendored file the tests read (paths under tests/data); PROVENANCE.md says where each
#: comes from and under which licence.
VENDORED = (
    "slides/CMU-1-Small-Region.svs",
    "slides/broken.svs",
    "annotations/annotated_regions_Qupath.geojson",
    "annotations/qupath05.geojson",
    "tiles/roigan/he_000.png",
    "tiles/roigan/he_mask_000.png",
    "tiles/roigan/ihc_000.png",
    "reference/he_000.json",
    "reference/he_000_exclusion.png",
    "reference/he_000_full_mask.png",
    "reference/ihc_000.json",
    "reference/ihc_000_full_mask.png",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data vendored in tests/data; fails (never skips) when a file is missing."""
    missing = [name for name in VENDORED if not (TEST_DATA / name).is_file()]
    if missing:
        pytest.fail(
            f"vendored test data missing from {TEST_DATA}: {', '.join(missing)} "
            "(see tests/data/PROVENANCE.md)",
            pytrace=False,
        )
    return TEST_DATA


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyDomain, TinyDomain]:
    """A tiny H&E and IHC training pair (tests/helpers_train.py), built once per test module.

    Test modules with another kind of pair (test_synthetic.py) define their own ``pair``.
    """
    return make_tiny_pair(tmp_path_factory.mktemp("pair"))
