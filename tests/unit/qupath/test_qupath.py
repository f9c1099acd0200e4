"""Tests of the QuPath writer, exporter and importer (histolib.qupath.features*)."""

from __future__ import annotations

import gzip
import json
import math
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shapely.geometry import Point, box, shape

from histolib.annotations.reading import read_annotations
from histolib.errors import AnnotationError, ConfigError, ManifestError
from histolib.library.cellio import (
    CELL_LABELS,
    LIBRARY_COLUMNS,
    empty_library,
    read_library,
    write_library,
)
from histolib.qupath.export import check_version, export_qupath, input_kind
from histolib.qupath.features import (
    PASS_CODES,
    box_geometry,
    circle_geometry,
    circle_radius,
    class_color,
    parse_class_names,
    qupath_feature,
)
from histolib.qupath.importer import import_qupath, slide_for_file
from histolib.tileset.manifest import read_manifest, write_manifest
from tests.helpers_qupath import (
    feature,
    library_from_manifest,
    polygon,
    reference_library,
    write_json,
    write_manifest_for,
)

TUMOR = {"cancer": "Tumor", "normal": "Normal"}

# ---------------------------------------------------------------------------------------------
# building blocks


def test_box_and_circle_geometry() -> None:
    g = box_geometry(1, 2, 49, 50)
    ring = g["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert shape(g).equals(box(1, 2, 49, 50))
    c = circle_geometry(100.0, 200.0, 7.5)
    assert len(c["coordinates"][0]) == 33
    circle = shape(c)
    assert circle.is_valid
    assert circle_radius(circle.area) == pytest.approx(7.5, abs=1e-9)
    assert circle.centroid.distance(Point(100, 200)) < 1e-9


def test_qupath_feature_accepts_mapping_and_always_colours() -> None:
    f = qupath_feature(box_geometry(0, 0, 1, 1), object_type="detection", class_name="Weird")
    assert f["geometry"]["type"] == "Polygon"
    assert f["properties"]["classification"]["color"] == list(class_color("Weird"))
    uuid.UUID(f["id"])


def test_parse_class_names() -> None:
    assert parse_class_names("cancer=Tumor, normal=Normal") == TUMOR
    assert parse_class_names("") == {}
    assert parse_class_names(None) == {}
    for bad in ("cancer", "cancer=", "=Tumor", "cancer=A,cancer=B", "cancer=A,normal=A"):
        with pytest.raises(ConfigError, match="--class-names"):
            parse_class_names(bad)


# ---------------------------------------------------------------------------------------------
# export


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path, gpd.GeoDataFrame]:
    manifest = write_manifest_for(tmp_path)
    library = library_from_manifest(manifest)
    lib_path = write_library(library, tmp_path / "lib.parquet", params={"preset": "test"})
    return manifest, lib_path, library


def _load(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def test_input_kind(small, tmp_path: Path) -> None:
    manifest, lib_path, library = small
    assert input_kind(manifest) == "tiles"
    assert input_kind(lib_path) == "library"
    geo = write_library(library, tmp_path / "lib.geojson", params={})
    assert input_kind(geo) == "library"


def test_export_detections_and_tiles(small, tmp_path: Path) -> None:
    manifest, lib_path, library = small
    result = export_qupath([manifest, lib_path], out=tmp_path / "out", class_names=TUMOR)
    (record,) = result.files
    assert record.path == tmp_path / "out" / "slide1.geojson"
    assert (record.tiles, record.cells, record.annotations) == (6, len(library), 0)
    doc = _load(record.path)
    assert doc["type"] == "FeatureCollection"
    features = doc["features"]
    assert len(features) == 6 + len(library)
    ids = [f["id"] for f in features]
    assert len(set(ids)) == len(ids)
    for f in features:
        uuid.UUID(f["id"])
        props = f["properties"]
        assert props["objectType"] in ("tile", "detection")
        cls = props["classification"]
        assert isinstance(cls["name"], str) and len(cls["color"]) == 3
        assert all(isinstance(v, float) for v in props["measurements"].values())
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
    tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
    assert {f["properties"]["classification"]["name"] for f in tiles} == {
        "positive",
        "negative",
        "boundary",
    }
    assert tiles[1]["properties"]["name"] == "slide1_x1512_y500_s256"
    assert tiles[1]["properties"]["measurements"] == {
        "tissue_fraction": pytest.approx(0.55),
        "annotation_fraction": 0.0,
    }
    cells = [f for f in features if f["properties"]["objectType"] == "detection"]
    assert {f["properties"]["classification"]["name"] for f in cells} == {"Tumor", "Normal"}
    first = cells[0]["properties"]["measurements"]
    assert first["sigma"] == library["sigma"].iloc[0]
    assert first["pass"] == PASS_CODES[library["pass"].iloc[0]]


def test_export_cells_with_nucleus(small, tmp_path: Path) -> None:
    _, lib_path, library = small
    result = export_qupath([lib_path], out=tmp_path / "out", cells="cell", gzip_output=True)
    (record,) = result.files
    assert record.path.name == "slide1.geojson.gz"
    features = _load(record.path)["features"]
    assert all(f["properties"]["objectType"] == "cell" for f in features)
    for f, row in zip(features, library.itertuples(index=False), strict=True):
        nucleus = shape(f["nucleusGeometry"])  # beside "geometry", where QuPath reads it
        assert nucleus.centroid.distance(Point(row.x, row.y)) < 1e-6
        expected = row.sigma * math.sqrt(2) * row.downsample
        assert circle_radius(nucleus.area) == pytest.approx(expected)
        assert np.allclose(shape(f["geometry"]).bounds, row.geometry.bounds)


def test_export_several_slides_and_contours(tmp_path: Path) -> None:
    m1 = write_manifest_for(tmp_path / "a", slide_id="s.one", cols=1, rows=1)
    m2 = write_manifest_for(tmp_path / "b", slide_id="s.two", cols=1, rows=1)
    contours = tmp_path / "contours"
    contours.mkdir()
    write_json(
        contours / "s.one.geojson",
        [feature(polygon(1000, 500, 1100, 600), classification="Tumor", name="nest")],
    )
    result = export_qupath([m1, m2], out=tmp_path / "out", annotations=contours)
    names = sorted(f.path.name for f in result.files)
    assert names == ["s.one.geojson", "s.two.geojson"]
    one = next(f for f in result.files if f.slide_id == "s.one")
    assert one.annotations == 1
    annotations = read_annotations(one.path)
    nest = [a for a in annotations if a.object_type == "annotation"]
    assert nest[0].name == "nest" and nest[0].class_name == "Tumor"
    assert nest[0].geometry.equals(box(1000, 500, 1100, 600))
    # one file with several slides goes to the slide it is named after
    named = export_qupath([m1, m2], out=tmp_path / "o2", annotations=contours / "s.one.geojson")
    assert {f.slide_id: f.annotations for f in named.files} == {"s.one": 1, "s.two": 0}
    other = write_json(tmp_path / "nest.geojson", [feature(polygon(0, 0, 5, 5))])
    with pytest.raises(ConfigError, match="named after none of the 2 slides"):
        export_qupath([m1, m2], out=tmp_path / "o4", annotations=other)
    single = export_qupath([m2], out=tmp_path / "o3", annotations=contours / "s.one.geojson")
    assert single.files[0].annotations == 1  # the only slide takes the file, whatever its name
    assert not any("lie away" in m for m in result.messages)
    far = write_json(tmp_path / "far.geojson", [feature(polygon(90000, 90000, 90100, 90100))])
    away = export_qupath([m1], out=tmp_path / "o5", annotations=far)
    assert away.files[0].annotations == 1  # still passed through, with a message
    assert any("s.one: 1 of 1 contour(s) lie away" in m for m in away.messages)


def test_export_empty_library(tmp_path: Path) -> None:
    lib = write_library(empty_library(), tmp_path / "empty.parquet", params={})
    result = export_qupath([lib], out=tmp_path / "out")
    (record,) = result.files
    assert _load(record.path) == {"type": "FeatureCollection", "features": []}
    assert any("has no cells" in m and "empty FeatureCollection" in m for m in result.messages)


def test_export_rejects_foreign_and_other_versions(small, tmp_path: Path) -> None:
    _, lib_path, _ = small
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    with pytest.raises(ManifestError, match="not a histolib table") as info:
        export_qupath([foreign], out=tmp_path / "out")
    assert str(info.value).startswith(str(foreign))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="not a Parquet file"):
        export_qupath([garbage], out=tmp_path / "out")
    qupath_file = write_json(tmp_path / "q.geojson", [feature(polygon(0, 0, 1, 1))])
    with pytest.raises(ManifestError, match="not a histolib cell library"):
        export_qupath([qupath_file], out=tmp_path / "out")
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ManifestError, match="expected a tile manifest"):
        export_qupath([csv], out=tmp_path / "out")
    with pytest.raises(ManifestError, match="no such file"):
        export_qupath([tmp_path / "absent.parquet"], out=tmp_path / "out")

    # a library written by another (incompatible) histolib version
    table = pq.read_table(lib_path)
    meta = dict(table.schema.metadata)
    hist = json.loads(meta[b"histolib"])
    hist["version"] = "0.9.3"
    meta[b"histolib"] = json.dumps(hist).encode()
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata(meta), old)
    with pytest.raises(ManifestError, match=r"written by histolib 0\.9\.3"):
        export_qupath([old], out=tmp_path / "out")
    with pytest.raises(ManifestError, match="no histolib version"):
        check_version({}, old)
    check_version({"version": "0.1.7"}, old)
    with pytest.raises(ConfigError, match="--cells"):
        export_qupath([lib_path], out=tmp_path / "out", cells="blob")
    assert not (tmp_path / "out" / "slide1.geojson").exists()


def test_round_trip_real_tiles(shared_data: Path, tmp_path: Path) -> None:
    """Export a library of real detections then read it back: same boxes, classes, counts."""
    manifest, library = reference_library(shared_data, tmp_path)
    lib_path = write_library(library, tmp_path / "library.parquet", params={})
    for mode in ("detection", "cell"):
        result = export_qupath(
            [manifest, lib_path], out=tmp_path / mode, cells=mode, class_names=TUMOR
        )
        annotations = read_annotations(result.files[0].path)
        cells = [a for a in annotations if a.object_type == mode]
        tiles = [a for a in annotations if a.object_type == "tile"]
        assert len(cells) == len(library) and len(tiles) == 6
        for a, row in zip(cells, library.itertuples(index=False), strict=True):
            assert np.allclose(a.geometry.bounds, row.geometry.bounds, atol=0.01)
            assert a.geometry.area == pytest.approx(row.geometry.area, abs=0.5)
            assert a.class_name == TUMOR[row.label]
            assert a.measurements["sigma"] == pytest.approx(row.sigma)
            if mode == "cell":
                assert a.nucleus.centroid.distance(Point(row.x, row.y)) < 0.01
        counts = {TUMOR[k]: v for k, v in library["label"].value_counts().items()}
        got = {n: sum(a.class_name == n for a in cells) for n in counts}
        assert got == counts


# ---------------------------------------------------------------------------------------------
# import


def test_import_curated_export(shared_data: Path, tmp_path: Path) -> None:
    """Export, edit the way QuPath writes (bare array, removals, reclassification), import."""
    manifest, library = reference_library(shared_data, tmp_path)
    lib_path = write_library(library, tmp_path / "library.parquet", params={})
    exported = export_qupath([manifest, lib_path], out=tmp_path / "exp", class_names=TUMOR)
    features = _load(exported.files[0].path)["features"]
    cells = [f for f in features if f["properties"]["objectType"] == "detection"]
    tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
    removed = {3, 10, 11, 200}
    kept = [f for i, f in enumerate(cells) if i not in removed]
    # the pathologist reclassifies cell 0 (normal in the library) as Tumor
    assert kept[0]["properties"]["classification"]["name"] == "Normal"
    kept[0]["properties"]["classification"] = {"name": "Tumor", "color": [200, 0, 0]}
    # ...draws a new box (no measurements), one far outside every tile, one unclassified
    drawn = feature(polygon(320, 420, 340, 440), objectType="detection", classification="Normal")
    outside = feature(
        polygon(5000, 5000, 5048, 5048), objectType="detection", classification="Tumor"
    )
    unclassified = feature(polygon(330, 430, 340, 440), objectType="detection")
    stray = feature(polygon(300, 400, 900, 900), objectType="annotation", classification="Tumor")
    edited = [*tiles, *kept, drawn, outside, unclassified, stray]
    qupath_file = tmp_path / "CMU-1-Small-Region.geojson"
    qupath_file.write_text(json.dumps(edited))  # a bare array, as QuPath can write

    result = import_qupath(
        [qupath_file], tiles=manifest, out=tmp_path / "curated.parquet", class_names=TUMOR
    )
    assert result.outside == 1 and result.unclassified == 1
    assert result.ignored_types == {"tile": 6, "annotation": 1}
    assert any("outside every tile" in m for m in result.messages)
    back, meta = read_library(tmp_path / "curated.parquet")
    assert meta["kind"] == "library" and meta["params"]["source"] == "qupath"
    assert list(back.columns[: len(LIBRARY_COLUMNS)]) == list(LIBRARY_COLUMNS)
    assert len(back) == len(library) - len(removed) + 1
    assert set(back["label"]) <= set(CELL_LABELS)

    original = library.drop(index=sorted(removed)).reset_index(drop=True)
    expected_cancer = int((original["label"] == "cancer").sum()) + 1
    assert int((back["label"] == "cancer").sum()) == expected_cancer
    assert result.kept["cancer"] == expected_cancer

    # every kept cell comes back in its tile with its tile-local box, sigma and pass
    key = ["tile_id", "box_x0", "box_y0"]
    merged = back.merge(original, on=key, suffixes=("", "_orig"))
    assert len(merged) == len(original)
    for col in ("box_x1", "box_y1", "tile_x0", "tile_y0"):
        assert (merged[col] == merged[f"{col}_orig"]).all()
    assert np.allclose(merged["sigma"], merged["sigma_orig"])
    assert (merged["pass"] == merged["pass_orig"]).all()
    assert np.allclose(merged["tile_x"], merged["tile_x_orig"], atol=0.01)
    geoms = gpd.GeoSeries(merged.geometry.values)
    assert np.allclose(
        geoms.bounds.to_numpy(), gpd.GeoSeries(merged["geometry_orig"]).bounds, atol=0.01
    )
    new = back[back["pass"] == "qupath"]
    assert len(new) == 1 and new["label"].iloc[0] == "normal" and np.isnan(new["sigma"].iloc[0])
    assert new["tile_id"].iloc[0] == "CMU-1-Small-Region_x300_y400_s256"


def test_import_cells_and_half_open_tiles(tmp_path: Path) -> None:
    manifest = write_manifest_for(tmp_path, cols=2, rows=1, downsample=2.0)
    # tiles: x 1000..1512 and 1512..2024, y 500..1012; a centre on x = 1512 goes right
    edge = feature(polygon(1500, 600, 1524, 624), objectType="detection", classification="cancer")
    cell = feature(polygon(1100, 600, 1196, 696), objectType="cell", classification="normal")
    cell["nucleusGeometry"] = circle_geometry(1150.0, 650.0, 3.0 * math.sqrt(2) * 2.0)
    path = write_json(
        tmp_path / "whatever.geojson.gz",
        {"type": "FeatureCollection", "features": [edge, cell]},
        gz=True,
    )
    result = import_qupath([path], tiles=manifest, out=tmp_path / "lib.geojson")
    assert result.count == 2
    back, _ = read_library(tmp_path / "lib.geojson")
    by_label = {row.label: row for row in back.itertuples(index=False)}
    assert by_label["cancer"].tile_id == "slide1_x1512_y500_s256"
    assert by_label["cancer"].tile_x == 0.0 and by_label["cancer"].box_x0 == -6
    normal = by_label["normal"]
    assert normal.tile_id == "slide1_x1000_y500_s256"
    assert (normal.x, normal.y) == pytest.approx((1150, 650))
    assert normal.sigma == pytest.approx(3.0)  # from the nucleus circle: r = sigma sqrt(2) ds
    assert set(back["pass"]) == {"qupath"}


def test_import_errors(tmp_path: Path) -> None:
    m1 = write_manifest_for(tmp_path / "a", slide_id="one", cols=1, rows=1)
    m2 = write_manifest_for(tmp_path / "b", slide_id="two", cols=1, rows=1)
    g1, _ = read_manifest(m1)
    g2, _ = read_manifest(m2)
    both = gpd.GeoDataFrame(pd.concat([g1, g2], ignore_index=True))
    merged = write_manifest(both, tmp_path / "tiles.parquet", params={})
    assert slide_for_file(Path("one.geojson.gz"), ["one", "two"]) == "one"
    assert slide_for_file(Path("any.json"), ["one"]) == "one"
    stray = write_json(tmp_path / "three.geojson", [])
    with pytest.raises(AnnotationError, match="matches no slide"):
        import_qupath([stray], tiles=merged, out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="--out must end in"):
        import_qupath([stray], tiles=merged, out=tmp_path / "x.csv")
    bad = tmp_path / "one.geojson"
    bad.write_text("not json")
    with pytest.raises(AnnotationError, match="not GeoJSON"):
        import_qupath([bad], tiles=merged, out=tmp_path / "x.parquet")
    # the same export given twice would import every cell twice
    with pytest.raises(ConfigError, match="given twice"):
        import_qupath(
            [stray, tmp_path / "." / "three.geojson"], tiles=merged, out=tmp_path / "x.parquet"
        )
    assert not (tmp_path / "x.parquet").exists()
    # nothing importable: an empty (valid) library and a message
    empty = write_json(tmp_path / "two.geojson", [feature(polygon(0, 0, 1, 1))])
    result = import_qupath([empty], tiles=merged, out=tmp_path / "e.parquet")
    assert result.count == 0 and any("library is empty" in m for m in result.messages)
    back, _ = read_library(tmp_path / "e.parquet")
    assert len(back) == 0


def test_import_qupath_02_style_file(tmp_path: Path) -> None:
    """QuPath 0.2 wrote the type in the feature id, colorRGB and list measurements."""
    manifest = write_manifest_for(tmp_path, cols=1, rows=1, downsample=2.0)
    legacy = {
        "type": "Feature",
        "id": "PathDetectionObject",
        "geometry": polygon(1100, 600, 1196, 696),
        "properties": {
            "classification": {"name": "Tumor", "colorRGB": -3670016},
            "isLocked": False,
            "measurements": [{"name": "sigma", "value": 5.0}, {"name": "pass", "value": 2.0}],
        },
    }
    cell = {
        "type": "Feature",
        "id": "PathCellObject",
        "geometry": polygon(1200, 700, 1296, 796),
        "nucleusGeometry": circle_geometry(1248.0, 748.0, 4.0),
        "properties": {"classification": {"name": "Normal", "colorRGB": -16776961}},
    }
    path = write_json(tmp_path / "slide1.geojson", [legacy, cell])
    result = import_qupath([path], tiles=manifest, out=tmp_path / "lib.parquet", class_names=TUMOR)
    assert result.kept == {"cancer": 1, "normal": 1}
    back, _ = read_library(tmp_path / "lib.parquet")
    row = back[back["label"] == "cancer"].iloc[0]
    assert row["sigma"] == 5.0 and row["pass"] == "he_cancer"
    assert (row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]) == (50, 50, 98, 98)
    normal = back[back["label"] == "normal"].iloc[0]
    assert normal["sigma"] == pytest.approx(4.0 / (math.sqrt(2) * 2.0))


def test_round_trip_library_built_from_real_tile(shared_data: Path, tmp_path: Path) -> None:
    """build_library on the real CAMELYON16 tile, export, read back and import: unchanged."""
    import shutil

    library_module = pytest.importorskip("histolib.library.build")
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    src = shared_data / "tiles" / "roigan"
    shutil.copy(src / "he_000.png", images / "he_000.png")
    shutil.copy(src / "he_mask_000.png", masks / "he_000.png")
    lib_path = library_module.build_library(
        images=images,
        masks=masks,
        stain="he",
        out=tmp_path / "lib.parquet",
        workers=1,
        progress=False,
    )
    library, _ = read_library(lib_path)
    assert len(library) > 0 and set(library["label"]) == {"cancer", "normal"}

    result = export_qupath([lib_path], out=tmp_path / "qp", cells="cell", class_names=TUMOR)
    (record,) = result.files
    cells = read_annotations(record.path)
    assert len(cells) == len(library)
    for a, row in zip(cells, library.itertuples(index=False), strict=True):
        assert np.allclose(a.geometry.bounds, row.geometry.bounds, atol=0.01)
        assert a.class_name == TUMOR[row.label]
        assert a.nucleus.centroid.distance(Point(row.x, row.y)) < 0.01

    # the folder tile as a one-tile manifest, then back into a library
    tile = gpd.GeoDataFrame(
        [
            {
                "tile_id": "he_000",
                "slide_id": "he_000",
                "slide_path": "",
                "x0": 0,
                "y0": 0,
                "size_px": 256,
                "mpp": 0.5,
                "downsample": 1.0,
                "stain": "he",
                "label": "positive",
                "tissue_fraction": 1.0,
                "annotation_fraction": 0.8,
                "path": "images/he_000.png",
            }
        ],
        geometry=[box(0, 0, 256, 256)],
    )
    manifest = write_manifest(tile, tmp_path / "tiles.parquet", params={})
    imported = import_qupath(
        [record.path], tiles=manifest, out=tmp_path / "back.parquet", class_names=TUMOR
    )
    assert imported.count == len(library) and imported.outside == 0
    back, _ = read_library(tmp_path / "back.parquet")
    key = ["box_x0", "box_y0", "label"]
    merged = back.merge(library, on=key, suffixes=("", "_orig"))
    assert len(merged) == len(library)
    for col in ("box_x1", "box_y1", "pass", "tile_id"):
        assert (merged[col] == merged[f"{col}_orig"]).all()
    for col in ("x", "y", "tile_x", "tile_y", "sigma"):
        assert np.allclose(merged[col].astype(float), merged[f"{col}_orig"].astype(float))
