"""``histolib synth`` through Typer's CliRunner and as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_synth import read_tumour_polygons

SMALL = ["--width", "768", "--height", "640", "--seed", "3", "--workers", "1"]


def test_synth_both_writes_registered_pair(tmp_path: Path) -> None:
    import openslide

    result = CliRunner().invoke(app, ["synth", str(tmp_path), "--stain", "both", *SMALL])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "synthetic_he_3.geojson",
        "synthetic_he_3.tif",
        "synthetic_he_3_cells.csv",
        "synthetic_ihc_3.geojson",
        "synthetic_ihc_3.tif",
        "synthetic_ihc_3_cells.csv",
    ]
    for name in names:
        assert name in result.output
    assert "768 x 640 px" in result.output
    he, ihc = tmp_path / "synthetic_he_3_cells.csv", tmp_path / "synthetic_ihc_3_cells.csv"
    assert he.read_text() == ihc.read_text()
    with openslide.OpenSlide(str(tmp_path / "synthetic_ihc_3.tif")) as slide:
        assert slide.dimensions == (768, 640)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, abs=1e-3)

    again = CliRunner().invoke(app, ["synth", str(tmp_path), "--stain", "both", *SMALL])
    assert again.exit_code == 0
    assert again.output.count("kept (identical)") == 2


def test_synth_name_mpp_and_tumours(tmp_path: Path) -> None:
    args = ["synth", str(tmp_path), "--stain", "he", "--name", "case.01", "--mpp", "0.25"]
    result = CliRunner().invoke(app, [*args, "--tumours", "1", *SMALL])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "case.01.tif").is_file()
    assert len(read_tumour_polygons(tmp_path / "case.01.geojson")) == 1
    assert "0.25 um/px" in result.output

    both = CliRunner().invoke(app, ["synth", str(tmp_path), "--name", "pair", *SMALL])
    assert both.exit_code == 0, both.output
    assert (tmp_path / "pair_he.tif").is_file() and (tmp_path / "pair_ihc.tif").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stain", "pas"], "--stain must be he, ihc or both"),
        (["--width", "10"], "--width must be in [64, 65536], got 10"),
        (["--height", "1000000000"], "--height must be in [64, 65536], got 1000000000"),
        (["--mpp", "-1"], "--mpp must be in (0.001, 1000], got -1"),
        (["--tumours", "-2"], "--tumours must be in [0, 1000], got -2"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    ],
)
def test_synth_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_synth_subprocess(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "histolib_cli.main", "synth", str(tmp_path), "--stain", "ihc"]
    proc = subprocess.run([*cmd, *SMALL], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic_ihc_3.tif" in proc.stdout
    assert (tmp_path / "synthetic_ihc_3_cells.csv").is_file()

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    bad = subprocess.run(
        [sys.executable, "-m", "histolib_cli.main", "synth", str(blocker / "out"), *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert "error:" in bad.stderr and str(blocker) in bad.stderr
    assert "Traceback" not in bad.stderr
