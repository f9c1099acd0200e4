"""No output over an input, for every command that writes (issue 23, item 1): the output is an
input (also through a symbolic or hard link), a folder output holds an input at a path the
command writes, an output lies inside a folder of tiles that is read whole. Each refusal is one
line naming both, exit code 1, and no file changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_qupath import feature, polygon, write_json, write_manifest_for

runner = CliRunner()


def _snapshot(root: Path) -> dict[Path, str]:
    return {
        p: (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def refused(root: Path, *args: object, words: str = "would overwrite the input") -> str:
    """Run the CLI; check the one-line refusal and that nothing under ``root`` changed."""
    before = _snapshot(root)
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert words in lines[0], lines[0]
    assert _snapshot(root) == before
    return lines[0]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    return write_manifest_for(folder)


def test_build_library_over_its_manifest(tmp_path: Path, manifest: Path) -> None:
    line = refused(tmp_path, "build-library", manifest, "--stain", "he", "--out", manifest)
    assert str(manifest) in line
    link = tmp_path / "link.parquet"
    link.symlink_to(manifest)
    refused(tmp_path, "build-library", manifest, "--stain", "he", "--out", link)
    hard = tmp_path / "hard.parquet"
    os.link(manifest, hard)
    refused(tmp_path, "build-library", manifest, "--stain", "he", "--out", hard)
    side = manifest.with_name("lib.parquet_tiles.csv")  # a side file over an input
    side.write_text("x")
    refused(
        tmp_path,
        "build-library",
        manifest,
        "--stain",
        "he",
        "--out",
        manifest.with_name("lib.parquet"),
        "--annotations",
        side,
    )


def test_build_library_output_inside_its_image_folder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "t.png").write_bytes(b"png")
    refused(
        tmp_path,
        "build-library",
        "--images",
        images,
        "--stain",
        "ihc",
        "--out",
        images / "lib.parquet",
        words="lies inside the input folder",
    )


def test_export_qupath_over_its_contours(tmp_path: Path, manifest: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    contours = write_json(
        ann / "slide1.geojson",
        {"type": "FeatureCollection", "features": [feature(polygon(0, 0, 10, 10))]},
    )
    refused(tmp_path, "export", "qupath", manifest, "--annotations", ann, "--out", ann)
    refused(
        tmp_path,
        "export",
        "qupath",
        manifest,
        "--annotations",
        contours,
        "--out",
        ann,
        words="holds the input",
    )
    refused(tmp_path, "export", "qupath", manifest, "--out", manifest)


def test_import_qupath_over_its_inputs(tmp_path: Path, manifest: Path) -> None:
    curated = write_json(tmp_path / "slide1.geojson", {"type": "FeatureCollection", "features": []})
    refused(tmp_path, "import", "qupath", curated, "--tiles", manifest, "--out", curated)
    refused(tmp_path, "import", "qupath", curated, "--tiles", manifest, "--out", manifest)


def test_tile_over_its_slide_or_contours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    slide = out / "masks" / "s1.png"  # tile writes OUT/masks/s1.png
    slide.write_bytes(b"not read")
    refused(tmp_path, "tile", slide, "--slide-mpp", "0.5", "--out", out, words="holds the input")
    contours = tmp_path / "c.geojson"
    contours.write_text("{}")
    refused(tmp_path, "tile", slide, "--annotations", contours, "--out", contours)


def test_train_over_its_config(tmp_path: Path, manifest: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.yaml"
    config.write_text(f"he: {manifest}\nihc: {manifest}\n")
    refused(tmp_path, "train", "--config", config, "--out", run, words="holds the input")
    refused(tmp_path, "train", "--he", manifest, "--ihc", manifest, "--out", manifest)


def test_evaluate_and_experiment_over_their_inputs(tmp_path: Path, manifest: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"x")
    refused(tmp_path, "evaluate", f"m={checkpoint}", "--tiles", manifest, "--out", manifest)
    report = manifest.with_name("report.html")  # evaluate writes OUT/report.html
    report.write_text("<p>kept</p>")
    args = ("evaluate", checkpoint, "--tiles", manifest, "--annotations", report)
    refused(tmp_path, *args, "--out", manifest.parent, words="holds the input")
    masks = tmp_path / "masks"
    masks.mkdir()
    refused(
        tmp_path,
        "evaluate",
        checkpoint,
        "--images",
        masks,
        "--masks",
        masks,
        "--out",
        masks / "eval",
        words="lies inside the input folder",
    )
    grid = tmp_path / "exp" / "summary.json"
    grid.parent.mkdir()
    grid.write_text("grid: {}\n")
    refused(tmp_path, "experiment", grid, "--out", grid.parent, words="holds the input")
    refused(tmp_path, "experiment", grid, "--out", grid)


def test_inputs_elsewhere_in_the_output_folder_are_fine(tmp_path: Path) -> None:
    from histolib.core.overwrite import check_output

    out = tmp_path / "out"
    (out / "slides").mkdir(parents=True)
    slide = out / "slides" / "s.svs"
    slide.write_bytes(b"x")
    check_output(
        out,
        inputs=[slide, None, tmp_path / "missing"],
        folder=True,
        writes=("tiles.parquet", "tiles/*"),
    )
    check_output(tmp_path / "lib.parquet", inputs=[slide], folder=False)


def test_transfer_tiles_over_their_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.helpers_transfer import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    images = tmp_path / "images"
    images.mkdir()
    (images / "t.png").write_bytes(b"png")
    refused(tmp_path, "transfer", checkpoint, "--images", images, "--out", images)
    refused(tmp_path, "transfer", checkpoint, "--images", images, "--out", checkpoint)
