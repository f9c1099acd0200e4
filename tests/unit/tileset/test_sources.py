"""histolib.tileset.sources: a manifest or a folder of tiles (+ masks) as tile records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histolib.errors import InputError, ManifestError
from histolib.tileset.sources import TileRecord, folder_tiles, manifest_tiles, open_tiles
from tests.helpers_library import write_png


def _rgb(value: int = 200) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


def _write_manifest(root: Path) -> Path:
    import geopandas as gpd
    import shapely

    from histolib.tileset.manifest import tile_id, write_manifest

    rows = []
    for i, (stain, rel) in enumerate([("he", "s1/a.png"), ("ihc", ""), ("he", "s1/b.png")]):
        if rel:
            write_png(root / rel, _rgb())
        rows.append(
            dict(
                tile_id=tile_id("s1", 32 * i, 64, 16),
                slide_id="s1",
                slide_path="/slides/s1.svs",
                x0=32 * i,
                y0=64,
                size_px=16,
                mpp=0.5,
                downsample=2.0,
                stain=stain,
                label="positive" if i == 0 else "negative",
                tissue_fraction=1.0,
                annotation_fraction=0.0,
                path=rel,
            )
        )
    gdf = gpd.GeoDataFrame(
        rows, geometry=[shapely.box(r["x0"], r["y0"], r["x0"] + 32, r["y0"] + 32) for r in rows]
    )
    return write_manifest(gdf, root / "tiles.parquet", params={"annotations": "ann"})


def test_manifest_rows_become_records(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "m")
    source = manifest_tiles(manifest)
    assert source.path == manifest and source.params == {"annotations": "ann"}
    first, none, _ = source.records
    assert first == TileRecord(
        tile_id="s1_x0_y64_s16",
        slide_id="s1",
        image_path=(tmp_path / "m" / "s1" / "a.png").resolve(),
        x0=0.0,
        y0=64.0,
        downsample=2.0,
        mpp=0.5,
        size=16,
        stain="he",
        label="positive",
        slide_path="/slides/s1.svs",
    )
    assert none.image_path is None and none.stain == "ihc"  # written with --format none
    assert [r.tile_id for r in source.of_stain("he")] == ["s1_x0_y64_s16", "s1_x64_y64_s16"]
    assert open_tiles(manifest).records == source.records


def test_folder_rule_recursive_any_suffix_masks_by_stem_or_mask_suffix(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "tiles"
    write_png(images / "a.png", _rgb())
    (images / "sub").mkdir()
    Image.fromarray(_rgb(120)).save(images / "sub" / "b.JPG", format="JPEG")
    write_png(images / "deep" / "er" / "c.tif", _rgb(90))
    masks = images / "masks"  # a mask folder inside the tile folder holds no tiles
    write_png(masks / "a_mask.png", np.zeros((16, 16), np.uint8))
    write_png(masks / "b.png", np.zeros((16, 16), np.uint8))
    write_png(masks / "nested" / "c_mask.jpg", np.zeros((16, 16), np.uint8))
    source = folder_tiles(images, masks=masks, mpp=0.25, stain="he")
    assert [r.tile_id for r in source.records] == ["a", "c", "b"]  # sorted by relative path
    by_id = {r.tile_id: r for r in source.records}
    assert by_id["a"].mask_path == masks / "a_mask.png"
    assert by_id["b"].mask_path == masks / "b.png"
    assert by_id["c"].mask_path == masks / "nested" / "c_mask.jpg"
    for record in source.records:
        assert record.slide_id == record.tile_id and record.image_path.parent.is_relative_to(images)
        assert (record.x0, record.y0, record.downsample) == (0, 0, 1)
    assert {(r.mpp, r.stain, r.size) for r in source.records} == {(0.25, "he", None)}
    assert source.of_stain("he") == source.records and source.meta == {}
    assert open_tiles(images, masks=masks, mpp=0.25, stain="he") == source


def test_folder_and_source_errors(tmp_path: Path) -> None:
    images = tmp_path / "tiles"
    write_png(images / "a.png", _rgb())
    write_png(images / "x" / "a.jpg", _rgb())
    with pytest.raises(InputError, match="two tiles share the id 'a'"):
        folder_tiles(images)
    (images / "x" / "a.jpg").unlink()
    masks = tmp_path / "masks"
    masks.mkdir()
    with pytest.raises(InputError, match=r"1 tile\(s\) have no mask .*\(first: a\.png\)"):
        folder_tiles(images, masks=masks)
    with pytest.raises(InputError, match="no such folder of masks"):
        folder_tiles(images, masks=tmp_path / "nowhere")
    with pytest.raises(InputError, match="no image tiles"):
        folder_tiles(masks)
    with pytest.raises(ManifestError, match="no such tile manifest or folder"):
        open_tiles(tmp_path / "missing.parquet")
    (tmp_path / "notes.txt").write_text("not a manifest")
    with pytest.raises(ManifestError):
        open_tiles(tmp_path / "notes.txt")
