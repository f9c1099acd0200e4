"""``histolib export qupath`` and ``histolib import qupath`` through CliRunner and a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from histolib.annotations.reading import read_annotations
from histolib.library.cellio import read_library, write_library
from histolib_cli.main import app
from tests.helpers_qupath import library_from_manifest, reference_library, write_manifest_for

runner = CliRunner()


def test_export_then_import_cli(shared_data: Path, tmp_path: Path) -> None:
    manifest, library = reference_library(shared_data, tmp_path)
    lib = write_library(library, tmp_path / "library.parquet", params={})
    out = tmp_path / "qupath"
    res = runner.invoke(
        app,
        [
            "export",
            "qupath",
            str(manifest),
            str(lib),
            "--out",
            str(out),
            "--class-names",
            "cancer=Tumor,normal=Normal",
            "--cells",
            "cell",
        ],
    )
    assert res.exit_code == 0, res.output
    exported = out / "CMU-1-Small-Region.geojson"
    assert f"{exported}: 6 tiles, {len(library)} cells" in res.output
    objects = read_annotations(exported)
    assert sum(a.object_type == "cell" for a in objects) == len(library)
    assert {a.class_name for a in objects if a.object_type == "cell"} == {"Tumor", "Normal"}

    # the pathologist deletes the first two cells and saves a bare array
    features = json.loads(exported.read_text())["features"]
    cells = [f for f in features if f["properties"]["objectType"] == "cell"]
    edited = tmp_path / "CMU-1-Small-Region.json"
    edited.write_text(json.dumps(cells[2:]))
    res = runner.invoke(
        app,
        [
            "import",
            "qupath",
            str(edited),
            "--tiles",
            str(manifest),
            "--out",
            str(tmp_path / "curated.parquet"),
            "--class-names",
            "cancer=Tumor,normal=Normal",
        ],
    )
    assert res.exit_code == 0, res.output
    back, _ = read_library(tmp_path / "curated.parquet")
    assert len(back) == len(library) - 2
    assert f"{len(library) - 2} cells" in res.output


def test_export_empty_and_bad_inputs_cli(tmp_path: Path) -> None:
    from histolib.library.cellio import empty_library

    empty = write_library(empty_library(), tmp_path / "empty.geojson", params={})
    res = runner.invoke(app, ["export", "qupath", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "has no cells" in res.output and "empty FeatureCollection" in res.output
    assert json.loads((tmp_path / "o" / "empty.geojson").read_text())["features"] == []

    foreign = tmp_path / "foreign.parquet"
    foreign.write_bytes(b"PAR1 nonsense")
    res = runner.invoke(app, ["export", "qupath", str(foreign), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert f"error: {foreign}: not a Parquet file" in res.output
    assert "Traceback" not in res.output

    res = runner.invoke(
        app, ["export", "qupath", str(empty), "--out", str(tmp_path / "o"), "--class-names", "x"]
    )
    assert res.exit_code == 1 and "--class-names" in res.output


def _histolib(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m histolib_cli.main ARGS`` in a subprocess, its output captured."""
    cmd = [sys.executable, "-m", "histolib_cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _import_qupath(source: Path, manifest: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``histolib import qupath SOURCE --tiles MANIFEST --out OUT`` in a subprocess."""
    return _histolib("import", "qupath", str(source), "--tiles", str(manifest), "--out", str(out))


def test_subprocess_export_and_import_errors(tmp_path: Path) -> None:
    manifest = write_manifest_for(tmp_path)
    lib = write_library(library_from_manifest(manifest), tmp_path / "lib.parquet", params={})
    done = _histolib("export", "qupath", str(lib), "--out", str(tmp_path / "o"), "--gzip")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "slide1.geojson.gz").is_file()
    bad = tmp_path / "slide1.geojson"
    bad.write_text("<xml/>")
    done = _import_qupath(bad, manifest, tmp_path / "x.parquet")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: XML of an unknown kind (root element <xml>): expected ASAP "
        "(<ASAP_Annotations>) or Aperio ImageScope (<Annotations> with <Region>s)"
    ]
    assert not (tmp_path / "x.parquet").exists()
    done = _import_qupath(tmp_path / "o" / "slide1.geojson.gz", manifest, tmp_path / "back.geojson")
    assert done.returncode == 0, done.stderr
    back, _ = read_library(tmp_path / "back.geojson")
    assert len(back) == 24
