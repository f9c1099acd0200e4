"""What every annotation reader returns: :class:`Annotation` objects, and geometry repair.

Readers of each format (:mod:`histolib.annotations.geojson`, ...) build these; the region
helpers (:mod:`histolib.annotations.regions`) use them. Coordinates are (x, y) level-0 slide
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
