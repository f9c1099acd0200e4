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


def _edge_boxes(geometry: Any) -> Any:
    """The bounding boxes of the edges of every ring or line of ``geometry``, as (n, 4)."""
    import numpy as np
    import shapely

    parts = shapely.get_parts(geometry)
    lines = np.concatenate([shapely.get_rings(parts), parts[~shapely.is_empty(parts)]])
    lines = lines[np.isin(shapely.get_type_id(lines), (1, 2))]  # LineString, LinearRing
    boxes = []
    for line in lines:
        xy = shapely.get_coordinates(line)
        a, b = xy[:-1], xy[1:]
        boxes.append(np.hstack([np.minimum(a, b), np.maximum(a, b)]))
    return np.vstack(boxes) if boxes else np.empty((0, 4))


def count_crossing_candidates(geometry: Any, *, stop_after: int) -> int:
    """Pairs of non-adjacent edges of ``geometry`` whose bounding boxes overlap: an upper
    bound on its self-intersections, found with a spatial index (:class:`shapely.STRtree`).

    Counting stops once it passes ``stop_after``, so a contour of random vertices (pairs
    growing with the square of the vertex count) costs about ``stop_after`` pairs of work.
    """
    import numpy as np
    import shapely

    boxes = _edge_boxes(geometry)
    n = len(boxes)
    if n < 3:
        return 0
    tree = shapely.STRtree(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
    chunk = int(np.clip(stop_after // n, 16, 4096))
    found = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        query = shapely.box(*boxes[start:stop].T)
        i, j = tree.query(query)
        found += int(np.count_nonzero(j > i + start + 1))
        if found > stop_after:
            break
    return found


def check_repair_budget(geometry: Any) -> None:
    """Refuse to repair a geometry whose self-intersections could be more than the
    ``repair_crossings`` limit allows (:mod:`histolib.core.limits`): an
    :class:`~histolib.errors.AnnotationError` naming the limit and the option that raises it."""
    import shapely

    from histolib.core.limits import current, raise_hint
    from histolib.errors import AnnotationError

    limit = current().repair_crossings
    found = count_crossing_candidates(geometry, stop_after=limit)
    if found > limit:
        vertices = int(shapely.get_num_coordinates(geometry))
        raise AnnotationError(
            f"a contour of {vertices:,} vertices has more than {limit:,} pairs of overlapping "
            "edges (possible self-intersections), over the limit for checking and repairing "
            "one contour; " + raise_hint("repair_crossings")
        )


CHECKED_VERTICES = 2048
"""Contours of more vertices are bounded (:func:`check_repair_budget`) before GEOS even tests
their validity: that test alone takes 15 s on 200,000 random vertices."""


def is_valid_bounded(geometry: Any) -> bool:
    """``geometry.is_valid``, after :func:`check_repair_budget` for a contour of more than
    :data:`CHECKED_VERTICES` vertices (so neither the test nor a repair can take minutes)."""
    import shapely

    if shapely.get_num_coordinates(geometry) > CHECKED_VERTICES:
        check_repair_budget(geometry)
    return bool(geometry.is_valid)


def make_valid(geometry: Any) -> Any:
    """Repair a geometry; polygonal input stays polygonal.

    Polygons are repaired with :func:`shapely.make_valid`'s ``structure`` method (shells
    unioned, holes subtracted, parts collapsed to lines or points dropped): its cost grows with
    the vertices and self-intersections, where the default ``linework`` method grows about with
    the cube of the vertex count. Before repairing, the self-intersections are bounded
    (:func:`check_repair_budget`), so a contour of 200,000 random vertices is refused in seconds.
    Other geometries use the ``linework`` method. Returns None when nothing is left.

    Raises
    ------
    AnnotationError
        For a contour over the ``repair_crossings`` limit (no path: the reader adds it).
    """
    import shapely

    geometry = shapely.force_2d(geometry)
    if geometry.is_empty:
        return None
    if is_valid_bounded(geometry):
        return geometry
    if shapely.get_num_coordinates(geometry) <= CHECKED_VERTICES:
        check_repair_budget(geometry)
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        fixed = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
        return polygonal_part(fixed)
    fixed = shapely.make_valid(geometry)
    return None if fixed.is_empty else fixed
