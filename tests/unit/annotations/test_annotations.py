"""Tests of histolib.annotations: tolerant QuPath GeoJSON reading, regions, rasterisation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon, box

from histolib.annotations.geojson import unpack_rgb
from histolib.annotations.model import AnnotationWarning, polygonal_part
from histolib.annotations.reading import (
    find_annotation_file,
    read_annotations,
    read_annotations_report,
)
from histolib.annotations.regions import (
    check_inside,
    outside_slide,
    rasterize,
    summarize,
    tumour_region,
)
from histolib.errors import AnnotationError
from tests.helpers_qupath import feature, polygon, ring, write_json

# ---------------------------------------------------------------------------------------------
# real QuPath exports


def test_reads_every_real_qupath_export(shared_data: Path) -> None:
    files = sorted((shared_data / "annotations").iterdir())
    assert len(files) >= 2
    for path in files:
        annotations, _notes = read_annotations_report(path)
        assert annotations, path
        for a in annotations:
            assert a.geometry.is_valid and not a.geometry.is_empty
            assert a.object_type == "annotation"


def test_qupath05_export(shared_data: Path) -> None:
    annotations = read_annotations(shared_data / "annotations" / "qupath05.geojson")
    assert [a.name for a in annotations] == ["UT", "I", "I"]
    assert all(a.geometry.geom_type == "Polygon" for a in annotations)
    assert all(a.color == (255, 0, 0) for a in annotations)
    assert annotations[0].id == "6423a977-ffff-48db-affc-cd11632010f0"
    region = tumour_region(annotations)
    assert region is not None
    assert region.area == pytest.approx(shapely.union_all([a.geometry for a in annotations]).area)


def test_points_kept_but_skipped_for_regions(shared_data: Path) -> None:
    annotations = read_annotations(shared_data / "annotations" / "annotated_regions_Qupath.geojson")
    kinds = [a.geometry.geom_type for a in annotations]
    assert kinds.count("Point") == 3 and kinds.count("Polygon") == 2
    with pytest.warns(AnnotationWarning, match=r"3 annotation\(s\) are not regions.*3 Point"):
        region = tumour_region(annotations)
    assert region.geom_type == "MultiPolygon"
    assert region.area == pytest.approx(sum(a.geometry.area for a in annotations if a.is_region))


# ---------------------------------------------------------------------------------------------
# document shapes and file kinds


def _fc(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


@pytest.mark.parametrize("shape_kind", ["collection", "array", "feature", "geometry", "no_type"])
def test_document_shapes(tmp_path: Path, shape_kind: str) -> None:
    geom = polygon(0, 0, 10, 10)
    feat = feature(geom, objectType="annotation", classification={"name": "Tumor"})
    doc = {
        "collection": _fc(feat),
        "array": [feat],
        "feature": feat,
        "geometry": geom,
        "no_type": {"features": [feat]},
    }[shape_kind]
    (annotation,) = read_annotations(write_json(tmp_path / "a.geojson", doc))
    assert annotation.geometry.equals(box(0, 0, 10, 10))
    assert annotation.object_type == "annotation"
    assert annotation.class_name == (None if shape_kind == "geometry" else "Tumor")


@pytest.mark.parametrize("name", ["a.json", "a.geojson.gz", "a.json.gz", "gz_named.geojson"])
def test_file_kinds(tmp_path: Path, name: str) -> None:
    gz = name.endswith(".gz") or name.startswith("gz_")
    path = write_json(tmp_path / name, _fc(feature(polygon(0, 0, 5, 5))), gz=gz)
    (annotation,) = read_annotations(path)
    assert annotation.geometry.area == 25


def test_empty_collection(tmp_path: Path) -> None:
    assert read_annotations(write_json(tmp_path / "e.geojson", _fc())) == []
    assert read_annotations(write_json(tmp_path / "e2.geojson", [])) == []


# ---------------------------------------------------------------------------------------------
# properties: types, classes, measurements, nuclei, duplicates


@pytest.mark.parametrize(
    ("props", "fid", "expected"),
    [
        ({"objectType": "detection"}, None, "detection"),
        ({"object_type": "cell"}, None, "cell"),
        ({"type": "tile"}, None, "tile"),
        ({}, "PathDetectionObject", "detection"),
        ({}, "PathCellObject", "cell"),
        ({}, "PathTileObject", "tile"),
        ({}, "PathAnnotationObject", "annotation"),
        ({}, "1b7e4a4e-0000-4000-8000-000000000000", "annotation"),
        ({"objectType": "Annotation"}, None, "annotation"),
    ],
)
def test_object_type_spellings(tmp_path: Path, props: dict, fid: str | None, expected: str) -> None:
    feat = feature(polygon(0, 0, 4, 4), **props)
    if fid is not None:
        feat["id"] = fid
    (annotation,) = read_annotations(write_json(tmp_path / "t.geojson", [feat]))
    assert annotation.object_type == expected
    assert annotation.id == (fid if fid and not fid.startswith("Path") else None)


@pytest.mark.parametrize(
    ("classification", "name", "color"),
    [
        ({"name": "Tumor", "color": [200, 0, 0]}, "Tumor", (200, 0, 0)),
        ("Stroma", "Stroma", None),
        ({"name": "Tumor", "colorRGB": -3670016}, "Tumor", (200, 0, 0)),
        ({"names": ["Tumor", "Positive"], "color": [1, 2, 3]}, "Tumor: Positive", (1, 2, 3)),
        (None, None, None),
        ({"name": ""}, None, None),
    ],
)
def test_classification_forms(tmp_path: Path, classification, name, color) -> None:
    feat = feature(polygon(0, 0, 4, 4), classification=classification)
    (annotation,) = read_annotations(write_json(tmp_path / "c.geojson", [feat]))
    assert annotation.class_name == name
    assert annotation.color == color


def test_unpack_rgb() -> None:
    assert unpack_rgb(-16711936) == (0, 255, 0)
    assert unpack_rgb(0xFF0000) == (255, 0, 0)


def test_measurements_flat_and_legacy(tmp_path: Path) -> None:
    flat = feature(polygon(0, 0, 4, 4), measurements={"Area": 16, "Bad": "NaN", "txt": "x"})
    legacy = feature(
        polygon(0, 0, 4, 4),
        measurements=[{"name": "Area", "value": 16.0}, {"name": "Perimeter", "value": 16}],
    )
    a, b = read_annotations(write_json(tmp_path / "m.geojson", [flat, legacy]))
    assert a.measurements["Area"] == 16.0 and np.isnan(a.measurements["Bad"])
    assert "txt" not in a.measurements
    assert b.measurements == {"Area": 16.0, "Perimeter": 16.0}


def test_nucleus_geometry_beside_or_inside_properties(tmp_path: Path) -> None:
    cell = feature(polygon(0, 0, 20, 20), objectType="cell")
    cell["nucleusGeometry"] = polygon(5, 5, 15, 15)
    cell2 = feature(polygon(0, 0, 20, 20), object_type="cell", nucleusGeometry=polygon(8, 8, 9, 9))
    a, b = read_annotations(write_json(tmp_path / "n.geojson", [cell, cell2]))
    assert a.nucleus.equals(box(5, 5, 15, 15))
    assert b.nucleus.area == 1


def test_duplicate_keys_merge(tmp_path: Path) -> None:
    # QuPath 0.5.1 to 0.7.0 write "metadata" twice inside properties.
    text = (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "x",'
        ' "geometry": {"type": "Polygon", "coordinates": [[[0,0],[3,0],[3,3],[0,3],[0,0]]]},'
        ' "properties": {"objectType": "annotation", "metadata": {"a": "1"},'
        ' "classification": {"name": "Other", "color": [1,1,1]},'
        ' "metadata": {"b": "2"}, "name": "first", "name": "second"}}]}'
    )
    path = tmp_path / "dup.geojson"
    path.write_text(text)
    (annotation,) = read_annotations(path)
    assert annotation.properties["metadata"] == {"a": "1", "b": "2"}
    assert annotation.name == "second"
    assert annotation.class_name == "Other"


# ---------------------------------------------------------------------------------------------
# geometry kinds and repair


def test_holes_multipolygons_lines(tmp_path: Path) -> None:
    holed = feature(polygon(0, 0, 100, 100, ring(40, 40, 60, 60)), classification="Tumor")
    multi = feature(
        {
            "type": "MultiPolygon",
            "coordinates": [[ring(200, 0, 210, 10)], [ring(300, 0, 310, 10)]],
        },
        classification="Tumor",
    )
    line = feature(
        {"type": "LineString", "coordinates": [[0, 0], [50, 50]]}, classification="Tumor"
    )
    coll = feature(
        {
            "type": "GeometryCollection",
            "geometries": [polygon(400, 0, 410, 10), {"type": "Point", "coordinates": [1, 1]}],
        },
        classification="Tumor",
    )
    annotations = read_annotations(write_json(tmp_path / "g.geojson", [holed, multi, line, coll]))
    assert [a.geometry.geom_type for a in annotations] == [
        "Polygon",
        "MultiPolygon",
        "LineString",
        "GeometryCollection",
    ]
    assert annotations[0].geometry.area == 100 * 100 - 20 * 20
    with pytest.warns(AnnotationWarning, match="1 LineString"):
        region = tumour_region(annotations, classes=["tumor"])
    assert region.area == pytest.approx(9600 + 200 + 100)
    assert not region.contains(Point(50, 50))


def test_invalid_ring_repaired(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    with pytest.warns(AnnotationWarning, match="repaired 1 invalid geometry"):
        (annotation,) = read_annotations(write_json(tmp_path / "b.geojson", [feature(bowtie)]))
    assert annotation.geometry.is_valid
    assert annotation.geometry.geom_type == "MultiPolygon"
    assert annotation.geometry.area == pytest.approx(50)


def test_skips_objects_without_geometry(tmp_path: Path) -> None:
    root = {"type": "Feature", "geometry": None, "properties": {"objectType": "root"}}
    empty = feature({"type": "Polygon", "coordinates": []})
    ok = feature(polygon(0, 0, 2, 2))
    annotations, notes = read_annotations_report(
        write_json(tmp_path / "s.geojson", [root, ok, empty])
    )
    assert len(annotations) == 1
    assert "skipped 1 object(s) without geometry" in notes
    assert "skipped 1 object(s) with an empty or degenerate geometry" in notes


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x,y\n1,2\n", "invalid JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8"),
        (b"", "empty file"),
        (b'{"type": "Topology"}', "Topology"),
        (b"42", "top-level int"),
        (b'{"type": "FeatureCollection", "features": {}}', "not an array"),
        (b'[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": 3}}]', "feature 0"),
        (b'[{"type": "Feature", "geometry": {"type": "Circle"}}]', "feature 0"),
        (b"[1, 2]", "feature 0"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage", "cannot read file"),
    ],
)
def test_not_geojson_is_one_line_error_naming_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotations(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        read_annotations(tmp_path / "absent.geojson")
    with pytest.raises(AnnotationError, match="is a folder"):
        read_annotations(tmp_path)


def test_find_annotation_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "my.slide.geojson", _fc())
    assert find_annotation_file(path, "whatever") == path
    assert find_annotation_file(tmp_path, "my.slide") == path
    assert find_annotation_file(tmp_path, "other") is None
    gz = write_json(tmp_path / "z.geojson.gz", _fc(), gz=True)
    assert find_annotation_file(tmp_path, "z") == gz
    with pytest.raises(AnnotationError):
        find_annotation_file(tmp_path / "nope", "x")


# ---------------------------------------------------------------------------------------------
# region selection


def test_tumour_region_class_selection(tmp_path: Path) -> None:
    doc = [
        feature(polygon(0, 0, 10, 10), objectType="annotation", classification={"name": "Tumor"}),
        feature(polygon(5, 0, 15, 10), classification={"names": ["Tumor", "Positive"]}),
        feature(polygon(100, 0, 110, 10), classification="Stroma"),
        feature(polygon(200, 0, 210, 10)),
        feature(polygon(300, 0, 310, 10), objectType="detection", classification="Tumor"),
    ]
    annotations = read_annotations(write_json(tmp_path / "r.geojson", doc))
    tumour = tumour_region(annotations, classes=["TUMOR"])
    assert tumour.area == pytest.approx(150)
    everything = tumour_region(annotations)
    assert everything.area == pytest.approx(150 + 100 + 100)
    assert tumour_region(annotations, classes=["Necrosis"]) is None
    assert tumour_region([]) is None


# ---------------------------------------------------------------------------------------------
# rasterisation


def _brute(geometry, *, x0, y0, downsample, shape):
    rows, cols = shape
    out = np.zeros(shape, dtype=bool)
    for r in range(rows):
        for c in range(cols):
            p = Point(x0 + (c + 0.5) * downsample, y0 + (r + 0.5) * downsample)
            out[r, c] = geometry.intersects(p)
    return out


def test_rasterize_convention_and_holes() -> None:
    geom = Polygon(ring(10, 10, 50, 50), [ring(20, 20, 30, 30)])
    mask = rasterize(geom, x0=0, y0=0, downsample=1.0, shape=(64, 80))
    assert mask.shape == (64, 80) and mask.dtype == bool
    # pixel (row, col) = (y, x); centres 10.5 .. 49.5 inside, hole 20.5 .. 29.5 excluded
    assert mask[10, 10] and mask[49, 49] and not mask[9, 10] and not mask[10, 50]
    assert not mask[25, 25] and mask[19, 25] and not mask[20, 25]
    assert mask.sum() == 40 * 40 - 10 * 10
    # x / y are not swapped
    tall = box(0, 0, 5, 60)
    m = rasterize(tall, x0=0, y0=0, downsample=1.0, shape=(64, 64))
    assert m[:, :5].sum() == 60 * 5 and m[:, 5:].sum() == 0


def test_rasterize_downsample_origin_and_trivial_cases() -> None:
    geom = box(1000, 2000, 1100, 2100)
    mask = rasterize(geom, x0=1000, y0=2000, downsample=4.0, shape=(32, 32))
    assert mask[:25, :25].all() and mask.sum() == 25 * 25
    assert rasterize(None, x0=0, y0=0, downsample=1, shape=(8, 8)).sum() == 0
    assert rasterize(box(-1e6, -1e6, 1e6, 1e6), x0=5, y0=5, downsample=2, shape=(8, 4)).all()
    assert not rasterize(box(500, 500, 600, 600), x0=0, y0=0, downsample=1, shape=(8, 8)).any()
    assert not rasterize(Point(3, 3), x0=0, y0=0, downsample=1, shape=(8, 8)).any()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=3, max_size=9, unique=True
    ),
    st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    st.integers(-20, 20),
    st.integers(-20, 20),
)
def test_rasterize_matches_point_tests(points, downsample, x0, y0) -> None:
    geom = shapely.make_valid(Polygon(points))
    shape = (24, 20)
    region = polygonal_part(geom)  # collinear points leave a line: not a region
    expected = (
        np.zeros(shape, dtype=bool)
        if region is None
        else _brute(region, x0=x0, y0=y0, downsample=downsample, shape=shape)
    )
    got = rasterize(geom, x0=x0, y0=y0, downsample=downsample, shape=shape)
    assert np.array_equal(got, expected)


def test_rasterize_real_contour(shared_data: Path) -> None:
    annotations = read_annotations(shared_data / "annotations" / "qupath05.geojson")
    region = tumour_region(annotations)
    minx, miny, _, _ = region.bounds
    kwargs = {"x0": minx + 40, "y0": miny + 40, "downsample": 1.5, "shape": (48, 40)}
    assert np.array_equal(rasterize(region, **kwargs), _brute(region, **kwargs))


# ---------------------------------------------------------------------------------------------
# checks and summaries


def test_check_inside_and_summary(tmp_path: Path) -> None:
    doc = [
        feature(polygon(10, 10, 100, 100), classification={"name": "Tumor", "color": [1, 2, 3]}),
        feature({"type": "Point", "coordinates": [50, 50]}, objectType="annotation"),
        feature(polygon(20, 20, 30, 30), objectType="detection", classification="Tumor"),
    ]
    annotations = read_annotations(write_json(tmp_path / "c.geojson", doc))
    check_inside(annotations, (200, 200))
    check_inside(annotations, (100, 100))
    edge = read_annotations(write_json(tmp_path / "e.geojson", [feature(polygon(0, 0, 1005, 9))]))
    check_inside(edge, (1000, 1000))  # crossing the border by 0.5%: within the 1% tolerance
    with pytest.raises(AnnotationError):
        check_inside(edge, (1000, 1000), tolerance=0.0)
    assert outside_slide(annotations, (50, 50)) == [0]
    with pytest.raises(AnnotationError, match=r"1 of 3 contour\(s\) lie outside the slide") as info:
        check_inside(annotations, (50, 50), path=tmp_path / "c.geojson")
    assert str(info.value).startswith(str(tmp_path / "c.geojson"))
    summary = summarize(annotations, slide_dimensions=(60, 60))
    assert summary["count"] == 3
    assert summary["by_type"] == {"annotation": 2, "detection": 1}
    assert summary["by_class"] == {"(none)": 1, "Tumor": 2}
    assert summary["by_geometry"] == {"Point": 1, "Polygon": 2}
    assert summary["bounds"] == [10.0, 10.0, 100.0, 100.0]
    assert summary["outside"] == 1 and summary["inside"] is False
    json.dumps(summary)


def test_read_annotations_warns_once_per_reason(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    doc = [feature(bowtie), feature(bowtie), {"type": "Feature", "geometry": None}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotations = read_annotations(write_json(tmp_path / "w.geojson", doc))
    assert len(annotations) == 2
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "repaired 2 invalid geometries" in messages[0]
    assert "skipped 1 object(s) without geometry" in messages[1]
