"""Smoke tests of benchmarks/dask_tiling.py: its report and a run at a tiny size."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.dask_tiling")


def _figures(dask2: float) -> dict:
    fastest = {"local-1": 20.0, "local-2": 10.0, "dask-1": 21.0, "dask-2": dask2}
    return {
        "slides": 2,
        "size": 1024,
        "tiles": 100,
        "repeat": 1,
        "cpus": 2,
        "fastest": fastest,
        "cpu_s": {"local-1": 19.0, "local-2": 20.0, "dask-1": 20.5, "dask-2": 22.0},
        "same": dict.fromkeys(fastest, True),
        "cluster_start_s": {"dask-1": 1.0, "dask-2": 1.5},
        "dask2_over_local2": dask2 / 10.0,
    }


def test_the_report_gives_the_ratio_and_the_verdict(bench) -> None:
    text = bench.report(_figures(11.0))
    assert "Dask 2 workers / local pool of 2: 1.100 (within 15%: yes)" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("dask-2"))
    assert row == ["dask-2", "11.00", "9.1", "1.100", "1.91", "22.00", "1.100", "yes"]
    assert "(within 15%: no)" in bench.report(_figures(12.0))


@pytest.mark.cluster
@pytest.mark.slow
def test_a_tiny_run_measures_every_configuration(bench, tmp_path) -> None:
    pytest.importorskip("distributed")
    figures_path = tmp_path / "figures.json"
    args = ["--slides", "1", "--size", "768", "--repeat", "1", "--work", str(tmp_path)]
    assert bench.main([*args, "--json", str(figures_path)]) == 0  # every manifest the same
    figures = json.loads(figures_path.read_text())
    assert set(figures["fastest"]) == {"local-1", "local-2", "dask-1", "dask-2"}
    assert all(figures["same"].values()) and figures["tiles"] > 0
    assert figures["dask2_over_local2"] == pytest.approx(
        figures["fastest"]["dask-2"] / figures["fastest"]["local-2"]
    )
