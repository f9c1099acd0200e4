"""QuPath GeoJSON objects: building features and streaming FeatureCollections.

Conventions (docs/formats.md): always a FeatureCollection; each feature has a UUID ``id``
that is the same in every export (:func:`object_id`: an id the object already had is kept,
the others are derived from the object's identity with uuid5, so importing a second export
into QuPath does not double the objects), ``properties.objectType`` (``annotation``,
``detection``, ``cell``, ``tile``),
``properties.classification`` as ``{"name": ..., "color": [r, g, b]}`` (a class without a colour
fails to parse in QuPath), ``properties.measurements`` as a flat dict of numbers, coordinates in
level-0 px and closed rings (shapely's ``__geo_interface__`` closes them).
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from histolib.core.atomic import atomic_path

OBJECT_TYPES = ("annotation", "detection", "cell", "tile")

#: Default colours of the classes histolib writes (QuPath's own colours for Tumor / Stroma...).
DEFAULT_COLORS: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Normal": (0, 0, 200),
    "cancer": (200, 0, 0),
    "normal": (0, 0, 200),
    "positive": (200, 0, 0),
    "negative": (0, 160, 0),
    "boundary": (230, 160, 0),
    "unlabelled": (128, 128, 128),
}


#: The uuid5 namespace of the ids histolib derives (:func:`object_id`).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "histolib:qupath-object")


def object_id(identity: str, existing: object = None) -> str:
    """The ``id`` of a QuPath object: ``existing`` when it is a UUID (an id the object already
    had, in QuPath or in the file it was read from), else a uuid5 of ``existing`` (an id of
    another form) or of ``identity`` (what makes the object itself: for a tile its tile id, for
    a cell its slide, tile, pass and centre). The same object always gets the same id."""
    if existing is not None and str(existing).strip():
        text = str(existing).strip()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return str(uuid.uuid5(ID_NAMESPACE, "id:" + text))
    return str(uuid.uuid5(ID_NAMESPACE, identity))


#: Numeric codes of the detector passes (QuPath measurements must be numbers).
PASS_CODES: dict[str, int] = {
    "he_normal": 1,
    "he_cancer": 2,
    "ihc_normal": 3,
    "ihc_cancer": 4,
    "qupath": 5,
}
#: Pass name of an object that has no pass code (drawn or imported in QuPath).
UNKNOWN_PASS = "qupath"


def parse_class_names(text: str | None) -> dict[str, str]:
    """Parse ``"cancer=Tumor,normal=Normal"`` into ``{"cancer": "Tumor", "normal": "Normal"}``.

    Raises
    ------
    ConfigError
        On an item without ``=``, an empty side, or a histolib label or QuPath class given twice.
    """
    from histolib.errors import ConfigError

    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for item in text.split(","):
        if not item.strip():
            continue
        label, sep, qupath_name = item.partition("=")
        label, qupath_name = label.strip(), qupath_name.strip()
        if not sep or not label or not qupath_name:
            raise ConfigError(
                f"--class-names: {item.strip()!r} is not LABEL=QuPathClass "
                "(example: cancer=Tumor,normal=Normal)"
            )
        if label in mapping:
            raise ConfigError(f"--class-names: {label!r} is given twice")
        if qupath_name in mapping.values():
            raise ConfigError(f"--class-names: QuPath class {qupath_name!r} is given twice")
        mapping[label] = qupath_name
    return mapping


def class_color(name: str) -> tuple[int, int, int]:
    """The colour histolib gives class ``name``: a default, else a stable colour from its hash."""
    if name in DEFAULT_COLORS:
        return DEFAULT_COLORS[name]
    h = uuid.uuid5(uuid.NAMESPACE_OID, name).bytes
    return (int(h[0]), int(h[1]), int(h[2]))


def qupath_feature(
    geometry: Any,
    *,
    object_type: str,
    class_name: str | None = None,
    color: tuple[int, int, int] | None = None,
    measurements: Mapping[str, float] | None = None,
    name: str | None = None,
    extra_properties: Mapping[str, Any] | None = None,
    feature_id: str | None = None,
) -> dict[str, Any]:
    """Build one QuPath GeoJSON feature.

    Parameters
    ----------
    geometry
        A shapely geometry (or anything with ``__geo_interface__``, or a GeoJSON geometry
        mapping, used as is) in level-0 px.
    object_type
        One of :data:`OBJECT_TYPES`.
    class_name, color
        Classification; the colour defaults to :func:`class_color`.
    measurements
        Flat mapping of measurement name to number.
    name
        Optional object name shown in QuPath.
    extra_properties
        Further entries of ``properties`` (QuPath reads ``name``, ``classification``,
        ``measurements``, ``color``, ``isLocked``, ``objectType``, ``metadata``). A cell's
        nucleus is not a property: QuPath reads ``nucleusGeometry`` only as a member of the
        feature itself, beside ``geometry`` (set ``feature["nucleusGeometry"]`` on the
        result, as :func:`histolib.qupath.export.export_qupath` does).
    feature_id
        The feature's ``id`` (see :func:`object_id`); None derives one from the geometry, type,
        class and name, so the same object always gets the same id.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, not {object_type!r}")
    props: dict[str, Any] = {"objectType": object_type}
    if name is not None:
        props["name"] = name
    if class_name is not None:
        rgb = color if color is not None else class_color(class_name)
        props["classification"] = {"name": class_name, "color": [int(c) for c in rgb]}
    if measurements:
        props["measurements"] = {str(k): float(v) for k, v in measurements.items()}
    if extra_properties:
        props.update(extra_properties)
    shape = geometry if isinstance(geometry, Mapping) else geometry.__geo_interface__
    if feature_id is None:
        feature_id = object_id(json.dumps([object_type, class_name, name, shape], default=str))
    return {"type": "Feature", "id": feature_id, "geometry": shape, "properties": props}


def write_feature_collection(
    path: str | Path, features: Iterable[Mapping[str, Any]], *, gzip_output: bool = False
) -> int:
    """Stream features into a FeatureCollection file atomically; returns the feature count.

    The features are written one at a time, so the JSON text of a large collection is never
    held in memory. ``gzip_output`` writes gzip (use a ``.geojson.gz`` name).
    """
    path = Path(path)
    count = 0
    with atomic_path(path, suffix=".tmp") as tmp:
        opener = gzip.open if gzip_output else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            fh.write('{"type": "FeatureCollection", "features": [')
            for feature in features:
                fh.write(("," if count else "") + "\n" + json.dumps(feature))
                count += 1
            fh.write("\n]}\n")
    return count


def box_geometry(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """A GeoJSON Polygon for the box ``[x0, x1] x [y0, y1]``: one closed 5-point ring."""
    x0, y0, x1, y1 = float(x0), float(y0), float(x1), float(y1)
    return {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
    }


def circle_geometry(cx: float, cy: float, radius: float, *, vertices: int = 32) -> dict[str, Any]:
    """A GeoJSON Polygon approximating a circle by a closed ring of ``vertices`` points.

    The vertices lie on the circle, so the polygon's area is slightly below ``pi r^2`` (0.6%
    for 32 vertices); :func:`circle_radius` inverts it exactly.
    """
    import math

    ring = [
        [
            float(cx + radius * math.cos(2 * math.pi * k / vertices)),
            float(cy + radius * math.sin(2 * math.pi * k / vertices)),
        ]
        for k in range(vertices)
    ]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def circle_radius(area: float, *, vertices: int = 32) -> float:
    """The radius of the regular ``vertices``-gon of :func:`circle_geometry` with ``area``."""
    import math

    return math.sqrt(2 * area / (vertices * math.sin(2 * math.pi / vertices)))
