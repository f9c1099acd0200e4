"""Fuzzing what users hand histolib: annotation files (QuPath GeoJSON, ASAP XML, Aperio
ImageScope XML; plain and gzip-compressed) and option values (from the command line, ``--set``,
parameter files, the limits). Every input ends in a result or a one-line ``HistolibError``,
never another exception, and in bounded memory."""

from __future__ import annotations

import gzip
import json
import math
import tracemalloc
import warnings
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histolib.annotations.geojson import GEOMETRY_TYPES as READER_GEOMETRY_TYPES
from histolib.annotations.reading import read_annotations_report
from histolib.core.limits import override_limits
from histolib.core.options import build_options, coerce_value, option_specs
from histolib.errors import HistolibError
from histolib.library.params import LibraryParams, resolve_params
from histolib.tiling.options import TilingOptions

#: Python memory one small input may cost (the inputs are at most a few kB).
MEMORY_BOUND = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def ends_well(call: Any, *args: Any, path: Path | None = None, **kwargs: Any) -> Any:
    """Run ``call``: a result, or a one-line HistolibError (naming ``path`` when given), with
    bounded memory. Any other exception fails the test."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = call(*args, **kwargs)
            except HistolibError as exc:
                message = str(exc)
                assert "\n" not in message and message.strip(), repr(message)
                if path is not None:
                    assert message.startswith(str(path)), message
                result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak
    return result


# ----------------------------------------------------------------------------- GeoJSON

NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324]),
)
JUNK = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=12), st.just([]), st.just({}))
POSITION = st.one_of(st.lists(NUMBERS, min_size=0, max_size=4), JUNK, st.lists(JUNK, max_size=3))
RING = st.one_of(st.lists(POSITION, max_size=8), JUNK)
#: The reader's geometry types, plus names it must refuse.
GEOMETRY_TYPES = [*READER_GEOMETRY_TYPES, "Feature", "Nope", ""]


@st.composite
def geometries(draw: Any, depth: int = 0) -> Any:
    kind = draw(st.sampled_from(GEOMETRY_TYPES))
    if kind == "GeometryCollection" and depth < 2:
        return {"type": kind, "geometries": draw(st.lists(geometries(depth + 1), max_size=3))}
    shape = {
        "Point": POSITION,
        "MultiPoint": st.lists(POSITION, max_size=4),
        "LineString": st.lists(POSITION, max_size=5),
        "MultiLineString": st.lists(st.lists(POSITION, max_size=4), max_size=3),
        "Polygon": st.lists(RING, max_size=3),
        "MultiPolygon": st.lists(st.lists(RING, max_size=2), max_size=3),
    }.get(kind, JUNK)
    return {"type": kind, "coordinates": draw(shape)}


CLASSIFICATION = st.one_of(
    JUNK,
    st.fixed_dictionaries(
        {},
        optional={
            "name": JUNK,
            "names": st.lists(JUNK, max_size=3),
            "color": JUNK,
            "colorRGB": NUMBERS,
        },
    ),
)
PROPERTIES = st.one_of(
    JUNK,
    st.fixed_dictionaries(
        {},
        optional={
            "objectType": st.sampled_from(["annotation", "detection", "cell", "tile", "x", ""]),
            "object_type": JUNK,
            "classification": CLASSIFICATION,
            "name": JUNK,
            "color": JUNK,
            "measurements": st.one_of(
                JUNK,
                st.dictionaries(st.text(max_size=5), JUNK, max_size=3),
                st.lists(st.fixed_dictionaries({"name": JUNK, "value": JUNK}), max_size=3),
            ),
            "nucleusGeometry": st.one_of(JUNK, geometries()),
        },
    ),
)


@st.composite
def features(draw: Any) -> Any:
    item = draw(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["Feature", "feature", "Polygon", ""])},
            optional={
                "geometry": st.one_of(JUNK, geometries()),
                "properties": PROPERTIES,
                "id": st.one_of(JUNK, st.sampled_from(["PathAnnotationObject", "PathCellObject"])),
                "nucleusGeometry": st.one_of(JUNK, geometries()),
            },
        )
    )
    return draw(st.one_of(st.just(item), JUNK, geometries()))


DOCUMENTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["FeatureCollection", "Feature", "Polygon", "Other"])},
        optional={"features": st.one_of(JUNK, st.lists(features(), max_size=6))},
    ),
    st.lists(features(), max_size=6),
    features(),
    JUNK,
)


def _write_text(path: Path, text: str, *, gz: bool) -> Path:
    """Write ``text`` as UTF-8 to ``path``, or gzipped to ``path`` + ``.gz``; the file written."""
    data = text.encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@FUZZ
@given(doc=DOCUMENTS, gz=st.booleans(), cut=st.integers(0, 40))
def test_geojson_reader_ends_well(tmp_path: Path, doc: Any, gz: bool, cut: int) -> None:
    text = json.dumps(doc, allow_nan=True)
    if cut and cut < len(text):  # a truncated file too
        text = text[:-cut] if cut % 3 == 0 else text
    path = _write_text(tmp_path / "fuzz.geojson", text, gz=gz)
    result = ends_well(read_annotations_report, path, path=path)
    if not isinstance(result, HistolibError):
        annotations, notes = result
        assert all(a.geometry is not None and not a.geometry.is_empty for a in annotations)
        assert all(isinstance(note, str) and "\n" not in note for note in notes)


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_any_bytes_as_an_annotation_file_end_well(tmp_path: Path, data: bytes, gz: bool) -> None:
    path = tmp_path / "fuzz.geojson"
    path.write_bytes(gzip.compress(data) if gz else data)
    ends_well(read_annotations_report, path, path=path)


def test_a_compressed_bomb_ends_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.geojson.gz"
    path.write_bytes(gzip.compress(b"[" + b" " * (16 << 20) + b"]"))
    with override_limits(annotation_bytes=1 << 20):
        result = ends_well(read_annotations_report, path, path=path)
    assert isinstance(result, HistolibError) and "1 MiB limit" in str(result)


# ----------------------------------------------------------------------------- XML

ATTRIBUTE = st.one_of(
    st.text(max_size=10),
    NUMBERS.map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " 12 ", "0x10", "1,5"]),
)


def _attrs(draw: Any, names: list[str]) -> str:
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    return "".join(f" {name}={quoteattr(draw(ATTRIBUTE))}" for name in chosen)


@st.composite
def asap_documents(draw: Any) -> str:
    annotations = []
    for _ in range(draw(st.integers(0, 4))):
        coords = "".join(
            f"<Coordinate{_attrs(draw, ['Order', 'X', 'Y'])} />"
            for _ in range(draw(st.integers(0, 6)))
        )
        attrs = _attrs(draw, ["Name", "Type", "PartOfGroup", "Color"])
        annotations.append(f"<Annotation{attrs}><Coordinates>{coords}</Coordinates></Annotation>")
    groups = "".join(
        f"<Group{_attrs(draw, ['Name', 'PartOfGroup', 'Color'])}><Attributes /></Group>"
        for _ in range(draw(st.integers(0, 3)))
    )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(annotations)
        + f"</Annotations><AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
    )


@st.composite
def imagescope_documents(draw: Any) -> str:
    layers = []
    for _ in range(draw(st.integers(0, 3))):
        regions = []
        for _ in range(draw(st.integers(0, 3))):
            vertices = "".join(
                f"<Vertex{_attrs(draw, ['X', 'Y', 'Z'])} />" for _ in range(draw(st.integers(0, 6)))
            )
            attrs = _attrs(draw, ["Id", "Type", "NegativeROA", "Text", "Zoom"])
            regions.append(f"<Region{attrs}><Attributes /><Vertices>{vertices}</Vertices></Region>")
        attribute = f"<Attribute{_attrs(draw, ['Name', 'Value', 'Id'])} />"
        attrs = _attrs(draw, ["Id", "Name", "LineColor", "Type", "Visible"])
        layers.append(
            f"<Annotation{attrs}><Attributes>{attribute}</Attributes><Regions>"
            + "".join(regions)
            + "</Regions><Plots /></Annotation>"
        )
    return '<?xml version="1.0"?><Annotations>' + "".join(layers) + "</Annotations>"


@FUZZ
@given(
    text=st.one_of(asap_documents(), imagescope_documents()),
    gz=st.booleans(),
    cut=st.integers(0, 30),
)
def test_xml_readers_end_well(tmp_path: Path, text: str, gz: bool, cut: int) -> None:
    if cut % 4 == 1:
        text = text[: max(0, len(text) - cut)]
    path = _write_text(tmp_path / "fuzz.xml", text, gz=gz)
    result = ends_well(read_annotations_report, path, path=path)
    if not isinstance(result, HistolibError):
        annotations, _notes = result
        for a in annotations:
            assert a.geometry.is_valid and all(math.isfinite(v) for v in a.geometry.bounds)


# ----------------------------------------------------------------------------- options

VALUES = st.one_of(
    JUNK,
    st.sampled_from(["nan", "inf", "-inf", "1e999", "NaN", "-0", "1e-320", "none", "true", " 3 "]),
    st.lists(st.one_of(st.text(max_size=5), NUMBERS), max_size=3),
    st.dictionaries(st.text(max_size=3), JUNK, max_size=2),
)


@FUZZ
@given(data=st.data())
def test_every_option_value_ends_well(data: Any) -> None:
    for cls in (TilingOptions, LibraryParams):
        for spec in option_specs(cls):
            value = data.draw(VALUES, label=spec.name)
            result = ends_well(coerce_value, spec, value, source=None)
            if isinstance(result, float):
                assert math.isfinite(result)  # nan and inf never pass silently


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from([s.name for s in option_specs(TilingOptions)]), VALUES, max_size=4
    ),
    labelled=st.booleans(),
)
def test_tiling_options_end_well(values: dict[str, Any], labelled: bool) -> None:
    def build_and_validate() -> Any:
        options = build_options(TilingOptions, values, sources=("params.yaml",))
        options.validate(labelled=labelled)
        return options

    ends_well(build_and_validate)


@FUZZ
@given(
    overrides=st.dictionaries(
        st.one_of(st.sampled_from([s.name for s in option_specs(LibraryParams)]), st.text()),
        VALUES,
        max_size=4,
    ),
    preset=st.sampled_from(["authors", "paper", "other"]),
)
def test_library_parameters_end_well(overrides: dict[str, Any], preset: str) -> None:
    result = ends_well(resolve_params, preset=preset, overrides=overrides)
    if isinstance(result, LibraryParams):
        assert all(math.isfinite(v) for v in vars(result).values() if isinstance(v, float)), result


@FUZZ
@given(
    limit=st.sampled_from(
        ["image_pixels", "annotation_bytes", "grid_tiles", "upsampling", "any_mpp", "other"]
    ),
    value=VALUES,
)
def test_limit_values_end_well(limit: str, value: Any) -> None:
    def set_one() -> Any:
        with override_limits(**{limit: value}) as limits:
            return limits

    ends_well(set_one)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_file_values_are_refused(tmp_path: Path, text: str) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(f"graph_distance: {text}\nbox_size: 48\n")
    result = ends_well(resolve_params, file=params)
    assert isinstance(result, HistolibError) and str(result).startswith(str(params))
