"""Nothing is written outside the output: every command against tables, annotation files,
grids and names crafted to escape it (slide ids ``/abs/ESCAPED``, ``../../ESCAPED``, ``..``,
class names with ``/``). Each command either refuses the input with one line or writes only
under its output; no file named after the crafted names appears anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_qupath import feature, polygon, write_json

runner = CliRunner()


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Any]:
    """``tmp_path/a/b`` is where a command runs; crafted names aim at ``tmp_path``, at
    ``tmp_path/ABS_ESCAPED`` (an absolute path) and at ``/abs/ESCAPED``."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    absolute = str(tmp_path / "ABS_ESCAPED")
    return {
        "root": tmp_path,
        "work": work,
        "ids": [absolute, "/abs/ESCAPED", "../../ESCAPED", "..", "."],
        "classes": ["a/../../ESCAPED_CLASS", "/abs/ESCAPED_CLASS", "..", "x\\y"],
    }


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _within(path: Path, outs: list[Path]) -> bool:
    return any(path == out or out in path.parents for out in outs)


def run(sandbox: dict[str, Any], outs: list[Path], *args: object) -> Any:
    """Invoke the CLI; check that every new path lies under one of ``outs``."""
    before = _tree(sandbox["root"])
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    new = _tree(sandbox["root"]) - before
    stray = sorted(p for p in new if not _within(p, outs))
    assert not stray, (args, stray)
    root = sandbox["root"]
    escaped = [p for folder in (root, root / "a") for p in folder.glob("*ESCAPED*")]
    assert not escaped, escaped
    assert not Path("/abs").exists()
    return result


def refused(result: Any, *words: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and lines and lines[-1].startswith("error: "), result.output
    assert all(word in result.output for word in words), result.output


# ------------------------------------------------------------------ crafted inputs


def _retarget(manifest: Path, library: Path | None, slide_id: str) -> None:
    """Rewrite a tile manifest (and its library) so that every row names ``slide_id``."""
    from histolib.library.cellio import read_library, write_library
    from histolib.tileset.manifest import read_manifest, tile_id, write_manifest

    gdf, meta = read_manifest(manifest)
    ids = {
        old: tile_id(slide_id, x, y, s)
        for old, x, y, s in zip(gdf["tile_id"], gdf["x0"], gdf["y0"], gdf["size_px"], strict=True)
    }
    gdf["tile_id"] = gdf["tile_id"].map(ids)
    gdf["slide_id"] = slide_id
    write_manifest(gdf, manifest, params=meta.get("params", {}))
    if library is not None:
        cells, lmeta = read_library(library)
        cells["tile_id"] = cells["tile_id"].map(ids)
        cells["slide_id"] = slide_id
        write_library(cells, library, params=lmeta.get("params", {}))


def _tiny(sandbox: dict[str, Any], name: str, slide_id: str) -> Any:
    from tests.helpers_train import make_tiny_pair

    he, ihc = make_tiny_pair(sandbox["work"] / name)
    for domain in (he, ihc):
        _retarget(domain.manifest, domain.library, slide_id)
    return he, ihc


def _crafted_ids(sandbox: dict[str, Any]) -> Iterator[tuple[int, str]]:
    yield from enumerate(sandbox["ids"])


# ------------------------------------------------------------------ the commands


def test_tile(sandbox: dict[str, Any]) -> None:
    from shapely.geometry import box

    from tests.helpers_tile import disc_slide, write_contours

    work = sandbox["work"]
    slide = disc_slide(work / "disc.tif", width=512, height=512)
    for name in ("..tif", "...tif"):  # slide ids "." and ".."
        odd = work / name
        odd.write_bytes(slide.read_bytes())
        refused(run(sandbox, [work / "o"], "tile", odd, "--out", work / "o"), "slide id")
    contours = work / "ann"
    contours.mkdir()
    for i, cls in enumerate(sandbox["classes"]):
        write_contours(contours / f"c{i}.geojson", [box(0, 0, 256, 256)], class_name=cls)
    write_contours(contours / "disc.geojson", [box(0, 0, 256, 256)], class_name="a/../../ESCAPED")
    result = run(
        sandbox,
        [work / "o"],
        "tile",
        slide,
        "--out",
        work / "o",
        "--annotations",
        contours,
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def tiles(sandbox: dict[str, Any]) -> Path:
    """A real two-tile manifest (IHC, images on disk) of one slide."""
    from histolib.tiling import TilingOptions, tile_slides
    from tests.helpers_tile import disc_slide

    slide = disc_slide(sandbox["work"] / "t.tif", width=512, height=512)
    return tile_slides(
        slide,
        out=sandbox["work"] / "tiles",
        options=TilingOptions(stain="ihc", max_tiles=2),
        workers=1,
        progress=False,
    )


def test_build_library_and_export(sandbox: dict[str, Any], tiles: Path) -> None:
    from histolib.library.cellio import write_library
    from tests.helpers_qupath import library_from_manifest

    work = sandbox["work"]
    for i, slide_id in _crafted_ids(sandbox):
        manifest = work / f"m{i}" / "tiles.parquet"
        manifest.parent.mkdir()
        for item in tiles.parent.iterdir():  # the images beside the manifest
            if item.name != "tiles.parquet":
                (manifest.parent / item.name).symlink_to(item)
        manifest.write_bytes(tiles.read_bytes())
        _retarget(manifest, None, slide_id)
        library = work / f"lib{i}.geojson"
        result = run(
            sandbox,
            [
                library,
                work / f".lib{i}.geojson.lock",
                work / f".lib{i}.geojson.work",
                work / f"lib{i}.geojson_tiles.csv",
                work / f"lib{i}.geojson_overlays",
            ],
            "build-library",
            manifest,
            "--stain",
            "ihc",
            "--out",
            library,
            "--overlays",
            "2",
            "--workers",
            "1",
        )
        assert result.exit_code == 0, result.output
        cells = write_library(
            library_from_manifest(manifest), work / f"cells{i}.parquet", params={}
        )
        for source in (manifest, cells):
            refused(
                run(sandbox, [work / "q"], "export", "qupath", source, "--out", work / "q"),
                "slide id",
            )
        assert not (work / "q").exists()


def test_import_qupath_and_split(sandbox: dict[str, Any], tiles: Path) -> None:
    from histolib.tileset.manifest import read_manifest

    work = sandbox["work"]
    manifest = tiles
    _retarget(manifest, None, sandbox["ids"][0])
    gdf, _ = read_manifest(manifest)
    x0, y0 = float(gdf["x0"].iloc[0]), float(gdf["y0"].iloc[0])
    features = [
        feature(
            polygon(x0 + 10, y0 + 10, x0 + 40, y0 + 40),
            objectType="detection",
            classification={"name": cls, "color": [1, 2, 3]},
        )
        for cls in sandbox["classes"]
    ]
    export = write_json(
        work / "export.geojson", {"type": "FeatureCollection", "features": features}
    )
    out = work / "curated.parquet"
    result = run(
        sandbox,
        [out, work / ".curated.parquet.lock"],
        "import",
        "qupath",
        export,
        "--tiles",
        manifest,
        "--out",
        out,
        "--class-names",
        f"cancer={sandbox['classes'][0]}",
    )
    assert result.exit_code == 0, result.output
    result = run(
        sandbox,
        [manifest, *manifest.parent.glob(".*")],
        "split",
        manifest,
        "--by",
        "tile",
        "--test-fraction",
        "0.5",
    )
    assert result.exit_code == 0, result.output


def test_info(sandbox: dict[str, Any]) -> None:
    from tests.helpers_tile import disc_slide

    work = sandbox["work"]
    slide = disc_slide(work / "s.tif", width=512, height=512)
    features = [
        feature(
            polygon(0, 0, 100, 100),
            objectType="annotation",
            classification={"name": cls, "color": [1, 2, 3]},
        )
        for cls in sandbox["classes"]
    ]
    contours = write_json(work / "c.json", features)
    result = run(sandbox, [], "info", slide, "--annotations", contours, "--json")
    assert result.exit_code == 0, result.output


def test_synth(sandbox: dict[str, Any]) -> None:
    work = sandbox["work"]
    for name in [*sandbox["ids"], "a/b"]:
        result = run(
            sandbox,
            [work / "s"],
            "synth",
            work / "s",
            "--name",
            name,
            "--width",
            "512",
            "--height",
            "512",
            "--workers",
            "1",
        )
        refused(result, "name")
    assert not (work / "s").exists()


def test_train_transfer_evaluate(sandbox: dict[str, Any]) -> None:
    pytest.importorskip("torch")
    from tests.helpers_transfer import tiny_checkpoint

    work = sandbox["work"]
    he, ihc = _tiny(sandbox, "tiny", sandbox["ids"][1])
    run_dir = work / "run"
    result = run(
        sandbox,
        [run_dir],
        "train",
        "--he",
        he.manifest,
        "--ihc",
        ihc.manifest,
        "--he-library",
        he.library,
        "--ihc-library",
        ihc.library,
        "--out",
        run_dir,
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--batch-size",
        "2",
        "--n-blocks",
        "1",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--boxes-per-tile",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--sample-every",
        "1",
    )
    assert result.exit_code == 0, result.output
    checkpoint = tiny_checkpoint(work / "tiny.pt")
    folder, elsewhere = work / "imgs", work / "elsewhere"
    tile = next(he.folder.rglob("*.png")).read_bytes()
    for path in (folder / "t.png", folder / "sub" / "x..png", elsewhere / "y.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tile)
    (folder / "link").symlink_to(Path("..") / "elsewhere")  # a folder outside, linked in
    result = run(
        sandbox,
        [work / "restained"],
        "transfer",
        checkpoint,
        "--images",
        folder,
        "--out",
        work / "restained",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    written = sorted(
        str(p.relative_to(work / "restained")) for p in (work / "restained").rglob("*.png")
    )
    assert written == ["sub/x..png", "t.png"]  # the linked folder is not walked
    contours = work / "contours"
    contours.mkdir()
    result = run(
        sandbox,
        [work / "eval"],
        "evaluate",
        checkpoint,
        "--tiles",
        he.manifest,
        "--annotations",
        contours,
        "--out",
        work / "eval",
        "--n-tiles",
        "2",
        "--device",
        "cpu",
    )
    refused(result, "slide id")


def test_experiment(sandbox: dict[str, Any]) -> None:
    pytest.importorskip("torch")
    work = sandbox["work"]
    he, ihc = _tiny(sandbox, "tiny", sandbox["ids"][2])
    grid = {
        "he": str(he.manifest),
        "ihc": str(ihc.manifest),
        "he_library": str(he.library),
        "ihc_library": str(ihc.library),
        "epochs": 1,
        "steps_per_epoch": 1,
        "evaluation": {"images": str(he.folder), "masks": str(he.folder)},
        "grid": {"models": {"..": {"model": "roi"}}},
    }
    path = work / "grid.yaml"
    path.write_text(json.dumps(grid))
    refused(run(sandbox, [work / "exp"], "experiment", path, "--out", work / "exp"), "run name")
    grid["grid"] = {"models": {"roi": {}}, "axes": {"n_blocks": [1]}}
    path.write_text(json.dumps(grid))
    result = run(sandbox, [work / "exp"], "experiment", path, "--out", work / "exp", "--dry-run")
    assert result.exit_code == 0, result.output
