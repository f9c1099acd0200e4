"""``histolib split``: slide- and tile-level train/test columns in tile manifests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histolib.errors import ConfigError, ManifestError
from histolib.tileset.manifest import read_manifest, write_manifest
from histolib.tileset.split import (
    assign_split,
    split_manifests,
    split_rows,
    split_slides,
    split_tiles,
)
from histolib_cli.main import app

runner = CliRunner()


def _manifest(path: Path, slide_sizes: dict[str, int], *, stain: str = "he") -> Path:
    """A manifest with ``slide_sizes[slide]`` tiles per slide; labels alternate."""
    import geopandas as gpd
    from shapely.geometry import box

    rows = []
    for slide, n in slide_sizes.items():
        for i in range(n):
            x0 = i * 64
            rows.append(
                {
                    "tile_id": f"{slide}_x{x0}_y0_s64",
                    "slide_id": slide,
                    "slide_path": f"{slide}.tif",
                    "x0": x0,
                    "y0": 0,
                    "size_px": 64,
                    "mpp": 0.5,
                    "downsample": 1.0,
                    "stain": stain,
                    "label": "positive" if i % 3 == 0 else "negative",
                    "tissue_fraction": 1.0,
                    "annotation_fraction": 0.0,
                    "path": "",
                    "geometry": box(x0, 0, x0 + 64, 64),
                }
            )
    gdf = gpd.GeoDataFrame(rows, geometry="geometry")
    return write_manifest(gdf, path, params={"mpp": 0.5, "annotations": "contours/"})


def _slides_by_part(path: Path) -> dict[str, set[str]]:
    gdf, _ = read_manifest(path)
    return {p: set(gdf[gdf["split"] == p]["slide_id"]) for p in ("train", "test")}


@pytest.mark.parametrize(
    "sizes",
    [
        {f"s{i:02d}": 10 + (7 * i) % 13 for i in range(20)},  # many medium slides
        {**{f"small{i}": 5 for i in range(30)}, "huge": 2000},  # many small and one huge
        {"a": 3, "b": 40},  # two slides, very unequal
    ],
)
def test_slide_split_keeps_every_slide_in_one_part(tmp_path: Path, sizes) -> None:
    path = _manifest(tmp_path / "tiles.parquet", sizes)
    [report] = split_manifests([path], test_fraction=0.1, by="slide", seed=3)
    parts = _slides_by_part(path)
    assert not parts["train"] & parts["test"]
    assert parts["train"] | parts["test"] == set(sizes)
    assert parts["train"] and parts["test"]
    assert report.status == "written"
    assert report.slides == {"train": len(parts["train"]), "test": len(parts["test"])}
    total = sum(sizes.values())
    assert report.tiles["test"] == sum(sizes[s] for s in parts["test"])
    if "huge" in sizes:  # 10 % of 2150 = 215: 43 small slides would be needed, 30 exist
        assert parts["test"] == {f"small{i}" for i in range(30)}
    elif len(sizes) == 20:
        assert abs(report.tiles["test"] - 0.1 * total) <= 2


def test_slide_split_reaches_a_subset_sum_when_one_exists() -> None:
    counts = {"a": 50, "b": 50, "c": 50, "d": 10, "e": 10, "f": 10, "g": 20}
    test = split_slides(counts, test_fraction=0.15, seed=0)  # target 30 tiles of 200
    assert sum(counts[s] for s in test) == 30


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    sizes = {f"s{i:02d}": 10 for i in range(40)}
    a = _manifest(tmp_path / "a.parquet", sizes)
    b = _manifest(tmp_path / "b.parquet", sizes)
    split_manifests([a], seed=7)
    split_manifests([b], seed=7)
    assert _slides_by_part(a) == _slides_by_part(b)
    gdf, _ = read_manifest(b)
    other = assign_split(gdf, seed=8)
    assert not np.array_equal(other, gdf["split"].to_numpy())


def test_rerun_is_idempotent_and_keeps_metadata(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {f"s{i}": 8 for i in range(10)})
    split_manifests([path], test_fraction=0.2, seed=1)
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    [again] = split_manifests([path], test_fraction=0.2, seed=1)
    assert again.status == "unchanged"
    assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime
    _, meta = read_manifest(path)
    assert meta["params"]["mpp"] == 0.5 and meta["params"]["annotations"] == "contours/"
    assert meta["params"]["split"] == {"by": "slide", "test_fraction": 0.2, "seed": 1}


def test_other_settings_keep_the_split_unless_forced(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {f"s{i}": 8 for i in range(10)})
    split_manifests([path], seed=1)
    first = _slides_by_part(path)
    content = path.read_bytes()
    [kept] = split_manifests([path], seed=2, by="tile")
    assert kept.status == "kept" and "--force" in kept.note and "seed 1" in kept.note
    assert path.read_bytes() == content
    [forced] = split_manifests([path], seed=2, by="tile", force=True)
    assert forced.status == "written"
    assert _slides_by_part(path) != first
    _, meta = read_manifest(path)
    assert meta["params"]["split"]["by"] == "tile"


@pytest.mark.parametrize("n", [2, 9, 10, 11, 57, 1000])
def test_tile_split_fraction_is_exact_to_rounding(n: int) -> None:
    mask = split_tiles(n, test_fraction=0.1, seed=42)
    assert mask.sum() == math.ceil(0.1 * n)  # sklearn's rounding of a float test_size


def test_tile_split_does_not_depend_on_row_order(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {"a": 30, "b": 25})
    gdf, _ = read_manifest(path)
    forward = dict(zip(gdf["tile_id"], assign_split(gdf, by="tile"), strict=True))
    shuffled = gdf.sample(frac=1.0, random_state=0)
    backward = dict(zip(shuffled["tile_id"], assign_split(shuffled, by="tile"), strict=True))
    assert forward == backward
    assert sum(v == "test" for v in forward.values()) == 6  # ceil(5.5)


def test_several_manifests_are_split_on_their_own_slides(tmp_path: Path) -> None:
    he = _manifest(tmp_path / "he.parquet", {f"h{i}": 10 for i in range(10)})
    ihc = _manifest(tmp_path / "ihc.parquet", {f"i{i}": 5 for i in range(20)}, stain="ihc")
    reports = split_manifests([he, ihc], test_fraction=0.3, seed=0)
    assert [r.tiles["test"] for r in reports] == [30, 30]
    assert _slides_by_part(ihc)["test"] <= {f"i{i}" for i in range(20)}


def test_split_rows(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {f"s{i}": 4 for i in range(5)})
    gdf, _ = read_manifest(path)
    assert len(split_rows(gdf, "test")) == len(gdf)  # no split column: every row
    with pytest.raises(ManifestError, match="histolib split"):
        split_rows(gdf, "train", path=path, required=True)
    split_manifests([path], test_fraction=0.2, seed=0)
    gdf, _ = read_manifest(path)
    train, test = split_rows(gdf, "train"), split_rows(gdf, "test")
    assert len(train) + len(test) == len(gdf) and len(test) == 4
    assert set(train["split"]) == {"train"}
    with pytest.raises(ConfigError, match="train, val or test"):
        split_rows(gdf, "validation")


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_bad_fractions(tmp_path: Path, fraction: float) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {"a": 4, "b": 4})
    with pytest.raises(ConfigError, match="--test-fraction"):
        split_manifests([path], test_fraction=fraction)


def test_one_slide_needs_tile_split_and_nothing_is_written(tmp_path: Path) -> None:
    good = _manifest(tmp_path / "good.parquet", {"a": 4, "b": 4})
    one = _manifest(tmp_path / "one.parquet", {"only": 12})
    before = good.read_bytes()
    with pytest.raises(ConfigError, match=r"one\.parquet.*at least 2 slides.*--by tile"):
        split_manifests([good, one])
    assert good.read_bytes() == before  # checked all before writing any
    [report] = split_manifests([one], by="tile")
    assert report.tiles == {"train": 10, "test": 2}


def test_missing_file_and_bad_by(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        split_manifests([tmp_path / "nowhere.parquet"])
    path = _manifest(tmp_path / "tiles.parquet", {"a": 4, "b": 4})
    with pytest.raises(ConfigError, match="slide or tile"):
        split_manifests([path], by="patient")


def test_cli_prints_a_summary_and_reports_errors(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {f"s{i}": 10 for i in range(10)})
    args = ["split", str(path), "--test-fraction", "0.2", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "written" in result.output and "test" in result.output and "20.0%" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "unchanged" in again.output
    kept = runner.invoke(app, ["split", str(path), "--seed", "6"])
    assert kept.exit_code == 0 and "--force" in kept.output
    bad = runner.invoke(app, ["split", str(path), "--test-fraction", "1"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "--test-fraction" in bad.output
    missing = runner.invoke(app, ["split", str(tmp_path / "x.parquet")])
    assert missing.exit_code == 1 and "x.parquet" in missing.output


def test_a_foreign_split_column_is_refused_unless_forced(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "tiles.parquet", {"a": 4, "b": 4})
    gdf, meta = read_manifest(path)
    gdf["split"] = ["train", "validation"] * 4
    write_manifest(gdf, path, params=meta["params"])
    with pytest.raises(ManifestError, match=r"other than train/val/test.*--force"):
        split_manifests([path])
    with pytest.raises(ManifestError, match=r"\['validation'\]"):
        split_rows(gdf, "train", path=path)
    [report] = split_manifests([path], force=True)
    assert report.status == "written" and report.tiles == {"train": 4, "test": 4}


def test_a_manifest_whose_folder_a_tile_run_holds_is_not_split(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _manifest(tmp_path / "out" / "tiles.parquet", {"a": 4, "b": 4})
    hold = (
        "import sys, time\nfrom histolib.core.lock import output_lock\n"
        "with output_lock(sys.argv[1], command='tile'):\n"
        "    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(path.parent)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        busy = runner.invoke(app, ["split", str(path)])
        assert busy.exit_code == 1
        assert "in use by another histolib run (tile" in busy.output
        assert "split" not in read_manifest(path)[0].columns
    finally:
        holder.kill()
        holder.wait()
    assert runner.invoke(app, ["split", str(path)]).exit_code == 0  # the lock died with it
    assert "split" in read_manifest(path)[0].columns


def test_val_part_by_slide_leaves_test_as_it_was(tmp_path: Path) -> None:
    sizes = {f"s{i}": 5 + i for i in range(10)}
    plain = _manifest(tmp_path / "a" / "tiles.parquet", sizes)
    with_val = _manifest(tmp_path / "b" / "tiles.parquet", sizes)
    split_manifests([plain], test_fraction=0.2)
    (report,) = split_manifests([with_val], test_fraction=0.2, val_fraction=0.2)
    a, _ = read_manifest(plain)
    b, meta = read_manifest(with_val)
    assert set(b["split"]) == {"train", "val", "test"}
    assert list(a["split"] == "test") == list(b["split"] == "test")  # test unchanged
    parts = {p: set(b[b["split"] == p]["slide_id"]) for p in ("train", "val", "test")}
    assert not (parts["val"] & parts["train"]) and not (parts["val"] & parts["test"])
    assert abs(report.part_fraction("val") - 0.2) < 0.1 and report.slides["val"] >= 1
    assert meta["params"]["split"]["val_fraction"] == 0.2
    again = split_manifests([with_val], test_fraction=0.2, val_fraction=0.2)
    assert again[0].status == "unchanged"
    assert len(split_rows(b, "val")) == report.tiles["val"]


def test_val_part_by_tile_and_bad_val_fractions(tmp_path: Path) -> None:
    gdf, _ = read_manifest(_manifest(tmp_path / "tiles.parquet", {"s0": 20}))
    column = assign_split(gdf, test_fraction=0.1, by="tile", seed=42, val_fraction=0.25)
    assert {p: int((column == p).sum()) for p in ("train", "val", "test")} == {
        "train": 13,
        "val": 5,
        "test": 2,
    }
    for bad in (-0.1, 1.0, 0.9, math.nan):
        with pytest.raises(ConfigError, match="val-fraction"):
            assign_split(gdf, test_fraction=0.1, by="tile", val_fraction=bad)
    result = runner.invoke(
        app,
        ["split", str(tmp_path / "tiles.parquet"), "--by", "tile", "--val-fraction", "0.25"],
    )
    assert result.exit_code == 0, result.output
    assert "val" in result.output
