"""Tests of histolib.tiling: grid, labels, selection, outputs, resume, IHC labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import Polygon, box

from histolib.errors import AnnotationError, ConfigError, InputError, SlideError
from histolib.slide.reader import open_slide
from histolib.tileset.manifest import MANIFEST_COLUMNS, read_manifest
from histolib.tiling.options import TilingOptions
from histolib.tiling.plan import contour_labels, select_tiles
from histolib.tiling.slides import collect_slides
from histolib.tiling.tiler import TilingError, slide_notes, tile_slides
from tests.helpers_tile import disc_slide, manifest_frame, tile_files, write_contours

CMU = "slides/CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 x 1536 slide at 0.5 um/px: an 8 x 6 grid of 256 px tiles."""
    return disc_slide(tmp_path_factory.mktemp("slides") / "disc.slide.tif")


@pytest.fixture(scope="module")
def contours(slide: Path) -> Path:
    """A tumour square over grid cells (1..2, 2..3) plus a square half over cell (5, 3)."""
    return write_contours(
        slide.parent / "disc.slide.geojson",
        [box(256, 512, 768, 1024), box(1280 + 128, 768, 1280 + 256, 1024)],
    )


def run(
    slide: Path, out: Path, *, annotations: Path | None = None, workers: int = 1, **fields
) -> Path:
    """``tile_slides`` in this process, the other keywords being ``TilingOptions`` fields."""
    options = TilingOptions(**fields)
    return tile_slides(
        slide, out=out, options=options, annotations=annotations, workers=workers, progress=False
    )


# ----------------------------------------------------------------------------- pure parts


def test_select_tiles_balance_and_cap() -> None:
    labels = ["positive"] * 5 + ["negative"] * 20 + ["boundary"] * 7
    rng = np.random.default_rng(0)
    chosen = select_tiles(labels, balance=True, max_tiles=None, rng=rng)
    picked = [labels[i] for i in chosen]
    assert picked.count("positive") == 5 and picked.count("negative") == 5
    assert "boundary" not in picked and list(chosen) == sorted(chosen)
    capped = select_tiles(labels, balance=True, max_tiles=4, rng=np.random.default_rng(0))
    assert [labels[i] for i in capped].count("positive") == 2 and len(capped) == 4
    again = select_tiles(labels, balance=True, max_tiles=4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(capped, again)
    plain = select_tiles(labels, balance=False, max_tiles=10, rng=np.random.default_rng(1))
    assert len(plain) == 10 and len(set(plain.tolist())) == 10
    every = select_tiles(labels, balance=False, max_tiles=None, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(every, np.arange(len(labels)))
    none = select_tiles(["negative"] * 3, balance=True, max_tiles=None, rng=rng)
    assert len(none) == 0


def test_contour_labels_exact_fractions_and_holes() -> None:
    outer = Polygon(
        [(0, 0), (400, 0), (400, 400), (0, 400)], [[(50, 50), (150, 50), (150, 150), (50, 150)]]
    )
    x0 = np.array([0.0, 200.0, 300.0, 1000.0, 400.0])
    y0 = np.array([0.0, 200.0, 300.0, 1000.0, 0.0])
    fractions, labels = contour_labels(outer, x0, y0, 100.0, positive_fraction=0.5)
    # tile 0 has the hole's quarter (50..100)^2 = 2500 px^2 cut out of 10000
    np.testing.assert_allclose(fractions, [0.75, 1.0, 1.0, 0.0, 0.0])
    assert list(labels) == ["positive", "positive", "positive", "negative", "negative"]
    fractions, labels = contour_labels(outer, x0, y0, 100.0, positive_fraction=0.8)
    assert labels[0] == "boundary"
    _, labels = contour_labels(None, x0, y0, 100.0, positive_fraction=0.5)
    assert set(labels) == {"negative"}


def test_collect_slides(tmp_path: Path, slide: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.svs").write_bytes(b"x")
    (folder / "b.tif").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    found = collect_slides([folder, slide])
    assert [p.name for p in found] == ["a.svs", "b.tif", slide.name]
    with pytest.raises(InputError, match="no such file"):
        collect_slides([tmp_path / "missing.svs"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no slides"):
        collect_slides(empty)
    (folder / "a.tif").write_bytes(b"x")
    with pytest.raises(ConfigError, match="slide id 'a'"):
        collect_slides(folder)


def test_option_checks(tmp_path: Path, slide: Path) -> None:
    with pytest.raises(ConfigError, match="--stain"):
        run(slide, tmp_path, stain="pas")
    with pytest.raises(ConfigError, match="--balance needs labels"):
        run(slide, tmp_path, balance=True)
    with pytest.raises(ConfigError, match="--format"):
        run(slide, tmp_path, image_format="tiff")
    with pytest.raises(ConfigError, match="--min-tissue"):
        run(slide, tmp_path, min_tissue=1.5)
    with pytest.raises(ConfigError, match="--workers"):
        run(slide, tmp_path, workers=0)
    with pytest.raises(AnnotationError, match="no such file"):
        run(slide, tmp_path, annotations=tmp_path / "none.geojson")
    other = tmp_path / "other.tif"
    os.link(slide, other)
    with pytest.raises(ConfigError, match="one annotation file"):
        tile_slides([slide, other], out=tmp_path, annotations=slide)


# ----------------------------------------------------------------------------- outputs


def test_tiles_manifest_mask_qc(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "out"
    manifest = run(slide, out, annotations=contours)
    assert manifest == out / "tiles.parquet"
    gdf, meta = read_manifest(manifest)
    assert list(gdf.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert (gdf["slide_id"] == "disc.slide").all()
    assert (gdf["tissue_fraction"] >= 0.5).all()
    assert (gdf["size_px"] == 256).all() and (gdf["mpp"] == 0.5).all()
    assert (gdf["downsample"] == 1.0).all()
    assert ((gdf["x0"] % 256) == 0).all() and ((gdf["y0"] % 256) == 0).all()
    first = gdf.iloc[0]
    assert first["tile_id"] == f"disc.slide_x{first['x0']}_y{first['y0']}_s256"
    assert first["path"] == f"tiles/disc.slide/{first['tile_id']}.png"
    assert gdf.geometry.iloc[0].equals(
        box(first["x0"], first["y0"], first["x0"] + 256, first["y0"] + 256)
    )
    by_origin = {(r.x0, r.y0): r.label for r in gdf.itertuples()}
    assert by_origin[(256, 512)] == "positive" and by_origin[(512, 768)] == "positive"
    assert by_origin[(1280, 768)] == "positive"  # exactly half inside: >= 0.5
    # the tile beside the tumour square (touching its edge only) is negative
    assert by_origin.get((768, 512), "negative") == "negative"
    labels = set(gdf["label"])
    assert labels <= {"positive", "negative", "boundary"} and "negative" in labels
    # pixels: each tile is exactly the slide region at the tile's scale
    with open_slide(slide) as s:
        for row in gdf.iloc[[0, len(gdf) // 2, -1]].itertuples():
            pixels = np.asarray(Image.open(out / row.path).convert("RGB"))
            np.testing.assert_array_equal(pixels, s.read_region(row.x0, row.y0, size=256, mpp=0.5))
    params = meta["params"]
    assert params["mpp"] == 0.5 and params["png_compression"] == 1
    info = params["slides"]["disc.slide"]
    assert info["tiles"] == len(gdf) and info["grid"] == [8, 6]
    assert (out / info["mask_path"]).is_file() and (out / info["qc_path"]).is_file()
    with Image.open(out / "qc" / "disc.slide.png") as qc:
        assert qc.mode == "RGB" and max(qc.size) >= 1024
    assert not list(out.rglob(".tmp-*"))
    # the mask PNG lines up with the tiles: its scale is in its text chunk
    from histolib.slide.tissue import load_mask_png

    mask, mask_info = load_mask_png(out / "masks" / "disc.slide.png")
    assert mask_info["downsample"] == 16.0 and mask.shape == (96, 128)


def test_no_contours_is_unlabelled_and_format_none(tmp_path: Path, slide: Path) -> None:
    out = tmp_path / "none"
    gdf, _ = read_manifest(run(slide, out, image_format="none"))
    assert len(gdf) > 0 and set(gdf["label"]) == {"unlabelled"}
    assert (gdf["path"] == "").all() and gdf["annotation_fraction"].isna().all()
    assert not (out / "tiles").exists()
    png, _ = read_manifest(run(slide, tmp_path / "png"))
    assert sorted(png["tile_id"]) == sorted(gdf["tile_id"])


def test_jpeg_and_other_sizes(tmp_path: Path, slide: Path) -> None:
    gdf, _ = read_manifest(run(slide, tmp_path / "j", image_format="jpeg", size=200, mpp=1.0))
    assert (gdf["downsample"] == 2.0).all() and (gdf["size_px"] == 200).all()
    row = gdf.iloc[0]
    assert row["path"].endswith(".jpg") and row["tile_id"].endswith("_s200")
    with Image.open(tmp_path / "j" / row["path"]) as image:
        assert image.format == "JPEG" and image.size == (200, 200)
    assert ((gdf["x0"] % 400) == 0).all()


def test_min_tissue_zero_keeps_whole_grid(tmp_path: Path, slide: Path) -> None:
    gdf, _ = read_manifest(run(slide, tmp_path / "all", min_tissue=0.0, image_format="none"))
    assert len(gdf) == 8 * 6


def test_balance_and_max_tiles(tmp_path: Path, slide: Path, contours: Path) -> None:
    gdf, _ = read_manifest(run(slide, tmp_path / "b", annotations=contours, balance=True))
    counts = gdf["label"].value_counts().to_dict()
    assert counts["positive"] == counts["negative"] > 0 and "boundary" not in counts
    again, _ = read_manifest(run(slide, tmp_path / "b2", annotations=contours, balance=True))
    assert sorted(again["tile_id"]) == sorted(gdf["tile_id"])
    capped, _ = read_manifest(run(slide, tmp_path / "m", max_tiles=3, seed=5))
    assert len(capped) == 3
    other, _ = read_manifest(run(slide, tmp_path / "m2", max_tiles=3, seed=6))
    assert len(other) == 3


def test_positive_class_selects_contours(tmp_path: Path, slide: Path) -> None:
    path = write_contours(tmp_path / "stroma.geojson", [box(0, 0, 2048, 1536)], class_name="Stroma")
    gdf, meta = read_manifest(
        run(slide, tmp_path / "c", annotations=path, positive_classes=("Tumor",))
    )
    assert set(gdf["label"]) == {"negative"}
    notes = meta["params"]["slides"]["disc.slide"]["notes"]
    assert any("no contour of class Tumor" in n for n in notes)
    gdf, _ = read_manifest(
        run(slide, tmp_path / "d", annotations=path, positive_classes=("stroma",))
    )
    assert set(gdf["label"]) == {"positive"}


def test_annotation_folder_matched_by_slide_id(tmp_path: Path, slide: Path, contours: Path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "disc.slide.geojson").write_bytes(contours.read_bytes())
    gdf, _ = read_manifest(run(slide, tmp_path / "o", annotations=folder))
    assert "positive" in set(gdf["label"])
    empty = tmp_path / "ann_empty"
    empty.mkdir()
    manifest = run(slide, tmp_path / "o2", annotations=empty)
    gdf, _ = read_manifest(manifest)
    assert set(gdf["label"]) == {"unlabelled"}
    # a folder with no file for the slide is said, not silently taken as "no contours"
    assert slide_notes(manifest)["disc.slide"] == [
        f"no disc.slide.geojson in {empty}: tiles left unlabelled"
    ]
    assert not any(
        "geojson" in n for n in slide_notes(tmp_path / "o" / "tiles.parquet")["disc.slide"]
    )


def test_bad_annotations(tmp_path: Path, slide: Path) -> None:
    text = tmp_path / "bad.geojson"
    text.write_text("this is not json")
    with pytest.raises(AnnotationError, match="GeoJSON"):
        run(slide, tmp_path / "x", annotations=text)
    far = write_contours(tmp_path / "far.geojson", [box(10000, 10000, 11000, 11000)])
    with pytest.raises(AnnotationError, match="outside the slide"):
        run(slide, tmp_path / "y", annotations=far)


# ----------------------------------------------------------------------------- resume


def test_rerun_skips_and_yields_same_manifest(tmp_path: Path, slide: Path, contours: Path) -> None:
    out = tmp_path / "r"
    first = manifest_frame(run(slide, out, annotations=contours))
    files = tile_files(out)
    part = out / "parts" / "disc.slide.parquet"
    part_time = part.stat().st_mtime_ns
    second = manifest_frame(run(slide, out, annotations=contours))
    assert first.equals(second)
    assert tile_files(out) == files and part.stat().st_mtime_ns == part_time
    # an interrupted slide: no part, one tile missing, a leftover temp file
    part.unlink()
    victim = out / first.loc[3, "path"]
    victim.unlink()
    stale = victim.parent / ".tmp-half-written.png"
    stale.write_bytes(b"partial")
    third = manifest_frame(run(slide, out, annotations=contours))
    assert first.equals(third)
    after = tile_files(out)
    rewritten = {k for k in after if after[k] != files.get(k)}
    assert rewritten == {str(victim.relative_to(out / "tiles"))}
    assert not stale.exists()
    # other labelling parameters redo the slide's rows but keep its tiles
    fourth = manifest_frame(run(slide, out, annotations=contours, positive_fraction=0.9))
    assert tile_files(out) == after
    assert (fourth["label"] == "boundary").sum() > (first["label"] == "boundary").sum()


def test_other_pixel_parameters_in_same_folder_refused(tmp_path: Path, slide: Path) -> None:
    out = tmp_path / "p"
    run(slide, out)
    with pytest.raises(ConfigError, match="other parameters"):
        run(slide, out, mpp=1.0)


def test_interrupted_run_leaves_no_half_tile(
    tmp_path: Path, slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "i"
    original = Image.Image.save
    calls = {"n": 0}

    def flaky_save(self, fp, *args, **kwargs):
        calls["n"] += "_s256" in str(fp)  # count tile writes only
        if calls["n"] == 4:
            with open(fp, "wb") as fh:  # half a file, then the user presses Ctrl-C
                fh.write(b"\x89PNG half")
            raise KeyboardInterrupt
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        run(slide, out)
    monkeypatch.setattr(Image.Image, "save", original)
    written = [p for p in (out / "tiles" / "disc.slide").iterdir() if not p.name.startswith(".")]
    assert len(written) == 3
    for path in written:
        with Image.open(path) as image:
            image.load()
    assert not list(out.rglob(".tmp-*")) and not (out / "tiles.parquet").exists()
    assert not (out / "parts" / "disc.slide.parquet").exists()
    resumed = manifest_frame(run(slide, out))
    clean = manifest_frame(run(slide, tmp_path / "clean"))
    assert resumed.drop(columns="slide_path").equals(clean.drop(columns="slide_path"))


# ----------------------------------------------------------------------------- several slides


def test_bad_slide_among_several_is_skipped(tmp_path: Path, slide: Path, shared_data: Path) -> None:
    broken = shared_data / "slides/broken.svs"
    with pytest.raises(TilingError) as info:
        tile_slides([slide, broken], out=tmp_path / "s", workers=1, progress=False)
    err = info.value
    assert list(err.failures) == [str(broken)] and "corrupt" in err.failures[str(broken)]
    gdf, _ = read_manifest(err.manifest)
    assert set(gdf["slide_id"]) == {"disc.slide"}
    with pytest.raises(SlideError, match="corrupt"):
        tile_slides(broken, out=tmp_path / "t", workers=1, progress=False)
    assert not (tmp_path / "t" / "tiles.parquet").exists()


def test_two_workers_match_one(tmp_path: Path, slide: Path, contours: Path) -> None:
    other = slide.parent / "copy.tif"
    if not other.exists():
        os.link(slide, other)
    one = manifest_frame(
        tile_slides([slide, other], out=tmp_path / "w1", workers=1, progress=False)
    )
    two = manifest_frame(
        tile_slides([slide, other], out=tmp_path / "w2", workers=2, progress=False)
    )
    assert one.equals(two)
    assert set(one["slide_id"]) == {"disc.slide", "copy"}
    assert sorted(tile_files(tmp_path / "w1")) == sorted(tile_files(tmp_path / "w2"))


# ----------------------------------------------------------------------------- real and IHC


def test_cmu_with_drawn_contours(tmp_path: Path, shared_data: Path) -> None:
    region = Polygon([(600, 800), (1500, 700), (1600, 1900), (700, 2000)])
    contours = write_contours(tmp_path / "CMU-1-Small-Region.geojson", [region])
    manifest = run(
        shared_data / CMU,
        tmp_path / "cmu",
        annotations=contours,
        min_tissue=0.0,
        image_format="none",
    )
    gdf, meta = read_manifest(manifest)
    info = meta["params"]["slides"]["CMU-1-Small-Region"]
    assert info["grid"] == [8, 11] and len(gdf) == 88
    step = 256 * 0.5 / 0.499
    assert gdf["downsample"].iloc[0] == pytest.approx(0.5 / 0.499)
    assert (gdf["mpp"] == 0.5).all()  # exactly the target, not 0.499 * (0.5 / 0.499)
    for row in gdf.itertuples():
        square = box(row.x0, row.y0, row.x0 + step, row.y0 + step)
        expected = square.intersection(region).area / square.area
        assert row.annotation_fraction == pytest.approx(expected, abs=1e-6)
    assert (gdf["label"] == "positive").sum() >= 6
    tissue = run(shared_data / CMU, tmp_path / "cmu2", image_format="none")
    kept, _ = read_manifest(tissue)
    assert 25 <= len(kept) <= 60


def test_ihc_labels_from_dab(tmp_path: Path) -> None:
    from histolib.annotations import read_annotations, tumour_region
    from tests.helpers_synth import small_slide

    syn = small_slide(tmp_path / "syn", stain="ihc", seed=3, width=2048, height=1536)
    out = tmp_path / "ihc"
    gdf, meta = read_manifest(run(syn.slide_path, out, stain="ihc"))
    assert set(gdf["label"]) == {"positive", "negative"}
    assert meta["params"]["slides"][syn.name]["dab_threshold"] is not None
    truth = tumour_region(read_annotations(syn.annotations_path))
    tumour = np.array(
        [
            box(r.x0, r.y0, r.x0 + 256, r.y0 + 256).intersection(truth).area / 256**2
            for r in gdf.itertuples()
        ]
    )
    positive = (gdf["label"] == "positive").to_numpy()
    assert positive.any()
    # DAB-positive tiles lie on the tumours; tiles far from any tumour are negative.
    assert tumour[positive].min() > 0.05
    assert not positive[tumour == 0].any()
    assert (gdf.loc[positive, "annotation_fraction"] >= 0.1).all()
    balanced, _ = read_manifest(run(syn.slide_path, tmp_path / "ihcb", stain="ihc", balance=True))
    counts = balanced["label"].value_counts()
    assert counts["positive"] == counts["negative"] == positive.sum()
    files = [p for p in (tmp_path / "ihcb" / "tiles" / syn.name).iterdir() if p.suffix == ".png"]
    assert len(files) == len(balanced)


def test_blank_and_tiny_slides_give_no_tiles_and_say_why(tmp_path: Path) -> None:
    from tests.helpers_tile import tissue_image, write_slide

    blank = write_slide(tmp_path / "blank.tif", np.full((600, 800, 3), 243, np.uint8))
    tiny = write_slide(tmp_path / "tiny.tif", tissue_image(200, 150, rects=[(0, 0, 200, 150)]))
    gdf, meta = read_manifest(
        tile_slides([blank, tiny], out=tmp_path / "o", workers=1, progress=False)
    )
    assert len(gdf) == 0
    notes = meta["params"]["slides"]
    assert "no tile has a tissue fraction" in notes["blank"]["notes"][0]
    assert "smaller than one tile" in notes["tiny"]["notes"][0]
    assert (tmp_path / "o" / "qc" / "blank.png").is_file()
