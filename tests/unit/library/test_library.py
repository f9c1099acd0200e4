"""Tests of histolib.library (detect, jobs, build) and histolib.library.params."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from histolib.errors import ConfigError, ImageError, InputError, OutputError
from histolib.library.build import build_library, counts_path, overlays_dir, work_dir
from histolib.library.cellio import LIBRARY_COLUMNS, read_library
from histolib.library.detect import library_rows, rows_to_frame, tile_cells
from histolib.library.params import LibraryParams, load_params_file, resolve_params
from histolib.tileset.images import read_rgb
from tests.helpers_library import (
    cell_boxes,
    draw_tile,
    ihc_tile,
    random_tile,
    reference_boxes,
    write_png,
    write_tumour_geojson,
)

# --------------------------------------------------------------------------- reference


def _roigan(shared_data: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "tiles" / "roigan" / name).convert("RGB"))


@pytest.mark.parametrize("detector", ["fast", "skimage"])
def test_he_reference_tile_box_for_box(shared_data, detector: str) -> None:
    ref = json.loads((shared_data / "reference" / "he_000.json").read_text())
    rgb = _roigan(shared_data, "he_000.png")
    mask = np.asarray(Image.open(shared_data / "tiles" / "roigan" / "he_mask_000.png")) > 0
    cells = tile_cells(
        rgb, stain="he", mask=mask, params=LibraryParams(detector=detector), details=True
    )
    assert cell_boxes(cells) == reference_boxes(ref)
    assert (cells.n_normal, cells.n_cancer) == (54, 8)
    for key, value in ref["pipeline_info"].items():
        assert cells.info[key] == value, key
    centres = sorted(map(tuple, cells.centres[:, ::-1].tolist()))
    for (x0, y0, x1, y1), (cx, cy) in zip(cells.boxes, cells.centres, strict=True):
        assert (x1 - x0, y1 - y0) == (48, 48) and (cx, cy) == (x0 + 24, y0 + 24)
    cands = ref["candidates"]
    assert set(centres) <= set(map(tuple, cands["normal_centres_rc"] + cands["cancer_centres_rc"]))
    excl = np.asarray(Image.open(shared_data / "reference" / "he_000_exclusion.png")) > 0
    full = np.asarray(Image.open(shared_data / "reference" / "he_000_full_mask.png")) > 0
    np.testing.assert_array_equal(cells.masks["exclusion"], excl)
    np.testing.assert_array_equal(cells.masks["full"], full)


@pytest.mark.parametrize("detector", ["fast", "skimage"])
def test_ihc_reference_tile_box_for_box(shared_data, detector: str) -> None:
    ref = json.loads((shared_data / "reference" / "ihc_000.json").read_text())
    rgb = _roigan(shared_data, "ihc_000.png")
    cells = tile_cells(rgb, stain="ihc", params=LibraryParams(detector=detector), details=True)
    assert cell_boxes(cells) == reference_boxes(ref)
    assert (cells.n_normal, cells.n_cancer) == (59, 23)
    for key, value in ref["pipeline_info"].items():
        if isinstance(value, float):
            assert cells.info[key] == pytest.approx(value, abs=1e-12), key
        else:
            assert cells.info[key] == value, key


# --------------------------------------------------------------------------- edge cases


def _full(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def test_blank_tile_gives_no_cells() -> None:
    white = np.full((256, 256, 3), 255, np.uint8)
    for stain, mask in (("he", _full(256)), ("ihc", None)):
        cells = tile_cells(white, stain=stain, mask=mask, details=True)
        assert len(cells) == 0 and cells.boxes.shape == (0, 4)
    pink = draw_tile(256)
    assert len(tile_cells(pink, stain="he", mask=_full(256))) == 0


def test_one_and_two_cells_make_no_cluster() -> None:
    one = draw_tile(128, nuclei=[(64, 64, 3)])
    cells = tile_cells(one, stain="he", mask=_full(128), details=True)
    assert cells.info["n_normal_blobs"] == 1 and cells.info["cluster_sizes"] == []
    assert cells.n_normal == 0
    two = draw_tile(128, nuclei=[(50, 64, 3), (70, 64, 3)])
    cells = tile_cells(two, stain="he", mask=_full(128), details=True)
    assert cells.info["cluster_sizes"] == [2] and cells.n_normal == 0
    assert cells.masks["exclusion"][64, 60]  # the pair's pixels, dilated


def test_three_collinear_cells_are_a_cluster() -> None:
    tile = draw_tile(128, nuclei=[(40, 64, 3), (60, 64, 3), (80, 64, 3)])
    cells = tile_cells(tile, stain="he", mask=_full(128), details=True)
    assert cells.info["cluster_sizes"] == [3]
    assert cells.n_normal == 3
    assert sorted(cells.centres[:, 0].tolist()) == [40, 60, 80]
    assert cells.exclusion.geom_type == "Polygon"
    assert cells.masks["exclusion"][64, 50] and cells.masks["exclusion"][74, 60]


def test_large_tile_and_border_rule() -> None:
    tile = random_tile(3, size=512, n_small=200, n_large=12)
    cells = tile_cells(tile, stain="he", mask=_full(512))
    assert len(cells) > 0
    assert cells.boxes.min() >= 0 and cells.boxes.max() <= 512
    ihc = tile_cells(ihc_tile(2, 512), stain="ihc")
    assert ihc.boxes.min() >= 0 and ihc.boxes.max() <= 512


def _big_nucleus() -> np.ndarray:
    from scipy import ndimage as ndi

    tile = draw_tile(128, nuclei=[(64, 64, 12)]).astype(float)
    return ndi.gaussian_filter(tile, (4, 4, 0)).round().astype(np.uint8)  # no sharp rim


def test_cancer_needs_the_tumour_mask() -> None:
    tile = _big_nucleus()
    inside = tile_cells(tile, stain="he", mask=_full(128))
    assert inside.n_cancer == 1 and inside.passes == ["he_cancer"]
    outside = tile_cells(tile, stain="he", mask=np.zeros((128, 128), bool))
    assert outside.n_cancer == 0


def test_tile_cells_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        tile_cells(draw_tile(64), stain="he")
    with pytest.raises(ImageError):
        tile_cells(draw_tile(64), stain="he", mask=_full(32))
    with pytest.raises(ConfigError):
        tile_cells(draw_tile(64), stain="pas")
    with pytest.raises(ImageError):
        tile_cells(np.zeros((64, 64), np.uint8), stain="ihc")


def test_rows_carry_tile_origin_and_downsample() -> None:
    tile = _big_nucleus()
    cells = tile_cells(tile, stain="he", mask=_full(128))
    place = SimpleNamespace(
        tile_id="s_x100_y200_s128", slide_id="s", x0=100, y0=200, downsample=2.0
    )
    rows = library_rows(cells, place)
    assert rows[0]["x"] == 100 + 64 * 2 and rows[0]["y"] == 200 + 64 * 2
    gdf = rows_to_frame(rows)
    assert list(gdf.columns[:-1]) == list(LIBRARY_COLUMNS)
    assert gdf.geometry.iloc[0].bounds == (100 + 40 * 2, 200 + 40 * 2, 100 + 88 * 2, 200 + 88 * 2)
    assert len(rows_to_frame([])) == 0


# --------------------------------------------------------------------------- parameters


def test_presets_and_overrides(tmp_path: Path) -> None:
    assert resolve_params().graph_distance == 35
    assert resolve_params(preset="paper").graph_distance == 25
    toml = tmp_path / "p.toml"
    toml.write_text("graph_distance = 30\n[he_cancer]\nthreshold = 0.02\n")
    p = resolve_params(file=toml, overrides={"box-size": "64"})
    assert (p.graph_distance, p.he_cancer_threshold, p.box_size) == (30, 0.02, 64)
    yaml = tmp_path / "p.yaml"
    yaml.write_text("dab_threshold: null\ndilation_radius: 12\n")
    assert resolve_params(file=yaml).dilation_radius == 12
    assert load_params_file(yaml)["dab_threshold"] is None
    with pytest.raises(ConfigError, match="unknown parameter"):
        resolve_params(overrides={"graph_dist": 3})
    with pytest.raises(ConfigError, match="must be a number"):
        resolve_params(overrides={"box_size": "big"})
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_params(preset="mine")
    bad = tmp_path / "bad.toml"
    bad.write_text("graph_distance = = 3")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        resolve_params(file=bad)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary\.yaml: parameter file is not UTF-8 text"):
        resolve_params(file=binary)
    with pytest.raises(ConfigError):
        LibraryParams(he_normal_min_sigma=3, he_normal_max_sigma=2)


def test_params_scale_with_tile_mpp() -> None:
    p = LibraryParams()
    assert p.for_tile_mpp(0.5) is p and p.for_tile_mpp(None) is p
    q = p.for_tile_mpp(0.25)
    assert (q.graph_distance, q.dilation_radius, q.box_size, q.he_cancer_max_sigma) == (
        70,
        20,
        96,
        24,
    )
    assert q.he_cancer_threshold == p.he_cancer_threshold and q.mpp == 0.25
    assert p.digest() != q.digest() and p.digest() == LibraryParams().digest()


# --------------------------------------------------------------------------- build_library


def _he_folder(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    images, masks = tmp_path / "tiles", tmp_path / "masks"
    for i in range(n):
        name = f"case.{i}.tile"  # dots in the name
        write_png(images / f"{name}.png", random_tile(i, size=128, n_small=40, n_large=4))
        mask = np.zeros((128, 128), np.uint8)
        mask[:, : 64 + 10 * i] = 255
        write_png(masks / f"{name}.png", mask)
    return images, masks


def test_build_from_folder_and_resume(tmp_path: Path, monkeypatch) -> None:
    images, masks = _he_folder(tmp_path)
    out = tmp_path / "lib" / "cells.parquet"
    build_library(
        images=images, masks=masks, stain="he", out=out, workers=1, overlays=2, progress=False
    )
    gdf, meta = read_library(out)
    assert set(gdf["tile_id"]) <= {"case.0.tile", "case.1.tile", "case.2.tile"}
    assert meta["params"]["library"]["graph_distance"] == 35
    assert meta["params"]["n_tiles"] == 3
    assert len(gdf) == meta["params"]["n_cancer"] + meta["params"]["n_normal"] > 0
    counts = counts_path(out).read_text().splitlines()
    assert counts[0].startswith("tile_id,slide_id,n_cancer,n_normal") and len(counts) == 4
    assert len(list(overlays_dir(out).glob("*.png"))) == 2
    assert len(list(work_dir(out).glob("*.json"))) == 3

    import histolib.library.build as library

    def boom(job):
        raise AssertionError(f"re-ran {job.tile_id}")

    monkeypatch.setattr(library, "run_tile_job", boom)
    geo = tmp_path / "lib" / "cells.parquet"
    build_library(images=images, masks=masks, stain="he", out=geo, workers=1, progress=False)
    again, _ = read_library(geo)
    assert len(again) == len(gdf)
    # other parameters: the cache does not match, the tiles are processed again
    with pytest.raises(AssertionError, match="re-ran"):
        build_library(
            images=images,
            masks=masks,
            stain="he",
            out=geo,
            workers=1,
            progress=False,
            params=resolve_params(preset="paper"),
        )


def test_build_geojson_ihc_two_workers(tmp_path: Path) -> None:
    images = tmp_path / "ihc"
    for i in range(2):
        write_png(images / f"t{i}.png", ihc_tile(i, 128))
    out = tmp_path / "ihc.geojson"
    build_library(images=images, stain="ihc", out=out, workers=2, progress=False)
    gdf, _ = read_library(out)
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and doc["histolib"]["params"]["stain"] == "ihc"
    assert set(gdf["pass"]) <= {"ihc_normal", "ihc_cancer"}


def test_build_errors_name_the_file(tmp_path: Path) -> None:
    images, masks = _he_folder(tmp_path, n=1)
    out = tmp_path / "o.parquet"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image tiles"):
        build_library(images=empty, stain="ihc", out=out, progress=False)
    with pytest.raises(InputError, match="--masks"):
        build_library(images=images, stain="he", out=out, progress=False)
    write_png(images / "extra.png", draw_tile(128))
    with pytest.raises(InputError, match=r"have no mask .*\(first: extra\.png\)"):
        build_library(images=images, masks=masks, stain="he", out=out, progress=False)
    write_png(masks / "extra.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageError, match="mask is 64x64"):
        build_library(images=images, masks=masks, stain="he", out=out, workers=1, progress=False)
    gray = tmp_path / "gray"
    write_png(gray / "g.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageError, match=r"g\.png.*channel"):
        build_library(images=gray, stain="ihc", out=out, workers=1, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"b\.png: cannot read"):
        build_library(images=broken, stain="ihc", out=out, workers=1, progress=False)
    with pytest.raises(OutputError, match=r"parquet or \.geojson"):
        build_library(images=broken, stain="ihc", out=tmp_path / "x.csv", progress=False)
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        build_library(images=images, masks=masks, stain="he", out=out, workers=0)
    assert not out.exists()


def _manifest(
    tmp_path: Path,
    *,
    annotations: Path | None,
    params: dict | None = None,
    slides: tuple[str, ...] = ("slide.a",),
) -> Path:
    import geopandas as gpd
    import shapely

    from histolib.tileset.manifest import tile_id, write_manifest

    root = tmp_path / "tiles"
    rows = []
    for s, slide in enumerate(slides):
        for i, (x0, y0) in enumerate([(0, 0), (256, 0)]):
            tid = tile_id(slide, x0, y0, 128)
            rel = f"{slide}/{tid}.png"
            write_png(root / rel, random_tile(10 + i + 7 * s, size=128, n_small=40, n_large=4))
            rows.append(
                dict(
                    tile_id=tid,
                    slide_id=slide,
                    slide_path=f"{slide}.svs",
                    x0=x0,
                    y0=y0,
                    size_px=128,
                    mpp=0.5,
                    downsample=2.0,
                    stain="he",
                    label="positive",
                    tissue_fraction=1.0,
                    annotation_fraction=0.5,
                    path=rel,
                )
            )
    gdf = gpd.GeoDataFrame(
        rows, geometry=[shapely.box(r["x0"], r["y0"], r["x0"] + 256, r["y0"] + 256) for r in rows]
    )
    if params is None:
        params = {} if annotations is None else {"annotations": str(annotations)}
    return write_manifest(gdf, root / "tiles.parquet", params=params)


def _recorded_labels(folder: Path, annotation: Path, classes: list[str]) -> Any:
    """The labels of a library built on a manifest that records, as ``histolib tile`` does,
    the annotation file of its slide and the positive classes."""
    recorded = {"slides": {"slide.a": {"annotation_path": str(annotation)}}}
    manifest = _manifest(folder, annotations=None, params={**recorded, "positive_classes": classes})
    out = folder / "library.parquet"
    build_library(manifest=manifest, stain="he", out=out, workers=1, progress=False)
    return read_library(out)[0]["label"]


def test_build_from_manifest_rasterises_contours(tmp_path: Path) -> None:
    ann = write_tumour_geojson(
        tmp_path / "slide.a.geojson", [[(0, 0), (128, 0), (128, 512), (0, 512)]]
    )
    manifest = _manifest(tmp_path, annotations=ann)
    out = tmp_path / "lib.parquet"
    build_library(manifest=manifest, stain="he", out=out, workers=1, progress=False)
    gdf, _ = read_library(out)
    cancer = gdf[gdf["label"] == "cancer"]
    # the contour covers x < 128 (level 0) = tile px x < 64 of the first tile only
    assert set(cancer["tile_id"]) <= {"slide.a_x0_y0_s128"}
    assert (cancer["tile_x"] < 64).all()
    assert (gdf["downsample"] == 2.0).all()
    row = gdf.iloc[0]
    assert row["x"] == row["tile_x0"] + row["tile_x"] * 2
    # without annotations in the manifest, an explicit --annotations works, none is an error
    bare = _manifest(tmp_path / "b", annotations=None)
    with pytest.raises(InputError, match="annotations"):
        build_library(manifest=bare, stain="he", out=tmp_path / "b.parquet", progress=False)
    build_library(
        manifest=bare,
        stain="he",
        out=tmp_path / "b.parquet",
        workers=1,
        annotations=tmp_path,
        progress=False,
    )
    again, _ = read_library(tmp_path / "b.parquet")
    assert len(again[again["label"] == "cancer"]) == len(cancer)
    # the form `histolib tile` records: one annotation file per slide, positive classes
    assert (_recorded_labels(tmp_path / "r", ann, ["Tumor"]) == "cancer").sum() == len(cancer)
    assert (_recorded_labels(tmp_path / "o", ann, ["Stroma"]) == "normal").all()
    with pytest.raises(InputError, match="no ihc tiles"):
        build_library(manifest=bare, stain="ihc", out=tmp_path / "c.parquet", progress=False)


def test_transparent_pixels_read_as_white_not_black(tmp_path: Path) -> None:
    """QuPath and other exporters write RGBA PNGs: their transparent areas are background."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (120, 60, 140, 255)  # left half opaque tissue colour, right half transparent
    Image.fromarray(rgba).save(tmp_path / "t.png")
    rgb = read_rgb(tmp_path / "t.png")
    assert (rgb[:, :32] == (120, 60, 140)).all() and (rgb[:, 32:] == 255).all()


def _cancer_tiles(out: Path) -> dict[str, int]:
    gdf, _ = read_library(out)
    cancer = gdf[gdf["label"] == "cancer"]
    return cancer.groupby("tile_id").size().to_dict()


def test_an_edited_contour_file_gives_the_new_region(tmp_path: Path) -> None:
    """A notebook that edits a slide's contours and builds again gets the new region."""
    import os

    ann = write_tumour_geojson(
        tmp_path / "slide.a.geojson", [[(0, 0), (256, 0), (256, 512), (0, 512)]]
    )
    manifest = _manifest(tmp_path, annotations=ann)
    for tile in (manifest.parent / "slide.a").glob("*.png"):
        write_png(tile, _big_nucleus())  # one cancer nucleus a tile where the tumour is
    out = tmp_path / "lib.parquet"
    build_library(manifest=manifest, stain="he", out=out, workers=1, progress=False)
    first = _cancer_tiles(out)
    assert set(first) == {"slide.a_x0_y0_s128"}  # the contour covers the first tile only
    stamp = ann.stat().st_mtime_ns + 2_000_000_000
    write_tumour_geojson(ann, [[(256, 0), (512, 0), (512, 512), (256, 512)]])
    os.utime(ann, ns=(stamp, stamp))
    build_library(manifest=manifest, stain="he", out=out, workers=1, progress=False)
    second = _cancer_tiles(out)
    assert set(second) == {"slide.a_x256_y0_s128"}  # now the second tile only


def test_tiles_of_a_slide_without_contours_are_skipped_and_counted(tmp_path: Path) -> None:
    from histolib.tileset.contours import MissingContoursWarning

    folder = tmp_path / "contours"
    folder.mkdir()
    write_tumour_geojson(folder / "slide.a.geojson", [[(0, 0), (128, 0), (128, 512), (0, 512)]])
    manifest = _manifest(tmp_path, annotations=folder, slides=("slide.a", "slide.b"))
    out = tmp_path / "lib.parquet"
    with pytest.warns(MissingContoursWarning, match=r"skipped 2 H&E tile\(s\) of 1 slide\(s\)"):
        build_library(manifest=manifest, stain="he", out=out, workers=1, progress=False)
    gdf, meta = read_library(out)
    assert meta["params"]["n_tiles"] == 2
    assert meta["params"]["skipped_tiles"] == {"slide.b": 2}
    assert set(gdf["slide_id"]) == {"slide.a"}
    counts = counts_path(out).read_text()
    assert "slide.b" not in counts
    # no slide has contours: the error evaluate gives too
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(InputError, match="none of the selected tiles' slides has an annotation"):
        build_library(
            manifest=manifest, stain="he", out=out, annotations=empty, workers=1, progress=False
        )


def test_a_folder_evaluate_accepts_builds_a_library_too(tmp_path: Path) -> None:
    """One folder rule: jpg tiles in sub-folders, masks named <stem>_mask.png."""
    pytest.importorskip("skimage")
    from histolib_train.evaluation.tiles import load_folder_tiles

    images, masks = tmp_path / "tiles", tmp_path / "masks"
    for i, sub in enumerate(["a", "b/c"]):
        rgb = random_tile(i, size=128, n_small=40, n_large=4)
        (images / sub).mkdir(parents=True)
        Image.fromarray(rgb).save(images / sub / f"t{i}.jpg", quality=95)
        mask = np.zeros((128, 128), np.uint8)
        mask[:, :64] = 255
        write_png(masks / f"t{i}_mask.png", mask)
    evaluated = load_folder_tiles(images, masks, n_tiles=None)
    out = tmp_path / "lib.parquet"
    build_library(images=images, masks=masks, stain="he", out=out, workers=1, progress=False)
    _, meta = read_library(out)
    assert [t.tile_id for t in evaluated] == ["t0", "t1"] and meta["params"]["n_tiles"] == 2
    counts = counts_path(out).read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in counts] == ["t0", "t1"]
    # a tile without a mask: both refuse, with the same message
    write_png(images / "t2.png", random_tile(2, size=128))
    with pytest.raises(InputError) as by_evaluate:
        load_folder_tiles(images, masks, n_tiles=None)
    with pytest.raises(InputError) as by_library:
        build_library(images=images, masks=masks, stain="he", out=out, progress=False)
    assert str(by_evaluate.value) == str(by_library.value)
    assert "1 tile(s) have no mask" in str(by_library.value) and "t2.png" in str(by_library.value)
