"""Reading QuPath GeoJSON (0.2 to 0.7) into shapely geometry in level-0 px, and using it.

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
  skipped with a counted warning where a region is needed (:func:`tumour_region`).

Coordinates are (x, y) level-0 slide pixels, as QuPath writes them.
"""

from __future__ import annotations

import gzip
import json
import math
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import AnnotationError

#: Object types histolib knows; QuPath 0.2 legacy ids map onto them.
LEGACY_TYPE_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma_core",
    "PathRootObject": "root",
}
KNOWN_TYPES = ("annotation", "detection", "cell", "tile", "tma_core", "root")
GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)
ANNOTATION_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")


class AnnotationWarning(UserWarning):
    """Something in a GeoJSON file that histolib skipped or repaired (one line, counted)."""


@dataclass
class Annotation:
    """One QuPath object read from GeoJSON.

    Attributes
    ----------
    geometry
        Valid shapely geometry in level-0 px (repaired with ``make_valid`` where needed).
    object_type
        ``annotation``, ``detection``, ``cell``, ``tile``, ``tma_core`` or ``root`` (an unknown
        type is kept as written, lower-cased).
    class_name
        The classification name, or None when unclassified.
    name
        The object's name, or None.
    measurements
        Measurement name to float.
    properties
        The feature's raw ``properties`` (after merging duplicate keys).
    color
        The classification colour (else the object colour) as (r, g, b), or None.
    nucleus
        A cell's nucleus geometry (valid, level-0 px), or None.
    id
        The feature id (None for QuPath 0.2 files, whose id held the type).
    """

    geometry: Any
    object_type: str
    class_name: str | None
    name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    color: tuple[int, int, int] | None = None
    nucleus: Any = None
    id: str | None = None

    @property
    def is_region(self) -> bool:
        """Whether the geometry is polygonal (it encloses an area)."""
        return self.geometry.geom_type in ("Polygon", "MultiPolygon")


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

    Raises
    ------
    AnnotationError
        When the file is missing, unreadable, not text, or not JSON.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError("no such file", path=path)
    if path.is_dir():
        raise AnnotationError("is a folder, not a GeoJSON file", path=path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise AnnotationError(f"cannot read file ({exc})", path=path) from exc
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


def polygonal_part(geometry: Any) -> Any:
    """The polygonal part of a geometry (Polygon or MultiPolygon), or None when it has none."""
    import shapely
    from shapely.geometry import MultiPolygon

    if geometry is None or geometry.is_empty:
        return None
    kind = geometry.geom_type
    if kind in ("Polygon", "MultiPolygon"):
        return geometry
    if kind == "GeometryCollection":
        polys = []
        for part in shapely.get_parts(geometry):
            sub = polygonal_part(part)
            if sub is not None:
                polys.extend(shapely.get_parts(sub))
        if not polys:
            return None
        return polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return None


def make_valid(geometry: Any) -> Any:
    """Repair a geometry with :func:`shapely.make_valid`; polygonal input stays polygonal.

    Self-intersecting rings become (Multi)Polygons; slivers that the repair turns into lines
    are dropped from a polygonal object. Returns None when nothing is left.
    """
    import shapely

    geometry = shapely.force_2d(geometry)
    if geometry.is_empty:
        return None
    if geometry.is_valid:
        return geometry
    was_polygonal = geometry.geom_type in ("Polygon", "MultiPolygon")
    fixed = shapely.make_valid(geometry)
    if was_polygonal:
        return polygonal_part(fixed)
    return None if fixed.is_empty else fixed


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


def parse_feature(feature: Any) -> tuple[Annotation | None, str | None]:
    """Parse one feature (or bare geometry) into an :class:`Annotation`.

    Returns
    -------
    tuple
        ``(annotation, None)``, ``(annotation, "repaired")``, or ``(None, reason)`` when the
        feature is skipped (no geometry, empty geometry, nothing left after repair).

    Raises
    ------
    ValueError
        When the feature is malformed (not an object, unreadable coordinates).
    """
    annotations, reasons = _parse_features([feature])
    return annotations[0], reasons[0]


def _parse_features(features: Sequence[Any]) -> tuple[list[Annotation | None], list[str | None]]:
    """Batch parser behind :func:`parse_feature` and :func:`parse_annotations`."""
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


def read_annotations_report(path: str | Path) -> tuple[list[Annotation], list[str]]:
    """Read a QuPath GeoJSON file; returns ``(annotations, notes)`` without warning."""
    path = Path(path)
    return parse_annotations(load_geojson(path), path=path)


def read_annotations(path: str | Path) -> list[Annotation]:
    """Read every object of a QuPath GeoJSON file (see the module docstring for the formats).

    Parameters
    ----------
    path
        A ``.geojson``, ``.json`` or ``.geojson.gz`` file.

    Returns
    -------
    list of Annotation
        In file order; geometry valid, in level-0 px. Skipped and repaired objects are
        reported as one :class:`AnnotationWarning` per reason, with counts.

    Raises
    ------
    AnnotationError
        When the file is missing or is not GeoJSON (one line naming the file).
    """
    annotations, notes = read_annotations_report(path)
    for note in notes:
        warnings.warn(f"{path}: {note}", AnnotationWarning, stacklevel=2)
    return annotations


def find_annotation_file(path: str | Path, slide_id: str) -> Path | None:
    """The annotation file of a slide: ``path`` itself when a file, else ``<slide_id>.geojson``
    (or ``.json``, ``.geojson.gz``, ``.json.gz``) inside the folder ``path``; None when absent."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise AnnotationError("no such file or folder", path=path)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = path / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------
# regions and rasterisation


def _class_matches(class_name: str | None, wanted: set[str]) -> bool:
    if class_name is None:
        return False
    name = class_name.casefold()
    return name in wanted or name.split(":")[0].strip() in wanted


def tumour_region(
    annotations: Sequence[Annotation], *, classes: Iterable[str] | None = None
) -> Any:
    """Union of the polygonal ``annotation`` objects whose class is in ``classes``.

    Parameters
    ----------
    annotations
        Objects from :func:`read_annotations`. Only objects of type ``annotation`` count
        (detections, cells and tiles are not contours).
    classes
        Class names to keep, compared case-insensitively; a derived class ``"Tumor: Positive"``
        matches ``"Tumor"`` too. None keeps every annotation, classified or not.

    Returns
    -------
    shapely geometry or None
        A valid (Multi)Polygon in level-0 px, or None when no polygonal annotation is selected.
        Selected annotations that are not regions (points, lines) are skipped with one counted
        :class:`AnnotationWarning`.
    """
    import shapely

    wanted = None if classes is None else {c.casefold() for c in classes}
    polys = []
    skipped: Counter[str] = Counter()
    for annotation in annotations:
        if annotation.object_type != "annotation":
            continue
        if wanted is not None and not _class_matches(annotation.class_name, wanted):
            continue
        part = polygonal_part(annotation.geometry)
        if part is None:
            skipped[annotation.geometry.geom_type] += 1
            continue
        polys.append(part)
    if skipped:
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
        warnings.warn(
            f"{sum(skipped.values())} annotation(s) are not regions and were skipped ({detail})",
            AnnotationWarning,
            stacklevel=2,
        )
    if not polys:
        return None
    region = shapely.union_all(polys)
    if not region.is_valid:
        region = polygonal_part(shapely.make_valid(region))
    return polygonal_part(region)


def rasterize(
    geometry: Any,
    *,
    x0: float,
    y0: float,
    downsample: float,
    shape: tuple[int, int],
) -> Any:
    """Rasterise a geometry into a tile mask, exactly at pixel centres.

    Pixel ``(row, col)`` is True when its centre, at level-0
    ``(x0 + (col + 0.5) * downsample, y0 + (row + 0.5) * downsample)``, lies inside the
    geometry or on its boundary (the closed set, :func:`shapely.intersects_xy`); holes are
    respected (a centre strictly inside a hole is False). Non-polygonal parts are ignored.

    Parameters
    ----------
    geometry
        A shapely geometry in level-0 px, or None (an all-False mask).
    x0, y0
        Level-0 origin of the tile.
    downsample
        Level-0 px per tile px.
    shape
        ``(rows, cols)`` of the mask.

    Returns
    -------
    numpy.ndarray
        Boolean array of ``shape``.
    """
    import numpy as np
    import shapely

    rows, cols = int(shape[0]), int(shape[1])
    mask = np.zeros((rows, cols), dtype=bool)
    region = polygonal_part(geometry) if geometry is not None else None
    if region is None or rows == 0 or cols == 0:
        return mask
    xs = x0 + (np.arange(cols, dtype=np.float64) + 0.5) * downsample
    ys = y0 + (np.arange(rows, dtype=np.float64) + 0.5) * downsample
    # Prepared geometry (cached on the object, so a region reused over many tiles is
    # prepared once) answers the point tests with an index; the original geometry is tested,
    # not a clipped copy, so points on its boundary are judged exactly.
    shapely.prepare(region)
    centres = shapely.box(xs[0], ys[0], xs[-1], ys[-1])
    if not shapely.intersects(region, centres):
        return mask
    if shapely.covers(region, centres):
        mask[:] = True
        return mask
    grid_x, grid_y = np.meshgrid(xs, ys)
    return shapely.intersects_xy(region, grid_x, grid_y)


# --------------------------------------------------------------------------------------
# checks and summaries


def _bounds(annotations: Sequence[Annotation]) -> tuple[float, float, float, float] | None:
    import shapely

    if not annotations:
        return None
    b = shapely.total_bounds([a.geometry for a in annotations])
    if any(math.isnan(v) for v in b):
        return None
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def outside_slide(
    annotations: Sequence[Annotation],
    slide_dimensions: tuple[int, int],
    *,
    tolerance: float = 0.01,
) -> list[int]:
    """Indices of the objects that do not lie inside the slide.

    An object is outside when its geometry leaves the slide rectangle ``[0, w] x [0, h]`` grown
    by ``tolerance * max(w, h)`` px on every side (contours drawn up to the border of a slide
    often cross it by a few pixels).
    """
    width, height = slide_dimensions
    margin = tolerance * max(width, height)
    out = []
    for index, annotation in enumerate(annotations):
        minx, miny, maxx, maxy = annotation.geometry.bounds
        if minx < -margin or miny < -margin or maxx > width + margin or maxy > height + margin:
            out.append(index)
    return out


def check_inside(
    annotations: Sequence[Annotation],
    slide_dimensions: tuple[int, int],
    *,
    path: str | Path | None = None,
    tolerance: float = 0.01,
) -> None:
    """Raise :class:`AnnotationError` when any object lies (partly) outside the slide.

    Typical causes: the contours belong to another slide, or were drawn on an image of another
    resolution. ``tolerance`` is as in :func:`outside_slide`.

    Raises
    ------
    AnnotationError
        Naming ``path``, the count of objects outside, their bounds and the slide size.
    """
    outside = outside_slide(annotations, slide_dimensions, tolerance=tolerance)
    if not outside:
        return
    bounds = _bounds([annotations[i] for i in outside])
    width, height = slide_dimensions
    where = ""
    if bounds is not None:
        where = f" (x {bounds[0]:.0f}..{bounds[2]:.0f}, y {bounds[1]:.0f}..{bounds[3]:.0f})"
    raise AnnotationError(
        f"{len(outside)} of {len(annotations)} contour(s) lie outside the slide{where}, "
        f"which is {width} x {height} px: contours of another slide or another resolution?",
        path=path,
    )


def summarize(
    annotations: Sequence[Annotation], *, slide_dimensions: tuple[int, int] | None = None
) -> dict[str, Any]:
    """What a set of objects holds: counts by type, by class and geometry, bounds, inside.

    Returns
    -------
    dict
        ``count``, ``by_type`` {type: n}, ``by_class`` {class or "(none)": n}, ``by_geometry``
        {geometry type: n}, ``by_type_and_class`` [{type, class, count}], ``bounds``
        [minx, miny, maxx, maxy] or None, and with ``slide_dimensions`` also ``outside`` (count)
        and ``inside`` (bool).
    """
    by_type = Counter(a.object_type for a in annotations)
    by_class = Counter(a.class_name or "(none)" for a in annotations)
    by_geometry = Counter(a.geometry.geom_type for a in annotations)
    pairs = Counter((a.object_type, a.class_name or "(none)") for a in annotations)
    bounds = _bounds(annotations)
    summary: dict[str, Any] = {
        "count": len(annotations),
        "by_type": dict(sorted(by_type.items())),
        "by_class": dict(sorted(by_class.items())),
        "by_geometry": dict(sorted(by_geometry.items())),
        "by_type_and_class": [
            {"type": t, "class": c, "count": n} for (t, c), n in sorted(pairs.items())
        ],
        "bounds": None if bounds is None else list(bounds),
    }
    if slide_dimensions is not None:
        outside = outside_slide(annotations, slide_dimensions)
        summary["outside"] = len(outside)
        summary["inside"] = not outside
    return summary
