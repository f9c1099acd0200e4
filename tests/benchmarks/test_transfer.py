"""benchmarks/transfer.py --generator: old path against new on a small slide, same pixels."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("openslide")

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    bench = importlib.import_module("benchmarks.transfer")
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{bench.OLD_COMMIT}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode:
        pytest.skip("the old path's commit is not in this clone (shallow?)")
    return bench


@pytest.mark.parametrize("generator", ["null", "sleep:5"])
def test_old_and_new_paths_write_the_same_pixels(tmp_path: Path, generator: str) -> None:
    bench = _bench()
    args = ["--generator", generator, "--size", "768", "--repeat", "1", "--workers", "1"]
    result = bench.main([*args, "--work-dir", str(tmp_path)])
    rows, summary = result["rows"], result["summary"]
    assert [row["path"] for row in rows] == ["old", "new"]
    assert rows[0]["windows"] == rows[1]["windows"] > 0
    assert summary["max_abs_diff"] <= 2 and summary["mean_abs_diff"] < 0.05
    new = rows[1]
    stages = [k for k in new if k.startswith("cpu_ms_") and k != "cpu_ms_per_window"]
    assert {"cpu_ms_generator_thread", "cpu_ms_readers", "cpu_ms_rows"} <= set(stages)
    assert 0 <= new["wait_input_share"] <= 1 and 0 <= new["wait_output_share"] <= 1
    if generator.startswith("sleep"):
        assert new["generator_alone_share"] > 0
