"""Tests of histolib.annotations.xml: ASAP and Aperio ImageScope XML contours, sniffing by
content, CAMELYON16 exclusions, and hostile files (bombs, malformed, bad coordinates)."""

from __future__ import annotations

import gzip
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from histolib.annotations.model import AnnotationWarning
from histolib.annotations.reading import read_annotations_report as read_any_annotations_report
from histolib.annotations.regions import tumour_region
from histolib.annotations.xml import (
    ELLIPSE_VERTICES,
    EXCLUSION_TYPE,
    annotation_format,
    default_positive_classes,
    read_xml_annotations,
    read_xml_annotations_report,
)
from histolib.core.limits import override_limits
from histolib.errors import AnnotationError

# ---------------------------------------------------------------------------------------------
# writers


def asap_annotation(
    points: list[tuple[object, object]],
    *,
    kind: str = "Polygon",
    group: str = "_0",
    name: str = "Annotation 0",
    color: str = "#F4FA58",
    order: list[int] | None = None,
) -> str:
    order = list(range(len(points))) if order is None else order
    coords = "".join(
        f'<Coordinate Order="{o}" X="{x}" Y="{y}" />'
        for o, (x, y) in zip(order, points, strict=True)
    )
    return (
        f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="{color}">'
        f"<Coordinates>{coords}</Coordinates></Annotation>"
    )


def asap_file(path: Path, annotations: list[str], groups: dict[str, str] | None = None) -> Path:
    group_xml = "".join(
        f'<Group Name="{name}" PartOfGroup="None" Color="{color}"><Attributes /></Group>'
        for name, color in (groups or {}).items()
    )
    path.write_text(
        '<?xml version="1.0"?>\n<ASAP_Annotations><Annotations>'
        + "".join(annotations)
        + f"</Annotations><AnnotationGroups>{group_xml}</AnnotationGroups></ASAP_Annotations>"
    )
    return path


def scope_region(
    vertices: list[tuple[object, object]],
    *,
    kind: int = 0,
    negative: bool = False,
    text: str = "",
    region_id: int = 1,
) -> str:
    verts = "".join(f'<Vertex X="{x}" Y="{y}" Z="0" />' for x, y in vertices)
    return (
        f'<Region Id="{region_id}" Type="{kind}" Zoom="1" NegativeROA="{int(negative)}" '
        f'Text="{text}"><Attributes /><Vertices>{verts}</Vertices></Region>'
    )


def scope_layer(
    regions: list[str],
    *,
    name: str = "",
    attribute: tuple[str, str] = ("Description", ""),
    line_color: int = 65280,
    layer_id: int = 1,
) -> str:
    return (
        f'<Annotation Id="{layer_id}" Name="{name}" ReadOnly="0" Type="4" '
        f'LineColor="{line_color}" Visible="1"><Attributes><Attribute Name="{attribute[0]}" '
        f'Id="0" Value="{attribute[1]}" /></Attributes><Regions><RegionAttributeHeaders>'
        '<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1" /></RegionAttributeHeaders>'
        + "".join(regions)
        + "</Regions><Plots /></Annotation>"
    )


def scope_file(path: Path, layers: list[str]) -> Path:
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.252100">'
        + "".join(layers)
        + "</Annotations>"
    )
    return path


SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100)]


def square(x0: float, y0: float, size: float) -> list[tuple[object, object]]:
    return [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]


# ---------------------------------------------------------------------------------------------
# ASAP


def test_asap_points_sorted_by_order_with_decimals(tmp_path: Path) -> None:
    # Listed out of order: file order would draw a self-crossing bow tie.
    points = [(0.5, 0.25), (100.5, 100.25), (100.5, 0.25), (0.5, 100.25)]
    path = asap_file(
        tmp_path / "a.xml", [asap_annotation(points, order=[0, 2, 1, 3])], {"_0": "#ff0000"}
    )
    annotations, notes = read_xml_annotations_report(path)
    assert notes == []
    (only,) = annotations
    assert only.geometry.equals(box(0.5, 0.25, 100.5, 100.25))
    assert only.class_name == "_0" and only.object_type == "annotation"
    assert only.color == (255, 0, 0)  # the group's colour wins over the annotation's
    assert only.name == "Annotation 0" and only.properties["format"] == "asap"


def test_asap_decimal_commas(tmp_path: Path) -> None:
    points = [("10,5", "20,25"), ("110,5", "20,25"), ("110,5", "120,25"), ("10,5", "120,25")]
    path = asap_file(tmp_path / "c.xml", [asap_annotation(points, group="metastases")])
    (only,), _ = read_xml_annotations_report(path)
    assert only.geometry.bounds == (10.5, 20.25, 110.5, 120.25)
    assert only.class_name == "metastases" and only.color == (0xF4, 0xFA, 0x58)


def test_asap_rectangle_spline_and_no_group(tmp_path: Path) -> None:
    path = asap_file(
        tmp_path / "r.xml",
        [
            asap_annotation(square(0, 0, 10), kind="Rectangle", group="None"),
            asap_annotation([(50, 50), (60, 50), (55, 60)], kind="Spline", group="Tumor"),
        ],
    )
    rect, spline = read_xml_annotations(path)
    assert rect.geometry.equals(box(0, 0, 10, 10)) and rect.class_name is None
    assert spline.geometry.area == pytest.approx(50.0) and spline.class_name == "Tumor"


def test_asap_dots_skipped_with_counted_note(tmp_path: Path) -> None:
    path = asap_file(
        tmp_path / "d.xml",
        [
            asap_annotation(SQUARE),
            asap_annotation([(5, 5)], kind="Dot"),
            asap_annotation([(6, 6)], kind="Dot"),
            asap_annotation([(1, 1), (2, 2), (3, 1)], kind="PointSet"),
        ],
    )
    annotations, notes = read_xml_annotations_report(path)
    assert len(annotations) == 1
    assert notes == [
        "skipped 2 object(s) of type Dot (not a region)",
        "skipped 1 object(s) of type PointSet (not a region)",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_xml_annotations(path)
    assert [str(w.message) for w in caught] == [f"{path}: {note}" for note in notes]
    assert all(w.category is AnnotationWarning for w in caught)


def _read_asap(
    path: Path, *annotations: str, groups: dict[str, str] | None = None
) -> tuple[list[Any], list[str]]:
    """Write an ASAP file of ``annotations`` (and ``groups``) and read it back with its notes."""
    return read_xml_annotations_report(asap_file(path, list(annotations), groups))


def test_camelyon16_exclusion_is_cut_out_of_the_tumour(tmp_path: Path) -> None:
    annotations, notes = _read_asap(
        tmp_path / "tumor_001.xml",
        asap_annotation(square(0, 0, 1000), group="_0", name="Annotation 0"),
        asap_annotation(square(2000, 0, 100), group="_1", name="Annotation 1"),
        asap_annotation(square(400, 400, 200), group="_2", name="Annotation 2"),
        groups={"_0": "#ff0000", "_1": "#ff0000", "_2": "#00ff00"},
    )
    assert [a.object_type for a in annotations] == ["annotation", "annotation", EXCLUSION_TYPE]
    assert any("cut 1 exclusion region(s)" in n for n in notes)
    assert default_positive_classes(annotations) == ("_0", "_1")
    inside_hole = Point(500, 500)
    for classes in (None, default_positive_classes(annotations), ("_0",)):
        region = tumour_region(annotations, classes=classes)
        assert not region.contains(inside_hole), classes
        assert region.contains(Point(100, 100))
        assert region.area == pytest.approx(
            1000 * 1000 - 200 * 200 + (100 * 100 if classes != ("_0",) else 0)
        )
    # The exclusion object keeps its drawn geometry.
    assert annotations[2].geometry.equals(box(400, 400, 600, 600))


def test_camelyon16_tumour_wholly_inside_an_exclusion_is_dropped(tmp_path: Path) -> None:
    annotations, notes = _read_asap(
        tmp_path / "t.xml",
        asap_annotation(square(10, 10, 5), group="_1"),
        asap_annotation(square(0, 0, 100), group="_2"),
    )
    assert [a.object_type for a in annotations] == [EXCLUSION_TYPE]
    assert "dropped 1 tumour contour(s) lying wholly inside exclusions" in notes
    assert tumour_region(annotations) is None


def test_camelyon16_test_set_groups_tumor_and_exclusion(tmp_path: Path) -> None:
    annotations, notes = _read_asap(
        tmp_path / "test_001.xml",
        asap_annotation(square(0, 0, 1000), group="Tumor"),
        asap_annotation(square(400, 400, 200), group="Exclusion"),
        groups={"Tumor": "#64FE2E", "Exclusion": "#FF0000"},
    )
    assert [a.object_type for a in annotations] == ["annotation", EXCLUSION_TYPE]
    assert "cut 1 exclusion region(s) (CAMELYON16 group Exclusion) out of the Tumor tumour" in (
        " ".join(notes)
    )
    assert default_positive_classes(annotations) == ("Tumor",)
    for classes in (None, ("Tumor",)):
        region = tumour_region(annotations, classes=classes)
        assert not region.contains(Point(500, 500))
        assert region.area == pytest.approx(1000 * 1000 - 200 * 200)


def test_no_camelyon16_convention_for_other_groups(tmp_path: Path) -> None:
    annotations, notes = _read_asap(
        tmp_path / "o.xml",
        asap_annotation(square(0, 0, 100), group="metastases"),
        asap_annotation(square(10, 10, 10), group="_2"),
    )
    assert [a.object_type for a in annotations] == ["annotation", "annotation"]
    assert notes == [] and default_positive_classes(annotations) is None
    assert annotations[0].geometry.area == pytest.approx(100 * 100)


# ---------------------------------------------------------------------------------------------
# ImageScope


def test_imagescope_polygon_rectangle_ellipse(tmp_path: Path) -> None:
    layer = scope_layer(
        [
            scope_region([(0, 0), (10.5, 0), (10.5, 10), (0, 10)], kind=0, region_id=1),
            scope_region(square(100, 100, 50), kind=1, region_id=2),
            scope_region([(200, 300), (400, 400)], kind=2, region_id=3),
        ],
        name="Tumor",
        line_color=255,
    )
    path = scope_file(tmp_path / "s.xml", [layer])
    annotations, notes = read_xml_annotations_report(path)
    assert notes == []
    poly, rect, ellipse = annotations
    assert poly.geometry.area == pytest.approx(105.0)
    assert rect.geometry.equals(box(100, 100, 150, 150))
    assert len(ellipse.geometry.exterior.coords) == ELLIPSE_VERTICES + 1
    assert ellipse.geometry.bounds == pytest.approx((200, 300, 400, 400))
    assert ellipse.geometry.area == pytest.approx(math.pi * 100 * 50, rel=0.01)
    assert {a.class_name for a in annotations} == {"Tumor"}
    assert poly.color == (255, 0, 0)  # LineColor 255 is red in a COLORREF
    assert poly.properties["MicronsPerPixel"] == "0.252100" and poly.id == "1/1"


def test_imagescope_negative_roa_is_a_hole_of_its_own_annotation(tmp_path: Path) -> None:
    tumour = scope_layer(
        [
            scope_region(square(0, 0, 100), region_id=1),
            scope_region(square(40, 40, 20), negative=True, region_id=2),
        ],
        name="Tumor",
        layer_id=1,
    )
    # Another annotation's region under the hole is not cut: holes stay in their annotation.
    other = scope_layer([scope_region(square(45, 45, 10), region_id=1)], name="Stroma", layer_id=2)
    path = scope_file(tmp_path / "n.xml", [tumour, other])
    annotations, notes = read_xml_annotations_report(path)
    assert notes == ["cut 1 negative region(s) (NegativeROA) out as holes"]
    assert [a.class_name for a in annotations] == ["Tumor", "Stroma"]
    region = tumour_region(annotations, classes=["tumor"])
    assert not region.contains(Point(50, 50)) and region.contains(Point(10, 10))
    assert region.area == pytest.approx(100 * 100 - 20 * 20)
    assert annotations[1].geometry.area == pytest.approx(100)


def test_imagescope_negative_outside_every_region_is_counted(tmp_path: Path) -> None:
    layer = scope_layer(
        [scope_region(SQUARE), scope_region(square(500, 500, 10), negative=True, region_id=2)]
    )
    annotations, notes = read_xml_annotations_report(scope_file(tmp_path / "x.xml", [layer]))
    assert len(annotations) == 1 and annotations[0].geometry.area == pytest.approx(10000)
    assert notes == [
        "skipped 1 negative region(s) (NegativeROA) that overlap no region of their annotation"
    ]


def test_imagescope_class_sources_and_skipped_types(tmp_path: Path) -> None:
    layers = [
        scope_layer([scope_region(SQUARE, text="ignored")], name="Named", layer_id=1),
        scope_layer([scope_region(SQUARE)], attribute=("Description", "Necrosis"), layer_id=2),
        scope_layer([scope_region(SQUARE)], attribute=("Lymphocytes", ""), layer_id=3),
        scope_layer(
            [
                scope_region(SQUARE, text="Mitosis"),
                scope_region([(0, 0), (5, 5)], kind=3, region_id=2),
                scope_region([(0, 0), (5, 5)], kind=4, region_id=3),
                scope_region([(0, 0), (5, 5)], kind=4, region_id=4),
            ],
            layer_id=4,
        ),
        scope_layer([scope_region(SQUARE)], layer_id=5),
    ]
    annotations, notes = read_xml_annotations_report(scope_file(tmp_path / "k.xml", layers))
    assert [a.class_name for a in annotations] == [
        "Named",
        "Necrosis",
        "Lymphocytes",
        "Mitosis",
        None,
    ]
    assert notes == [
        "skipped 1 object(s) of region arrow (not a region)",
        "skipped 2 object(s) of region ruler (not a region)",
    ]
    assert default_positive_classes(annotations) is None


# ---------------------------------------------------------------------------------------------
# bad objects and bad files


def test_bad_objects_are_skipped_and_counted(tmp_path: Path) -> None:
    path = asap_file(
        tmp_path / "bad.xml",
        [
            asap_annotation(SQUARE),
            asap_annotation([(0, 0), (1, 1)]),  # two points
            asap_annotation([(0, 0), ("abc", 1), (2, 2)]),
            asap_annotation([(0, 0), ("NaN", 1), (2, 2)]),
            asap_annotation([(0, 0), ("inf", 1), (2, 2)]),
            asap_annotation([(0, 0), ("1_000", 1), (2, 2)]),
            asap_annotation([(0, 0), ("1,000.5", 1), (2, 2)]),
            asap_annotation([(0, 0), (1, 1), (2, 2)]),  # collinear: no area
            asap_annotation([]),  # no coordinates
            asap_annotation([(0, 0), (10, 10), (10, 0), (0, 10)]),  # bow tie: repaired
        ],
    )
    annotations, notes = read_xml_annotations_report(path)
    assert len(annotations) == 2
    assert notes == [
        "skipped 1 object(s) with an empty or degenerate geometry",
        "skipped 2 object(s) with fewer than 3 points",
        "skipped 5 object(s) with non-numeric or non-finite coordinates",
        "repaired 1 invalid geometry",
    ]


def test_billion_laughs_is_refused_in_one_line(tmp_path: Path) -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        f'<?xml version="1.0"?><!DOCTYPE ASAP_Annotations [{entities}]>'
        '<ASAP_Annotations><Annotations><Annotation Name="&lol9;" Type="Polygon"/>'
        "</Annotations></ASAP_Annotations>"
    )
    for call in (read_xml_annotations_report, annotation_format, read_any_annotations_report):
        with pytest.raises(AnnotationError, match=r"refused XML.*DTDForbidden") as info:
            call(bomb)
        assert str(info.value).startswith(str(bomb)) and "\n" not in str(info.value)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("1")
    path = tmp_path / "xxe.xml"
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<ASAP_Annotations><Annotations><Annotation Type="Polygon"><Coordinates>'
        '<Coordinate Order="0" X="&x;" Y="0"/></Coordinates></Annotation></Annotations>'
        "</ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="refused XML"):
        read_xml_annotations_report(path)


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE ASAP_Annotations SYSTEM "http://127.0.0.1:9/asap.dtd">',
        '<!DOCTYPE ASAP_Annotations PUBLIC "-//x//y" "asap.dtd">',
        "<!DOCTYPE ASAP_Annotations []>",
    ],
)
def test_any_dtd_is_refused_and_nothing_is_fetched(tmp_path: Path, doctype: str) -> None:
    """The issue: an external DTD parsed (nothing fetched) where the README says DTDs are
    refused."""
    path = tmp_path / "dtd.xml"
    body = "<ASAP_Annotations><Annotations/></ASAP_Annotations>"
    path.write_text(f'<?xml version="1.0"?>{doctype}{body}')
    for call in (read_xml_annotations_report, annotation_format, read_any_annotations_report):
        with pytest.raises(AnnotationError, match=r"refused XML: it has a DTD.*DTDForbidden"):
            call(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<ASAP_Annotations><Annotations>", r"not well-formed XML at line 1, column \d+"),
        ("<ASAP_Annotations><a></b></ASAP_Annotations>", "not well-formed XML at line 1"),
        ("", r"not ASAP or ImageScope XML \(empty file\)"),
        ('{"type": "FeatureCollection"}', "GeoJSON"),
        ("<svg><rect/></svg>", r"XML of an unknown kind \(root element <svg>\)"),
        ("<Annotations><Foo/></Annotations>", r"unknown kind \(root element <Annotations>\)"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as info:
        read_xml_annotations_report(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_folder_and_oversized(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        annotation_format(tmp_path / "absent.xml")
    with pytest.raises(AnnotationError, match="is a folder"):
        read_xml_annotations_report(tmp_path)
    path = asap_file(tmp_path / "big.xml", [asap_annotation(SQUARE)] * 20)
    zipped = tmp_path / "big.xml.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))  # small on disk, large inside
    assert zipped.stat().st_size < 1000 < path.stat().st_size
    with override_limits(annotation_bytes=1000):
        with pytest.raises(AnnotationError, match=r"larger than the 1000 bytes limit"):
            read_xml_annotations_report(path)
        for call in (read_xml_annotations_report, annotation_format):
            with pytest.raises(AnnotationError, match="larger than the 1000 bytes limit"):
                call(zipped)


def test_empty_files_of_both_dialects_read_as_no_objects(tmp_path: Path) -> None:
    asap = asap_file(tmp_path / "a.xml", [])
    scope = scope_file(tmp_path / "s.xml", [scope_layer([])])
    assert annotation_format(asap) == "asap" and annotation_format(scope) == "imagescope"
    assert read_xml_annotations_report(asap) == ([], [])
    assert read_xml_annotations_report(scope) == ([], [])


# ---------------------------------------------------------------------------------------------
# sniffing by content


def test_format_is_chosen_by_content_not_name(tmp_path: Path) -> None:
    asap = asap_file(tmp_path / "slide.geojson", [asap_annotation(SQUARE)])
    scope = scope_file(tmp_path / "slide.json", [scope_layer([scope_region(SQUARE)])])
    geojson = tmp_path / "slide.xml"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": json.loads(shapely.to_geojson(box(0, 0, 5, 5))),
                        "properties": {"classification": {"name": "Tumor"}},
                    }
                ],
            }
        )
    )
    zipped = tmp_path / "slide.bin"
    zipped.write_bytes(gzip.compress(b"\xef\xbb\xbf" + asap.read_bytes()))
    assert annotation_format(asap) == "asap"
    assert annotation_format(scope) == "imagescope"
    assert annotation_format(geojson) == "geojson"
    assert annotation_format(zipped) == "asap"
    for path, area, cls in ((asap, 10000, "_0"), (scope, 10000, None), (geojson, 25, "Tumor")):
        (only,), _ = read_any_annotations_report(path)
        assert only.geometry.area == pytest.approx(area) and only.class_name == cls
    with pytest.raises(AnnotationError, match="GeoJSON"):
        read_xml_annotations_report(geojson)


def test_sniffing_stops_at_the_first_region(tmp_path: Path) -> None:
    # A well-formed prefix decides: the broken tail is only an error for the reader.
    path = tmp_path / "s.xml"
    path.write_text(
        "<Annotations><Annotation><Regions>"
        + scope_region(SQUARE)
        + "<Region><broken></Annotations>"
    )
    assert annotation_format(path) == "imagescope"
    with pytest.raises(AnnotationError, match="not well-formed"):
        read_xml_annotations_report(path)


# ---------------------------------------------------------------------------------------------
# property: any bytes give annotations or one AnnotationError

FRAGMENTS = [
    "<ASAP_Annotations>",
    "</ASAP_Annotations>",
    "<Annotations>",
    "</Annotations>",
    '<Annotation Type="Polygon" PartOfGroup="_0">',
    '<Annotation Type="Dot" PartOfGroup="_2">',
    '<Annotation Name="" LineColor="-7">',
    "</Annotation>",
    "<Coordinates>",
    "</Coordinates>",
    '<Coordinate Order="1" X="1,5" Y="2"/>',
    '<Coordinate Order="x" X="3" Y="4"/>',
    '<Coordinate X="1e308" Y="-1e308"/>',
    "<Regions>",
    "</Regions>",
    '<Region Type="2" NegativeROA="1">',
    '<Region Type="0">',
    "</Region>",
    "<Vertices>",
    "</Vertices>",
    '<Vertex X="0" Y="0"/>',
    '<Vertex X="5" Y="nan"/>',
    '<Vertex X="9" Y="3"/>',
    '<!DOCTYPE a [<!ENTITY e "x">]>',
    "&e;",
    '<?xml version="1.0" encoding="latin-1"?>',
    "\xef\xbb\xbf",
    "{",
    "]",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8), st.binary(max_size=8)),
        max_size=30,
    )
)
def test_random_xmlish_bytes_read_or_annotation_error(tmp_path: Path, parts: list) -> None:
    data = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
    path = tmp_path / "fuzz.xml"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in (read_xml_annotations_report, annotation_format, read_any_annotations_report):
            try:
                result = call(path)
            except AnnotationError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(str(path))
            else:
                assert result is not None
