"""QuPath GeoJSON objects: building features and streaming FeatureCollections.

Conventions (DESIGN.md section 3): always a FeatureCollection; each feature has a fresh UUID
``id``, ``properties.objectType`` (``annotation``, ``detection``, ``cell``, ``tile``),
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

from histolib.atomic import atomic_path

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
) -> dict[str, Any]:
    """Build one QuPath GeoJSON feature.

    Parameters
    ----------
    geometry
        A shapely geometry (or anything with ``__geo_interface__``) in level-0 px.
    object_type
        One of :data:`OBJECT_TYPES`.
    class_name, color
        Classification; the colour defaults to :func:`class_color`.
    measurements
        Flat mapping of measurement name to number.
    name
        Optional object name shown in QuPath.
    extra_properties
        Further properties (for example ``nucleusGeometry`` of a cell).
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
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": geometry.__geo_interface__,
        "properties": props,
    }


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
