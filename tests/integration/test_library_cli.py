"""``histolib build-library`` through Typer's CliRunner and as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from histolib.library.cellio import read_library
from histolib_cli.main import app
from tests.helpers_library import ihc_tile, random_tile, write_png

runner = CliRunner()


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "tiles", tmp_path / "masks"
    for i in range(2):
        write_png(images / f"a.b.{i}.png", random_tile(i, size=128, n_small=40, n_large=4))
        write_png(masks / f"a.b.{i}.png", np.full((128, 128), 255, np.uint8))
    return images, masks


def test_cli_folder_he_with_params_file(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text("dilation_radius: 12\n")
    out = tmp_path / "lib.geojson"
    result = runner.invoke(
        app,
        [
            "build-library",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--stain",
            "he",
            "--out",
            str(out),
            "--params",
            str(params),
            "--preset",
            "paper",
            "--set",
            "box_size=40",
            "--workers",
            "1",
            "--overlays",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cells" in result.output and "from 2 tiles" in result.output
    gdf, meta = read_library(out)
    lib = meta["params"]["library"]
    assert (lib["graph_distance"], lib["dilation_radius"], lib["box_size"]) == (25, 12, 40)
    assert ((gdf["box_x1"] - gdf["box_x0"]) == 40).all()
    assert (tmp_path / "lib.geojson_tiles.csv").is_file()
    assert len(list((tmp_path / "lib.geojson_overlays").glob("*.png"))) == 1


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    images, _ = _folder(tmp_path)
    out = tmp_path / "lib.parquet"
    cases = [
        (["--images", str(images), "--stain", "he"], "--masks"),
        (["--images", str(tmp_path / "nope"), "--stain", "ihc"], "nope"),
        (["--images", str(images), "--stain", "xyz"], "stain"),
        (["--images", str(images), "--stain", "ihc", "--set", "nonsense=1"], "nonsense"),
        (
            ["--images", str(images), "--stain", "ihc", "--params", str(tmp_path / "q.toml")],
            "q.toml",
        ),
    ]
    for args, needle in cases:
        result = runner.invoke(app, ["build-library", *args, "--out", str(out)])
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
        assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_subprocess_ihc_and_resume(tmp_path: Path) -> None:
    images = tmp_path / "ihc"
    for i in range(2):
        write_png(images / f"t{i}.png", ihc_tile(i, 128))
    out = tmp_path / "ihc.parquet"
    cmd = [
        sys.executable,
        "-m",
        "histolib_cli.main",
        "build-library",
        "--images",
        str(images),
        "--stain",
        "ihc",
        "--out",
        str(out),
        "--workers",
        "2",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    n = len(read_library(out)[0])
    # a second run answers from the per-tile cache and writes the same library
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert len(read_library(out)[0]) == n
    shutil.rmtree(images)  # the inputs are gone: a clear error, not a stale library
    missing = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "error:" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_two_libraries_of_one_stem_built_at_once_keep_their_own_side_files(
    tmp_path: Path,
) -> None:
    """``lib.parquet`` and ``lib.geojson`` take separate locks; their side files are named
    after the whole file name, so two builds at the same time lose nothing of each other."""
    import subprocess
    import sys

    images, masks = _folder(tmp_path)
    outs = [tmp_path / "lib.parquet", tmp_path / "lib.geojson"]
    args = f"build-library --images {images} --masks {masks} --stain he --workers 1 --overlays 2"
    command = [sys.executable, "-m", "histolib_cli.main", *args.split()]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [subprocess.Popen([*command, "--out", str(out)], **pipes) for out in outs]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    for out in outs:
        _gdf, meta = read_library(out)
        assert meta["params"]["n_tiles"] == 2
        counts = (tmp_path / f"{out.name}_tiles.csv").read_text().splitlines()
        assert len(counts) == 3  # a header and the two tiles
        assert len(list((tmp_path / f"{out.name}_overlays").glob("*.png"))) == 2
    assert not (tmp_path / "lib_tiles.csv").exists() and not (tmp_path / "lib_overlays").exists()
