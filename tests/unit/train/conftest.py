"""Fixtures shared by the training and evaluation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers_transfer import synthetic_eval_tiles


@pytest.fixture(scope="module")
def synthetic(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[Any], dict[bytes, Any], Path]:
    """Synthetic evaluation tiles whose truth is known (``synthetic_eval_tiles``), built once
    per test module: ``(root, tiles, truth, geojson)``, with tumour and tumour-free tiles."""
    root = tmp_path_factory.mktemp("eval")
    _layout, tiles, truth, geojson = synthetic_eval_tiles(root)
    assert any(t.mask.any() for t in tiles) and any(not t.mask.any() for t in tiles)
    return root, tiles, truth, geojson
