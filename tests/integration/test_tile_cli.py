"""``histolib tile`` through Typer's CliRunner and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from histolib.tileset.manifest import read_manifest
from histolib_cli.main import app
from tests.helpers_tile import disc_slide, manifest_frame, write_contours

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disc_slide(tmp_path_factory.mktemp("cli") / "disc.tif")


@pytest.fixture(scope="module")
def contours(slide: Path) -> Path:
    return write_contours(slide.parent / "disc.geojson", [box(256, 512, 768, 1024)])


def invoke(*args: str):
    return CliRunner().invoke(app, ["tile", *map(str, args)])


def one_error_line(result) -> str:
    """The output of a failed command: exactly one ``error:`` line and no traceback."""
    text = result.output
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def test_tile_with_annotations(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "out"
    result = invoke(slide, "--out", out, "--annotations", contours, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "tiles.parquet" in result.output
    gdf, meta = read_manifest(out / "tiles.parquet")
    assert {"positive", "negative"} <= set(gdf["label"])
    assert all((out / p).is_file() for p in gdf["path"])
    assert (out / "qc" / "disc.png").is_file() and (out / "masks" / "disc.png").is_file()
    assert meta["params"]["stain"] == "he" and meta["params"]["size"] == 256


def test_all_options(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "opts"
    result = invoke(
        slide, "--out", out, "--annotations", contours, "--stain", "he", "--mpp", "1.0",
        "--size", "128", "--slide-mpp", "0.5", "--min-tissue", "0.3", "--balance",
        "--max-tiles", "4", "--seed", "3", "--workers", "1", "--format", "jpeg",
        "--positive-class", "Tumor", "--positive-fraction", "0.6", "--png-compression", "6",
        "--jpeg-quality", "80", "--mpp-tolerance", "0.01", "--min-region-area", "1000",
        "--max-hole-area", "500", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    gdf, meta = read_manifest(out / "tiles.parquet")
    assert len(gdf) == 4 and sorted(gdf["label"]) == ["negative"] * 2 + ["positive"] * 2
    assert (gdf["size_px"] == 128).all() and (gdf["mpp"] == 1.0).all()
    assert gdf["path"].str.endswith(".jpg").all()
    params = meta["params"]
    assert params["positive_classes"] == ["Tumor"] and params["jpeg_quality"] == 80
    assert params["min_tissue"] == 0.3 and params["seed"] == 3


def test_format_none(tmp_path: Path, slide: Path) -> None:
    result = invoke(slide, "--out", tmp_path / "n", "--format", "none", "--workers", "1")
    assert result.exit_code == 0, result.output
    gdf, _ = read_manifest(tmp_path / "n" / "tiles.parquet")
    assert len(gdf) > 0 and (gdf["path"] == "").all()
    assert not (tmp_path / "n" / "tiles").exists()


def test_rerun_resumes(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "r"
    args = (slide, "--out", out, "--annotations", contours, "--workers", "1")
    assert invoke(*args).exit_code == 0
    first = manifest_frame(out / "tiles.parquet")
    assert invoke(*args).exit_code == 0
    assert first.equals(manifest_frame(out / "tiles.parquet"))


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda t, s, d: [t / "missing.svs", "--out", t / "o"], "no such file or folder"),
        (lambda t, s, d: [t, "--out", t / "o"], "folder holds no slides"),
        (lambda t, s, d: [d / "slides/broken.svs", "--out", t / "o"], "corrupt"),
        (lambda t, s, d: [s, "--out", s / "sub"], "cannot create output folder"),
        (lambda t, s, d: [s, "--out", t / "o", "--stain", "xyz"], "--stain"),
        (lambda t, s, d: [s, "--out", t / "o", "--balance"], "--balance needs labels"),
        (
            lambda t, s, d: [s, "--out", t / "o", "--annotations", d / "slides/broken.svs"],
            "not GeoJSON",
        ),
        (
            lambda t, s, d: [d / "tiles/roigan/he_000.png", "--out", t / "o"],
            "--slide-mpp",
        ),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, slide: Path, shared_data: Path, make_args, expected: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(*make_args(empty, slide, shared_data), "--workers", "1")
    assert result.exit_code == 1
    assert expected in one_error_line(result)


def test_contours_outside_slide(tmp_path: Path, slide: Path) -> None:
    far = write_contours(tmp_path / "far.geojson", [box(50000, 50000, 51000, 51000)])
    result = invoke(slide, "--out", tmp_path / "o", "--annotations", far, "--workers", "1")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(far) in line and "outside the slide" in line


def test_one_bad_slide_among_several(tmp_path: Path, slide: Path, shared_data: Path) -> None:
    broken = shared_data / "slides/broken.svs"
    out = tmp_path / "several"
    result = invoke(slide, broken, "--out", out, "--workers", "1")
    assert result.exit_code == 2, result.output
    assert f"error: {broken}" in result.output and "Traceback" not in result.output
    assert "1 of 2 slide(s) failed" in result.output
    gdf, _ = read_manifest(out / "tiles.parquet")
    assert set(gdf["slide_id"]) == {"disc"}


def run_module(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "histolib_cli.main", "tile", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_subprocess_two_workers(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "sub"
    done = run_module(slide, "--out", out, "--annotations", contours, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    gdf, _ = read_manifest(out / "tiles.parquet")
    assert "positive" in set(gdf["label"]) and all((out / p).is_file() for p in gdf["path"])


def test_subprocess_broken_slide(tmp_path: Path, shared_data: Path) -> None:
    done = run_module(shared_data / "slides/broken.svs", "--out", tmp_path / "b")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.svs" in lines[0]
    assert "Traceback" not in done.stderr
