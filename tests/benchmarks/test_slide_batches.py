"""Smoke test of benchmarks/slide_batches.py: a tiny run gives equal batches from PNGs and
slides, by the uint8 path and by the float32 baseline."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.torch


def test_a_tiny_run_reads_the_same_batches_from_pngs_and_slides(tmp_path: Path) -> None:
    bench = importlib.import_module("benchmarks.slide_batches")
    out = tmp_path / "figures.json"
    args = ["--work", str(tmp_path / "work"), "--size", "1024", "--batches", "2"]
    args += ["--repeat", "1", "--workers", "1", "--batch", "2", "--json", str(out)]
    result = bench.main(args)
    assert json.loads(out.read_text()) == result
    assert [(r["scenario"], r["workers"], r["source"]) for r in result["rows"]] == [
        ("aligned", 1, "png"),
        ("aligned", 1, "slide"),
        ("resampled", 1, "png"),
        ("resampled", 1, "slide"),
    ]
    for row in result["rows"]:
        assert row["equal_batches"] is True and row["tiles"] > 0
        assert row["new_batches_s"] > 0 and row["old_batches_s"] > 0
        assert row["new_over_old"] == row["new_batches_s"] / row["old_batches_s"]
        assert row["loader_batches_s"] > 0
