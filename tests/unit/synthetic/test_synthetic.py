"""Tests of histolib.synthetic: layout, rendering, slide files and ground truth."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely

from histolib.errors import ConfigError, OutputError
from histolib.synthetic.layout import Layout, make_layout
from histolib.synthetic.nuclei import KIND_CANCER
from histolib.synthetic.render import render_region, tissue_mask, tumour_mask
from histolib.synthetic.slides import make_slide, read_cells_csv
from tests.helpers_synth import (
    authors_stain_image,
    log_blobs,
    matched_fraction,
    read_tumour_polygons,
    small_slide,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    he = small_slide(out, stain="he", seed=5, name="pair_he")
    ihc = small_slide(out, stain="ihc", seed=5, name="pair_ihc")
    return he, ihc


@pytest.fixture(scope="module")
def layout() -> Layout:
    return make_layout(2048, 2048, mpp=0.5, seed=11)


def _tumour_box(layout: Layout, size: int) -> tuple[int, int]:
    """Origin of a size x size box centred on the first tumour."""
    c = layout.tumours[0].centroid
    return int(c.x) - size // 2, int(c.y) - size // 2


# --- slide files ------------------------------------------------------------------------------


def test_openslide_reads_levels_and_mpp(pair) -> None:
    import openslide

    he, _ = pair
    with openslide.OpenSlide(str(he.slide_path)) as slide:
        assert slide.dimensions == (1536, 1280)
        assert slide.level_count >= 3
        assert slide.level_dimensions[1] == (768, 640)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, abs=1e-3)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5, abs=1e-3)
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        region = np.asarray(slide.read_region((0, 0), 0, (64, 64)).convert("RGB"))
    assert (region > 240).all(), "the slide corner is white background"


@pytest.mark.parametrize("mpp", [0.25, 1.0])
def test_mpp_is_written(tmp_path: Path, mpp: float) -> None:
    import openslide

    s = small_slide(tmp_path, mpp=mpp, width=512, height=512)
    with openslide.OpenSlide(str(s.slide_path)) as slide:
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(mpp, abs=1e-3)
    assert s.mpp == mpp


def test_slide_pixels_match_render_region(pair) -> None:
    import openslide

    he, _ = pair
    lay = make_layout(he.width, he.height, mpp=he.mpp, seed=he.seed)
    x0, y0 = _tumour_box(lay, 256)
    with openslide.OpenSlide(str(he.slide_path)) as slide:
        got = np.asarray(slide.read_region((x0, y0), 0, (256, 256)).convert("RGB"), np.float32)
    want = render_region(lay, x0, y0, 256, 256, stain="he").astype(np.float32)
    assert np.abs(got - want).mean() < 4.0  # JPEG Q 90


def test_no_temporary_files_left(pair) -> None:
    he, _ = pair
    assert not [p for p in os.listdir(he.slide_path.parent) if p.startswith(".tmp-")]


# --- ground truth -----------------------------------------------------------------------------


def test_geojson_is_qupath_tumour_annotations(pair) -> None:
    he, _ = pair
    data = json.loads(he.annotations_path.read_text())
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == he.n_tumours >= 1
    for feat in data["features"]:
        props = feat["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Tumor"
        assert len(props["classification"]["color"]) == 3
        ring = feat["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
    for poly in read_tumour_polygons(he.annotations_path):
        assert poly.is_valid and poly.area > 0
        minx, miny, maxx, maxy = poly.bounds
        assert minx >= 0 and miny >= 0 and maxx <= he.width and maxy <= he.height


def test_cells_csv_consistent_with_contours(pair) -> None:
    he, _ = pair
    with open(he.cells_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["x", "y", "label", "radius"]
    assert len(rows) == he.n_cells
    cells = read_cells_csv(he.cells_path)
    assert set(cells["label"]) == {"cancer", "normal"}
    cancer = cells["label"] == "cancer"
    assert cancer.sum() == he.n_cancer > 10
    region = shapely.union_all(read_tumour_polygons(he.annotations_path))
    inside = shapely.contains_xy(region, cells["x"], cells["y"])
    assert inside[cancer].all()
    assert inside[~cancer].mean() < 0.25
    assert ((cells["x"] > 0) & (cells["x"] < he.width)).all()
    assert ((cells["y"] > 0) & (cells["y"] < he.height)).all()
    radius_um = cells["radius"] * he.mpp
    assert 5.5 < np.median(radius_um[cancer]) < 8.0
    assert 2.0 < np.median(radius_um[~cancer]) < 4.0


def test_same_seed_same_layout_in_both_stains(pair) -> None:
    he, ihc = pair
    assert he.cells_path.read_text() == ihc.cells_path.read_text()
    a = read_tumour_polygons(he.annotations_path)
    b = read_tumour_polygons(ihc.annotations_path)
    assert len(a) == len(b)
    assert all(p.equals(q) for p, q in zip(a, b, strict=True))


def test_layout_scales_with_mpp() -> None:
    fine = make_layout(1024, 1024, mpp=0.25, seed=3)
    coarse = make_layout(1024, 1024, mpp=0.5, seed=3)
    r_fine = np.median(fine.radius[fine.kind == KIND_CANCER]) * 0.25
    r_coarse = np.median(coarse.radius[coarse.kind == KIND_CANCER]) * 0.5
    assert r_fine == pytest.approx(r_coarse, rel=0.15)


def test_reuse_and_force(tmp_path: Path) -> None:
    first = small_slide(tmp_path, width=512, height=512)
    mtime = first.slide_path.stat().st_mtime_ns
    again = small_slide(tmp_path, width=512, height=512)
    assert again.reused and again.slide_path.stat().st_mtime_ns == mtime
    assert (again.n_cells, again.n_cancer, again.n_tumours) == (
        first.n_cells,
        first.n_cancer,
        first.n_tumours,
    )
    other = small_slide(tmp_path, width=512, height=512, seed=2, name=first.name)
    assert not other.reused
    forced = small_slide(tmp_path, width=512, height=512, seed=2, name=first.name, force=True)
    assert not forced.reused


# --- layout and rendering -----------------------------------------------------------------------


def test_layout_is_deterministic(layout: Layout) -> None:
    again = make_layout(2048, 2048, mpp=0.5, seed=11)
    for attr in ("x", "y", "kind", "radius", "sprite", "transform", "shade"):
        np.testing.assert_array_equal(getattr(layout, attr), getattr(again, attr))
    assert all(p.equals(q) for p, q in zip(layout.tumours, again.tumours, strict=True))
    other = make_layout(2048, 2048, mpp=0.5, seed=12)
    assert layout.n_cells != other.n_cells or not np.array_equal(layout.x, other.x)


def test_n_tumours_option() -> None:
    lay = make_layout(3072, 3072, seed=4, n_tumours=2)
    assert len(lay.tumours) == 2
    none = make_layout(1024, 1024, seed=4, n_tumours=0)
    assert len(none.tumours) == 0 and not none.is_cancer.any()
    assert none.n_cells > 0


def test_render_is_deterministic_and_seamless(layout: Layout) -> None:
    x0, y0 = _tumour_box(layout, 300)
    big = render_region(layout, x0, y0, 300, 300, stain="he")
    assert big.shape == (300, 300, 3) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, render_region(layout, x0, y0, 300, 300, stain="he"))
    part = render_region(layout, x0 + 97, y0 + 131, 120, 90, stain="he")
    diff = np.abs(part.astype(int) - big[131:221, 97:217])
    assert diff.max() <= 1 and diff.mean() < 0.05  # float rounding only


def test_render_outside_tissue_is_white(layout: Layout) -> None:
    rgb = render_region(layout, -500, -500, 200, 200, stain="ihc")
    assert (rgb == 255).all()


def test_he_colours(layout: Layout) -> None:
    x0, y0 = _tumour_box(layout, 512)
    rgb = render_region(layout, x0, y0, 512, 512, stain="he").astype(float)
    tissue = tissue_mask(layout, x0, y0, 512, 512)
    stroma = rgb[tissue].mean(axis=0)
    assert stroma[0] > stroma[1] and stroma[2] > stroma[1], "eosin is pink"
    idx = layout.cells_in(x0 + 8, y0 + 8, 496, 496)
    idx = idx[layout.kind[idx] != KIND_CANCER]
    nuclei = rgb[(layout.y[idx] - y0).astype(int), (layout.x[idx] - x0).astype(int)].mean(axis=0)
    assert nuclei.sum() < 0.7 * stroma.sum(), "nuclei are dark"
    assert nuclei[2] > nuclei[0] and nuclei[2] > nuclei[1], "hematoxylin is blue-purple"


def test_tumour_mask_uses_pixel_centres(layout: Layout) -> None:
    minx, miny, _, _ = layout.tumours[0].bounds
    x0, y0 = int(minx) - 50, int(miny) - 40  # a box across the contour
    mask = tumour_mask(layout, x0, y0, 200, 150)
    assert mask.shape == (150, 200)
    rows, cols = np.mgrid[0:150, 0:200]
    want = shapely.contains_xy(layout.tumour_region, x0 + cols + 0.5, y0 + rows + 0.5)
    np.testing.assert_array_equal(mask, want)
    assert 0 < mask.mean() < 1


def test_dab_concentrated_in_tumour(layout: Layout) -> None:
    from skimage.color import rgb2hed

    x0, y0 = _tumour_box(layout, 512)
    truth = tumour_mask(layout, x0, y0, 512, 512)
    tissue = tissue_mask(layout, x0, y0, 512, 512)
    dab_ihc = rgb2hed(render_region(layout, x0, y0, 512, 512, stain="ihc"))[..., 2]
    dab_he = rgb2hed(render_region(layout, x0, y0, 512, 512, stain="he"))[..., 2]
    inside, outside = dab_ihc[truth].mean(), dab_ihc[tissue & ~truth].mean()
    assert inside > 3 * outside
    assert inside > 3 * dab_he[truth].mean()


def test_dab_surrounds_cancer_nuclei(layout: Layout) -> None:
    x0, y0 = _tumour_box(layout, 512)
    rgb = render_region(layout, x0, y0, 512, 512, stain="ihc")
    dab = authors_stain_image(rgb, "d")  # dark = much DAB
    idx = layout.cells_in(x0 + 40, y0 + 40, 432, 432)
    idx = idx[layout.kind[idx] == KIND_CANCER]
    assert len(idx) > 5
    rows, cols = (layout.y[idx] - y0).astype(int), (layout.x[idx] - x0).astype(int)
    ring = (layout.radius[idx] * 1.35).astype(int)
    centre = dab[rows, cols]
    around = np.array([dab[r, c + d] for r, c, d in zip(rows, cols, ring, strict=True)])
    assert np.median(centre) > np.median(around) + 0.15, "nucleus DAB-free, cytoplasm brown"


def test_sizes_fit_authors_detector(layout: Layout) -> None:
    """Normal nuclei at LoG sigma 1..2, cancer nuclei at 10..12 (H&E) and 7..10 (IHC)."""
    x0, y0 = _tumour_box(layout, 512)
    idx = layout.cells_in(x0 + 30, y0 + 30, 452, 452)
    xy = np.column_stack([layout.x[idx] - x0, layout.y[idx] - y0])
    cancer = layout.kind[idx] == KIND_CANCER
    assert cancer.sum() > 5 and (~cancer).sum() > 5
    he = render_region(layout, x0, y0, 512, 512, stain="he")
    h = authors_stain_image(he, "h")
    normal = log_blobs(h, smooth=2, min_sigma=1, max_sigma=2, threshold=0.1)[:, [1, 0]]
    assert matched_fraction(xy[~cancer], normal, tol=4) > 0.8
    assert matched_fraction(xy[cancer], normal, tol=8) < 0.2, "cancer nuclei are no small blobs"
    big = log_blobs(h, smooth=1, min_sigma=10, max_sigma=12, threshold=0.01)[:, [1, 0]]
    assert matched_fraction(xy[cancer], big, tol=6) > 0.8
    ihc = render_region(layout, x0, y0, 512, 512, stain="ihc")
    dab = authors_stain_image(ihc, "d")
    free = log_blobs(1 - dab, smooth=2, min_sigma=7, max_sigma=10, threshold=0.02)[:, [1, 0]]
    assert matched_fraction(xy[cancer], free, tol=6) > 0.8


# --- errors -------------------------------------------------------------------------------------


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stain"):
        make_slide(tmp_path, name="x", stain="pas")
    with pytest.raises(ConfigError, match="64 x 64"):
        make_slide(tmp_path, name="x", width=10)
    with pytest.raises(ConfigError, match="mpp"):
        make_layout(512, 512, mpp=0)
    with pytest.raises(ConfigError, match="name"):
        make_slide(tmp_path, name="a/b", width=256, height=256)
    with pytest.raises(ConfigError, match="stain"):
        render_region(make_layout(256, 256), 0, 0, 8, 8, stain="x")
    assert not list(tmp_path.iterdir())


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=str(blocker)):
        make_slide(blocker / "out", name="x", width=256, height=256)


# --- tissue structures and options ----------------------------------------------------------------


def test_vessel_lumens_are_holes_with_red_cells() -> None:
    lay = make_layout(4096, 4096, seed=0)
    assert lay.holes and lay.walls and len(lay.rbc) > 0
    region = shapely.union_all(list(lay.holes))
    assert not shapely.contains_xy(region, lay.x, lay.y).any(), "no nucleus inside a hole"
    lumen = max(lay.holes[: len(lay.walls)], key=lambda p: p.area)
    minx, miny, maxx, maxy = (int(v) for v in lumen.bounds)
    w, h = maxx - minx + 1, maxy - miny + 1
    rows, cols = np.mgrid[0:h, 0:w]
    inside = shapely.contains_xy(lumen, minx + cols + 0.5, miny + rows + 0.5)
    assert not tissue_mask(lay, minx, miny, w, h)[inside].any()
    rgb = render_region(lay, minx, miny, w, h, stain="he")
    assert np.median(rgb[inside].sum(axis=1)) > 3 * 235, "the lumen is mostly empty"
    assert not lay.tumour_region.intersects(region), "vessels and fat lie outside the tumours"


def test_layout_options() -> None:
    base = make_layout(2048, 2048, seed=8)
    plain = make_layout(2048, 2048, seed=8, cancer_texture=0.0)
    np.testing.assert_array_equal(base.x, plain.x)  # only the appearance changes
    cancer = base.kind == KIND_CANCER
    i = int(np.flatnonzero(cancer)[0])
    assert plain.sprite_maps(i)[1].max() > 0 and not np.array_equal(
        plain.sprite_maps(i)[1], base.sprite_maps(i)[1]
    )
    small = make_layout(2048, 2048, seed=8, cancer_radius_um=(4.0, 4.5))
    r_um = small.radius[small.kind == KIND_CANCER] * small.mpp
    assert 3.5 < np.median(r_um) < 5.0
    assert len(make_layout(2048, 2048, seed=8, tumour_fraction=0.0).tumours) == 0
    with pytest.raises(ConfigError, match="cancer_texture"):
        make_layout(512, 512, cancer_texture=2)
    with pytest.raises(ConfigError, match="cancer_radius_um"):
        make_layout(512, 512, cancer_radius_um=(5, 4))


def test_a_layout_whose_buffers_geos_gets_wrong_still_builds() -> None:
    """Seed 5 at 8192 px: GEOS buffers the tumours to nested shells, on which the plain
    difference raised a TopologyException; the operands are repaired instead."""
    lay = make_layout(8192, 8192, mpp=0.5, seed=5)
    assert lay.tumours and all(t.is_valid for t in lay.tumours)
    assert lay.holes and all(hole.is_valid for hole in lay.holes)


def test_worker_processes_give_the_same_pixels() -> None:
    from histolib.synthetic.slides import render_slide_array

    lay = make_layout(1100, 1300, seed=2)
    one = render_slide_array(lay, stain="ihc", workers=1)
    two = render_slide_array(lay, stain="ihc", workers=2)
    np.testing.assert_array_equal(one, two)


def test_slide_layout_is_its_ground_truth(pair) -> None:
    he, _ = pair
    lay = he.layout()
    cells = read_cells_csv(he.cells_path)
    np.testing.assert_allclose(cells["x"], lay.x)
    np.testing.assert_array_equal(cells["label"], lay.labels)
    assert len(lay.tumours) == he.n_tumours


def test_interrupted_slide_leaves_no_slide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import histolib.synthetic.slides as synthetic

    real = synthetic.render_region
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_region", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_slide(tmp_path, width=2048, height=1100, name="cut")
    assert not (tmp_path / "cut.tif").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    monkeypatch.setattr(synthetic, "render_region", real)
    again = small_slide(tmp_path, width=2048, height=1100, name="cut")
    assert not again.reused and again.slide_path.is_file()


def test_large_slides_are_assembled_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openslide

    import histolib.synthetic.slides as synthetic

    in_memory = small_slide(tmp_path / "a", width=700, height=600)
    monkeypatch.setattr(synthetic, "_MEMMAP_BYTES", 1)
    on_disk = small_slide(tmp_path / "b", width=700, height=600)
    assert not [p for p in os.listdir(tmp_path / "b") if p.startswith(".tmp-")]
    with (
        openslide.OpenSlide(str(in_memory.slide_path)) as one,
        openslide.OpenSlide(str(on_disk.slide_path)) as two,
    ):
        a = np.asarray(one.read_region((0, 0), 0, (700, 600)))
        b = np.asarray(two.read_region((0, 0), 0, (700, 600)))
    np.testing.assert_array_equal(a, b)
