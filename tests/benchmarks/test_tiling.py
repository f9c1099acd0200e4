"""Smoke tests of benchmarks/tiling.py: its pure helpers and a run at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "tiling.py"


@pytest.fixture(scope="module")
def bench():
    # Imported by name (benchmarks/ is a package under the project root) so that
    # the spawned baseline processes can unpickle its functions.
    return importlib.import_module("benchmarks.tiling")


def test_tile_grid_exact_and_fractional_steps(bench):
    grid = bench.tile_grid(1000, 600, size=256, mpp=0.5, slide_mpp=0.5)
    assert grid.extent == 256
    assert grid.xs.tolist() == [0, 256, 512]
    assert grid.ys.tolist() == [0, 256]
    # 0.499 um/px slide read at 0.5: a tile covers 256.5 level-0 px, read as 257.
    grid = bench.tile_grid(1100, 800, size=256, mpp=0.5, slide_mpp=0.499)
    assert grid.extent == 257
    assert grid.xs.tolist() == [0, 257, 513, 770]
    assert all(x + grid.extent <= 1100 for x in grid.xs)
    assert grid.shape == (3, 4)
    assert grid.origins()[:2] == [(0, 0), (257, 0)]


def test_row_fractions_counts_windows(bench):
    strip = np.zeros((4, 12), dtype=bool)  # rows = y, cols = x
    strip[:, 0:3] = True  # first window (x 0..3) full
    strip[:2, 4:6] = True  # second window (x 4..7): 4 of 16
    fractions = bench.row_fractions(strip, np.array([0, 4, 8]), 4)
    assert fractions.tolist() == [0.75, 0.25, 0.0]


def test_recall_precision_counts(bench):
    truth = np.array([[True, True, False], [True, False, False]])
    kept = np.array([[True, False, True], [True, False, False]])
    acc = bench.recall_precision(truth, kept)
    assert (acc["true_positive"], acc["false_negative"], acc["false_positive"]) == (2, 1, 1)
    assert acc["recall"] == pytest.approx(2 / 3)
    assert acc["precision"] == pytest.approx(2 / 3)
    empty = bench.recall_precision(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    assert empty["recall"] == 1.0 and empty["precision"] == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        bench.recall_precision(truth, kept[:1])


def test_kept_on_grid_matches_within_tolerance(bench):
    grid = bench.tile_grid(1100, 800, size=256, mpp=0.5, slide_mpp=0.499)
    kept, unmatched = bench.kept_on_grid(grid, [(257, 0), (512, 514), (100, 100)], tolerance=1)
    assert unmatched == 1
    assert np.argwhere(kept).tolist() == [[0, 1], [2, 2]]


def test_split_rows_alternates_rows(bench):
    origins = [(x, y) for y in (0, 10, 20) for x in (0, 5)]
    parts = bench.split_rows(origins, 2)
    assert parts[0] == [(0, 0), (5, 0), (0, 20), (5, 20)]
    assert parts[1] == [(0, 10), (5, 10)]
    assert bench.split_rows([(0, 0)], 2) == [[(0, 0)]]


def test_format_table_aligns(bench):
    text = bench.format_table([["a", 1], ["bbb", 22]], ["run", "n"])
    lines = text.splitlines()
    assert lines[0].split() == ["run", "n"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len({len(line.rstrip()) for line in lines[2:]}) <= 2


def test_tissue_fractions_from_pixels(bench, tmp_path):
    import pyvips

    rgb = np.full((520, 520, 3), 250, dtype=np.uint8)
    rgb[0:130, 0:260] = (200, 120, 180)  # half of tile (0, 0): tissue
    rgb[260:520, 260:520] = (60, 40, 120)  # all of tile (1, 1)
    rgb[300, 10] = (240, 230, 235)  # near-white pixel: not tissue at white=220
    path = tmp_path / "tiny.tif"
    pyvips.Image.new_from_array(rgb).copy(interpretation="srgb").tiffsave(
        str(path), tile=True, tile_width=64, tile_height=64
    )
    grid = bench.tile_grid(520, 520, size=260, mpp=0.5, slide_mpp=0.5)
    fractions = bench.tissue_fractions(path, grid, white=220)
    assert fractions.shape == (2, 2)
    np.testing.assert_allclose(fractions, [[0.5, 0.0], [0.0, 1.0]])


def test_build_slide_is_generic_tiff_with_mpp(bench, shared_data, tmp_path):
    source = shared_data / "slides" / "CMU-1-Small-Region.svs"
    path = bench.build_slide(tmp_path, size=3000, source=source, margin=0.2)
    info = bench.check_slide(path, size=3000, mpp=0.499)
    assert info["vendor"] == "generic-tiff"
    assert info["levels"] > 1
    # Cached: a second call returns the same file without rebuilding.
    mtime = path.stat().st_mtime_ns
    assert bench.build_slide(tmp_path, size=3000, source=source) == path
    assert path.stat().st_mtime_ns == mtime
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        corner = np.asarray(slide.read_region((0, 0), 0, (64, 64)).convert("RGB"))
        centre = np.asarray(slide.read_region((1400, 1400), 0, (200, 200)).convert("RGB"))
    assert corner.min() >= 250  # the white margin
    assert (centre.min(axis=2) < 220).mean() > 0.05  # real tissue in the middle


def _small_run(shared_data: Path, work: Path, out: Path) -> list[str]:
    """The script's options for a small run: 2048 px of the vendored slide, figures to ``out``."""
    source = shared_data / "slides" / "CMU-1-Small-Region.svs"
    return ["--size", "2048", "--work", str(work), "--source", str(source), "--json", str(out)]


def test_script_runs_small_without_histolib(bench, shared_data, tmp_path):
    out = tmp_path / "figures.json"
    figures = bench.main([*_small_run(shared_data, tmp_path, out), "--skip-histolib"])
    written = json.loads(out.read_text())
    assert written["truth"]["grid_tiles"] == 49
    assert 0 < written["truth"]["tissue_tiles"] < 49
    assert set(figures["baselines"]) == {
        "read_w1",
        "read_w2",
        "png6_w1",
        "png6_w2",
        "png1_w1",
        "png1_w2",
    }
    for run in written["baselines"].values():
        assert run["wall"] > 0 and run["cpu"] > 0
        assert run["wall_s"] > 0 and run["cpu_s"] > 0
    assert not (tmp_path / "baseline_png").exists()


def test_script_runs_small_with_histolib(shared_data, tmp_path):
    if importlib.util.find_spec("histolib.tiling.tiler") is None:
        pytest.skip("histolib.tiling.tiler is not available yet")
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *_small_run(shared_data, tmp_path, out),
            "--skip-baselines",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures["histolib"]) == {"none_w1_api", "none_w1", "png_w1", "png_w2"}
    for run in figures["histolib"].values():
        assert run["tiles"] > 0
        assert run["unmatched_origins"] == 0
        assert run["wall_s"] > 0 and run["cpu_s"] > 0
    assert 0.0 <= figures["accuracy"]["recall"] <= 1.0
    assert "tissue recall" in done.stdout
