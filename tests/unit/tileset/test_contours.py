"""histolib.tileset.contours: contour source -> slide's contour file -> region -> tile mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from histolib.errors import ManifestError
from histolib.tileset.contours import (
    NO_CONTOURS,
    ContourSource,
    RegionCache,
    contour_source,
    require_contours,
    skipped_message,
    split_by_contours,
    tile_mask,
)
from histolib.tileset.sources import TileRecord
from tests.helpers_library import write_tumour_geojson


def _square(x0: float, x1: float) -> list[tuple[float, float]]:
    return [(x0, 0), (x1, 0), (x1, 1000), (x0, 1000)]


def _edit(path: Path, polygons: list) -> None:
    """Rewrite a contour file as an editor would: new content, a later modification time."""
    before = path.stat().st_mtime_ns
    write_tumour_geojson(path, polygons)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_contour_source_prefers_the_option_then_the_manifest(tmp_path: Path) -> None:
    meta = {"params": {"annotations": "ann", "positive_classes": ["Tumor"]}}
    recorded = contour_source(tmp_path / "tiles.parquet", meta)
    assert recorded.source == "ann" and recorded.classes == ("Tumor",)
    assert recorded.base == tmp_path.resolve()
    given = contour_source(
        tmp_path / "tiles.parquet", meta, annotations=tmp_path / "x", positive_classes=["T"]
    )
    assert given.source == tmp_path / "x" and given.classes == ("T",)
    per_slide = {"params": {"slides": {"s1": {"annotation_path": "s1.geojson"}}}}
    assert contour_source(tmp_path / "t.parquet", per_slide).source == {"s1": "s1.geojson"}
    none = contour_source(tmp_path / "t.parquet", {"params": {}})
    assert none.source is None and none.classes is None
    with pytest.raises(ManifestError, match="give --annotations FILE_OR_DIR") as info:
        require_contours(none, path=tmp_path / "t.parquet")
    assert NO_CONTOURS in str(info.value) and "t.parquet" in str(info.value)
    require_contours(recorded, path=tmp_path)  # a source: no error


def test_slides_without_a_contour_file_are_split_off(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    write_tumour_geojson(folder / "s1.geojson", [_square(0, 10)])
    records = [TileRecord(f"t{i}", sid, None) for i, sid in enumerate(["s1", "s2", "s1", "s3"])]
    contours = ContourSource(source="ann", classes=None, base=tmp_path)  # relative to the base
    kept, skipped = split_by_contours(records, contours)
    assert [(r.tile_id, f.name) for r, f in kept] == [("t0", "s1.geojson"), ("t2", "s1.geojson")]
    assert skipped == {"s2": 1, "s3": 1}
    message = skipped_message(skipped, contours)
    assert message.startswith("skipped 2 H&E tile(s) of 2 slide(s) without a contour file")
    assert "s2, s3" in message


def test_tile_mask_rasterises_the_region_on_the_tile_grid(tmp_path: Path) -> None:
    ann = write_tumour_geojson(tmp_path / "s.geojson", [_square(100, 140)])
    mask = tile_mask(ann, None, x0=80, y0=0, downsample=2.0, shape=(4, 40), cache=RegionCache())
    # tile px column c is level-0 x 80 + (c + 0.5) * 2: inside [100, 140] for c = 10..29
    assert mask.shape == (4, 40) and mask.all(axis=0).tolist() == [10 <= c < 30 for c in range(40)]
    stroma = tile_mask(ann, ["Stroma"], x0=80, y0=0, downsample=2.0, shape=(4, 40))
    assert not stroma.any()


def test_region_cache_reads_an_edited_file_again(tmp_path: Path, monkeypatch) -> None:
    import histolib.annotations.reading as reading

    calls = []
    real = reading.read_annotations

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(reading, "read_annotations", counting)
    ann = write_tumour_geojson(tmp_path / "s.geojson", [_square(0, 10)])
    cache = RegionCache()
    first = cache.region(ann, None)
    assert cache.region(tmp_path / "." / "s.geojson", None) is first  # same file: cached
    assert len(calls) == 1
    assert cache.region(ann, ("Tumor",)) is not first and len(calls) == 2  # other classes
    _edit(ann, [_square(500, 600)])
    second = cache.region(ann, None)
    assert len(calls) == 3 and second.bounds[0] == 500 and first.bounds[0] == 0
    # the shared cache behind tile_mask follows edits too
    before = tile_mask(ann, None, x0=500, y0=0, downsample=1.0, shape=(2, 2))
    _edit(ann, [_square(0, 10)])
    after = tile_mask(ann, None, x0=500, y0=0, downsample=1.0, shape=(2, 2))
    assert before.all() and not after.any()


def test_region_cache_is_bounded(tmp_path: Path, monkeypatch) -> None:
    import histolib.annotations.reading as reading

    calls = []
    real = reading.read_annotations
    monkeypatch.setattr(reading, "read_annotations", lambda p: calls.append(p) or real(p))
    files = [write_tumour_geojson(tmp_path / f"{i}.geojson", [_square(i, 10)]) for i in range(3)]
    cache = RegionCache(max_entries=2)
    for path in files:
        cache.region(path, None)
    cache.region(files[2], None)
    assert len(calls) == 3  # the newest is kept
    cache.region(files[0], None)
    assert len(calls) == 4  # the oldest was dropped
