"""QuPath GeoJSON (0.2 to 0.7) read into :class:`Annotation` objects in level-0 px.

Accepted documents (everything QuPath writes or imports):

- a ``FeatureCollection``, a bare array of features, a single ``Feature`` or a bare geometry;
- ``.geojson``, ``.json`` or gzip-compressed files (``.geojson.gz``; gzip is recognised by its
  magic bytes, whatever the name);
- the object type as ``properties.objectType`` (QuPath >= 0.4), ``properties.object_type``
  (0.3), ``properties.type`` (alias QuPath accepts) or the feature ``id`` of QuPath 0.2
  (``"PathAnnotationObject"``, ``"PathDetectionObject"``, ``"PathCellObject"``...); no type
  means ``annotation``, as in QuPath;
- the classification as ``{"name": ..., "color": [r, g, b]}``, ``{"names": [...]}`` (derived
  classes, joined with ``": "`` as QuPath shows them), a plain string, or QuPath 0.2's
  ``{"name": ..., "colorRGB": packed int}``;
- measurements as a flat dict or QuPath 0.2's list of ``{"name", "value"}``;
- ``nucleusGeometry`` of cells (beside ``geometry``, or inside ``properties``);
- duplicate keys (QuPath 0.5.1 to 0.7.0 write ``metadata`` twice): objects are merged, for
  other values the last one wins;
- Polygons with holes, MultiPolygons, LineStrings, Points and GeometryCollections. Invalid
  rings are repaired with :func:`shapely.make_valid`; a polygonal object keeps only the
  polygonal parts of the repair. Objects that are not regions (points, lines) are kept, and
  skipped with a counted warning where a region is needed
  (:func:`histolib.annotations.regions.tumour_region`).

Coordinates are (x, y) level-0 slide pixels, as QuPath writes them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from histolib.annotations.model import (
    CHECKED_VERTICES,
    Annotation,
    check_repair_budget,
    make_valid,
)
from histolib.core.limits import read_bounded
from histolib.errors import AnnotationError

#: QuPath 0.2 legacy ids (the feature ``id``) and the object types they stand for.
LEGACY_TYPE_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma_core",
    "PathRootObject": "root",
}
GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)


# --------------------------------------------------------------------------------------
# loading JSON


def _merge_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: duplicate keys merge when both are objects, else the last wins."""
    fast = dict(pairs)
    if len(fast) == len(pairs):  # no duplicate: the common case, at C speed
        return fast
    out: dict[str, Any] = {}
    for key, value in pairs:
        old = out.get(key)
        if key in out and isinstance(old, dict) and isinstance(value, dict):
            merged = dict(old)
            merged.update(value)
            out[key] = merged
        else:
            out[key] = value
    return out


def load_geojson(path: str | Path) -> Any:
    """Load a (possibly gzip-compressed) JSON document, tolerating duplicate keys.

    At most the ``annotation_bytes`` limit is read, after decompression
    (:mod:`histolib.core.limits`): a gzip bomb stops there.

    Raises
    ------
    AnnotationError
        When the file is missing, unreadable, over the limit, not text, or not JSON.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError("no such file", path=path)
    if path.is_dir():
        raise AnnotationError("is a folder, not a GeoJSON file", path=path)
    raw = read_bounded(path, error=AnnotationError)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError("not GeoJSON (not UTF-8 text)", path=path) from exc
    del raw
    if not text.strip():
        raise AnnotationError("not GeoJSON (empty file)", path=path)
    try:
        return json.loads(text, object_pairs_hook=_merge_pairs)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"not GeoJSON (invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg})",
            path=path,
        ) from exc
    except RecursionError as exc:
        raise AnnotationError("not GeoJSON (nested too deeply)", path=path) from exc


def _features_of(doc: Any, path: Path | None) -> list[Any]:
    """The list of feature-like items of a document (FeatureCollection, array, Feature...)."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        kind = doc.get("type")
        if kind == "FeatureCollection" or (kind is None and "features" in doc):
            features = doc.get("features")
            if features is None:
                return []
            if not isinstance(features, list):
                raise AnnotationError("not GeoJSON ('features' is not an array)", path=path)
            return features
        if kind == "Feature" or kind in GEOMETRY_TYPES:
            return [doc]
        raise AnnotationError(
            f"not GeoJSON (top-level object of type {kind!r}, expected a FeatureCollection, "
            "a Feature, a geometry or an array of features)",
            path=path,
        )
    raise AnnotationError(
        f"not GeoJSON (top-level {type(doc).__name__}, expected an object or an array)",
        path=path,
    )


# --------------------------------------------------------------------------------------
# parsing one feature


def unpack_rgb(value: int) -> tuple[int, int, int]:
    """Unpack a QuPath packed (A)RGB integer (possibly negative, Java int) to (r, g, b)."""
    v = int(value) & 0xFFFFFFFF
    return ((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF)


def _color(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return unpack_rgb(int(value))
    if isinstance(value, list | tuple) and len(value) >= 3:
        try:
            return (int(value[0]), int(value[1]), int(value[2]))
        except (TypeError, ValueError):
            return None
    if isinstance(value, str) and value.startswith("#") and len(value) >= 7:
        try:
            return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
        except ValueError:
            return None
    return None


def _classification(value: Any) -> tuple[str | None, tuple[int, int, int] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        return (value or None), None
    if isinstance(value, dict):
        name = value.get("name")
        names = value.get("names")
        if not name and isinstance(names, list) and names:
            name = ": ".join(str(n) for n in names)
        color = _color(value.get("color"))
        if color is None:
            color = _color(value.get("colorRGB"))
        return (str(name) if name not in (None, "") else None), color
    return None, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # QuPath writes NaN / Infinity as strings
        except ValueError:
            return None
    return None


def _measurements(value: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = (
            (m.get("name"), m.get("value"))
            for m in value
            if isinstance(m, dict) and m.get("name") is not None
        )
    else:
        return out
    for key, raw in items:
        number = _number(raw)
        if number is not None:
            out[str(key)] = number
    return out


def _object_type(feature: dict[str, Any], props: dict[str, Any]) -> str:
    for key in ("objectType", "object_type", "type"):
        value = props.get(key)
        if isinstance(value, str) and value:
            return LEGACY_TYPE_IDS.get(value, value.lower())
    fid = feature.get("id")
    if isinstance(fid, str) and fid in LEGACY_TYPE_IDS:
        return LEGACY_TYPE_IDS[fid]
    return "annotation"


def _check_geometry(value: Any) -> None:
    if not isinstance(value, dict) or value.get("type") not in GEOMETRY_TYPES:
        raise ValueError(f"unsupported geometry {str(value)[:60]!r}")


def _geometries(values: Sequence[dict[str, Any]], indices: Sequence[int]) -> Any:
    """Shapely geometries of GeoJSON geometry mappings, parsed in one vectorised call.

    Raises ``ValueError`` naming the feature index of the first unreadable geometry.
    """
    import numpy as np
    import shapely

    if not values:
        return np.empty(0, dtype=object)
    texts = [json.dumps(v) for v in values]
    try:
        geoms = shapely.from_geojson(texts)
    except (shapely.errors.GEOSException, ValueError, TypeError):
        for index, text in zip(indices, texts, strict=True):
            try:
                shapely.from_geojson(text)
            except (shapely.errors.GEOSException, ValueError, TypeError) as exc:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ValueError(f"feature {index}: unreadable geometry ({detail})") from exc
        raise
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)
    return geoms


def _valid(geoms: Any) -> tuple[list[Any], list[bool]]:
    """Repair the invalid geometries; returns (geometries or None, was-valid flags)."""
    import shapely

    large = shapely.get_num_coordinates(geoms) > CHECKED_VERTICES
    for geometry in geoms[large]:  # bounded before GEOS's validity test (model.make_valid)
        check_repair_budget(geometry)
    ok = shapely.is_valid(geoms) | shapely.is_empty(geoms)
    out = []
    for geometry, valid in zip(geoms, ok, strict=True):
        if geometry.is_empty:
            out.append(None)
        elif valid:
            out.append(geometry)
        else:
            out.append(make_valid(geometry))
    return out, [bool(v) for v in ok]


def _parse_features(features: Sequence[Any]) -> tuple[list[Annotation | None], list[str | None]]:
    """Parse features (or bare geometries) into :class:`Annotation` objects, in one batch.

    Returns, per feature, the annotation or None, and None, ``"repaired"`` or the reason it
    was skipped (no geometry, empty geometry, nothing left after repair). Raises
    ``ValueError`` naming the first malformed feature.
    """
    records: list[tuple[dict[str, Any], dict[str, Any]]] = []
    raw: list[dict[str, Any]] = []
    raw_index: list[int] = []
    nuclei: list[dict[str, Any]] = []
    nuclei_index: list[int] = []
    for index, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise ValueError(
                f"feature {index}: a feature must be an object, not {type(feature).__name__}"
            )
        if feature.get("type") in GEOMETRY_TYPES:
            feature = {"type": "Feature", "geometry": feature, "properties": {}}
        props = feature.get("properties")
        if not isinstance(props, dict):
            props = {}
        records.append((feature, props))
        geometry = feature.get("geometry")
        if geometry is not None:
            try:
                _check_geometry(geometry)
            except ValueError as exc:
                raise ValueError(f"feature {index}: {exc}") from None
            raw.append(geometry)
            raw_index.append(index)
        nucleus = feature.get("nucleusGeometry", props.get("nucleusGeometry"))
        if isinstance(nucleus, dict) and nucleus.get("type") in GEOMETRY_TYPES:
            nuclei.append(nucleus)
            nuclei_index.append(index)

    geometries: list[Any] = [None] * len(records)
    was_valid: list[bool] = [True] * len(records)
    fixed, flags = _valid(_geometries(raw, raw_index))
    for index, geometry, flag in zip(raw_index, fixed, flags, strict=True):
        geometries[index] = geometry
        was_valid[index] = flag
    nucleus_of: dict[int, Any] = {}
    if nuclei:
        fixed_nuclei, _ = _valid(_geometries(nuclei, nuclei_index))
        nucleus_of = dict(zip(nuclei_index, fixed_nuclei, strict=True))
    has_geometry = set(raw_index)

    annotations: list[Annotation | None] = []
    reasons: list[str | None] = []
    for index, (feature, props) in enumerate(records):
        if index not in has_geometry:
            annotations.append(None)
            reasons.append("without geometry")
            continue
        geometry = geometries[index]
        if geometry is None:
            annotations.append(None)
            reasons.append("with an empty or degenerate geometry")
            continue
        class_name, color = _classification(props.get("classification"))
        if color is None:
            color = _color(props.get("color"))
        name = props.get("name")
        fid = feature.get("id")
        annotations.append(
            Annotation(
                geometry=geometry,
                object_type=_object_type(feature, props),
                class_name=class_name,
                name=None if name is None else str(name),
                measurements=_measurements(props.get("measurements")),
                properties=props,
                color=color,
                nucleus=nucleus_of.get(index),
                id=str(fid) if fid is not None and fid not in LEGACY_TYPE_IDS else None,
            )
        )
        reasons.append(None if was_valid[index] else "repaired")
    return annotations, reasons


def parse_annotations(
    doc: Any, *, path: str | Path | None = None
) -> tuple[list[Annotation], list[str]]:
    """Parse a loaded GeoJSON document; returns ``(annotations, notes)``.

    ``notes`` are one-line, counted descriptions of what was skipped or repaired.

    Raises
    ------
    AnnotationError
        When the document is not GeoJSON or a feature is malformed.
    """
    path = None if path is None else Path(path)
    features = _features_of(doc, path)
    try:
        parsed, reasons = _parse_features(features)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnnotationError(f"not GeoJSON ({detail})", path=path) from exc
    out: list[Annotation] = []
    skipped: Counter[str] = Counter()
    repaired = 0
    for annotation, reason in zip(parsed, reasons, strict=True):
        if annotation is None:
            skipped[reason or "unreadable"] += 1
            continue
        if reason == "repaired":
            repaired += 1
        out.append(annotation)
    notes = [f"skipped {n} object(s) {reason}" for reason, n in sorted(skipped.items())]
    if repaired:
        notes.append(f"repaired {repaired} invalid geometr{'y' if repaired == 1 else 'ies'}")
    return out, notes


def read_geojson(path: str | Path) -> tuple[list[Annotation], list[str]]:
    """Read a QuPath GeoJSON file (possibly gzip-compressed); returns ``(annotations, notes)``.

    ``notes`` are one-line, counted descriptions of what was skipped or repaired.

    Raises
    ------
    AnnotationError
        When the file is missing, unreadable or not GeoJSON.
    """
    path = Path(path)
    return parse_annotations(load_geojson(path), path=path)
