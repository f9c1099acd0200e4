"""Using annotations: tumour regions, tile masks, checks against the slide, summaries.

Every function takes :class:`~histolib.annotations.model.Annotation` objects, whatever file
format they were read from (:func:`histolib.annotations.reading.read_annotations`).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from histolib.annotations.model import (
    Annotation,
    AnnotationWarning,
    make_valid,
    polygonal_part,
)
from histolib.errors import AnnotationError


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
        region = make_valid(region)
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


def _bounds(annotations: Sequence[Annotation]) -> tuple[float, float, float, float] | None:
    import shapely

    if not annotations:
        return None
    b = shapely.total_bounds([a.geometry for a in annotations])
    if any(math.isnan(v) for v in b):
        return None
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def format_px(value: float, *, decimals: int = 0) -> str:
    """A coordinate or distance in px for a message: fixed-point up to a billion, else in
    scientific notation (a contour at 1e300 must not print a 300-digit number)."""
    if math.isfinite(value) and abs(value) < 1e9:
        return f"{value:.{decimals}f}"
    return f"{value:.3g}"


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
    if outside:
        objects = [annotations[i] for i in outside]
        raise _outside_error(objects, len(annotations), slide_dimensions, path)


def _outside_error(
    outside: Sequence[Annotation],
    total: int,
    slide_dimensions: tuple[int, int],
    path: str | Path | None,
) -> AnnotationError:
    bounds = _bounds(outside)
    width, height = slide_dimensions
    where = ""
    if bounds is not None:
        x0, y0, x1, y1 = (format_px(v) for v in bounds)
        where = f" (x {x0}..{x1}, y {y0}..{y1})"
    return AnnotationError(
        f"{len(outside)} of {total} contour(s) lie outside the slide{where}, "
        f"which is {width} x {height} px: contours of another slide or another resolution?",
        path=path,
    )


def clip_to_slide(
    annotations: Sequence[Annotation],
    slide_dimensions: tuple[int, int],
    *,
    path: str | Path | None = None,
    tolerance: float = 0.01,
) -> tuple[list[Annotation], list[str]]:
    """The objects with each ``annotation`` cut to the slide rectangle, and a note on the cut.

    A contour drawn past the slide's edge (a tumour at the border, outlined generously) is
    clipped to the slide, with a note saying how many and how far they reached (within
    ``tolerance``, as in :func:`outside_slide`, nothing is said). Other object types pass
    through unchanged.

    Raises
    ------
    AnnotationError
        When a contour lies wholly outside the slide (contours of another slide or another
        resolution), naming ``path``, their count and bounds and the slide size.
    """
    import dataclasses

    import shapely

    width, height = slide_dimensions
    slide = shapely.box(0, 0, width, height)
    regions = [i for i, a in enumerate(annotations) if a.object_type == "annotation"]
    beyond = outside_slide([annotations[i] for i in regions], slide_dimensions, tolerance=tolerance)
    crossing = [regions[k] for k in beyond]
    away = [i for i in crossing if not annotations[i].geometry.intersects(slide)]
    if away:
        raise _outside_error([annotations[i] for i in away], len(regions), slide_dimensions, path)
    out = list(annotations)
    reach = 0.0
    for index in crossing:
        geometry = annotations[index].geometry
        minx, miny, maxx, maxy = geometry.bounds
        reach = max(reach, -minx, -miny, maxx - width, maxy - height)
        clipped = geometry.intersection(slide)
        if annotations[index].is_region:
            clipped = polygonal_part(clipped)
        out[index] = dataclasses.replace(annotations[index], geometry=clipped)
    notes = []
    if crossing:
        notes.append(
            f"clipped {len(crossing)} contour(s) reaching up to {format_px(reach)} px "
            f"({format_px(100 * reach / max(width, height, 1), decimals=1)}% of the slide) past "
            "its edge to the slide"
        )
    return [a for a in out if a.geometry is not None and not a.geometry.is_empty], notes


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
