"""Tissue geometry of synthetic slides: tissue pieces, tumour nests, fat lobules, vessels.

Shapes are shapely polygons in level-0 px, drawn from a random generator in a fixed order
(so a seed always gives the same slide); sizes are in microns times ``px_um`` (px per um).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def star_polygon(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    *,
    n_vertices: int,
    harmonics: int,
    roughness: float,
    ragged: float = 0.0,
) -> Any:
    """An irregular blob: an ellipse whose radius varies with angle (always a simple polygon)."""
    from shapely.geometry import Polygon

    theta = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    scale = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        scale += rng.normal(0, roughness / k**1.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if ragged > 0:
        for k in range(harmonics + 1, 4 * harmonics + 1):
            scale += rng.normal(0, ragged / math.sqrt(k)) * np.cos(
                k * theta + rng.uniform(0, 2 * np.pi)
            )
    scale = np.clip(scale, 0.4, 1.8)
    rot = rng.uniform(0, np.pi)
    px, py = rx * scale * np.cos(theta), ry * scale * np.sin(theta)
    xs = cx + px * math.cos(rot) - py * math.sin(rot)
    ys = cy + px * math.sin(rot) + py * math.cos(rot)
    return Polygon(np.column_stack([xs, ys]))


def largest_polygon(geom: Any) -> Any:
    """The largest polygon of a (multi)polygon result; None when empty."""
    if geom.is_empty:
        return None
    if geom.geom_type == "Polygon":
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon"]
    return max(polys, key=lambda g: g.area) if polys else None


def robust_difference(a: Any, b: Any) -> Any:
    """``a - b``, repairing the operands first when GEOS's overlay fails on them (a
    ``TopologyException``: a buffer of a multipolygon can come out subtly invalid)."""
    import shapely
    from shapely.errors import GEOSException

    from histolib.annotations.model import make_valid

    try:
        return shapely.difference(a, b)
    except GEOSException:  # both are non-empty here: an empty operand never fails
        return shapely.difference(make_valid(a), make_valid(b))


def make_tissue(rng: np.random.Generator, width: int, height: int, px_um: float) -> list[Any]:
    """Tissue pieces: one irregular blob, or 2-3 side by side on a slide over 2.5 mm long."""
    from shapely.geometry import box

    long_um = max(width, height) / px_um
    n = 1 if long_um < 2500 else int(rng.integers(2, 4))
    frame = box(2, 2, width - 2, height - 2)
    pieces = []
    for i in range(n):
        if width >= height:
            pw, ph, cx, cy = width / n, height, (i + 0.5) * width / n, height / 2
        else:
            pw, ph, cx, cy = width, height / n, width / 2, (i + 0.5) * height / n
        cx += rng.normal(0, 0.03) * pw
        cy += rng.normal(0, 0.03) * ph
        poly = star_polygon(
            rng,
            cx,
            cy,
            0.40 * pw * rng.uniform(0.85, 1.0),
            0.40 * ph * rng.uniform(0.85, 1.0),
            n_vertices=720,
            harmonics=7,
            roughness=0.22,
            ragged=0.012,
        )
        poly = largest_polygon(poly.intersection(frame))
        if poly is not None:
            pieces.append(poly)
    return pieces


def make_tumours(
    rng: np.random.Generator,
    tissue: list[Any],
    n_tumours: int | None,
    tumour_fraction: float,
    px_um: float,
    width: int,
    height: int,
) -> list[Any]:
    """Tumour contours inside the tissue, apart from each other; ``n_tumours`` None places
    about as many as cover ``tumour_fraction`` of the tissue (fewer when there is no room)."""
    import shapely

    short_um = min(width, height) / px_um
    r_max = min(350.0, 0.14 * short_um) * px_um
    tissue_area = sum(p.area for p in tissue)
    if n_tumours is None:
        mean_area = math.pi * (0.8 * r_max) ** 2
        n_tumours = int(np.clip(round(tumour_fraction * tissue_area / mean_area), 0, 200))
        if tumour_fraction > 0:
            n_tumours = max(n_tumours, 1)
    areas = np.array([p.area for p in tissue])
    tumours: list[Any] = []
    centres: list[tuple[float, float, float]] = []
    for _ in range(n_tumours):
        placed = False
        for attempt in range(60):
            radius = r_max * rng.uniform(0.6, 1.0) * (0.97 ** (attempt // 10 * 3))
            piece = tissue[int(rng.choice(len(tissue), p=areas / areas.sum()))]
            inner = piece.buffer(-1.1 * radius)
            if inner.is_empty:
                continue
            minx, miny, maxx, maxy = inner.bounds
            cx, cy = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            if not shapely.contains_xy(inner, cx, cy):
                continue
            if any(math.hypot(cx - a, cy - b) < 1.05 * (radius + r) for a, b, r in centres):
                continue
            poly = star_polygon(
                rng,
                cx,
                cy,
                radius * rng.uniform(0.85, 1.0),
                radius * rng.uniform(0.7, 1.0),
                n_vertices=240,
                harmonics=7,
                roughness=0.30,
                ragged=0.01,
            )
            poly = largest_polygon(poly.intersection(piece.buffer(-5 * px_um)))
            if poly is None or poly.area < 0.2 * math.pi * radius**2:
                continue
            tumours.append(shapely.set_precision(poly, 0.01))
            centres.append((cx, cy, radius))
            placed = True
            break
        if not placed:
            break
    return tumours


def random_point(
    rng: np.random.Generator, region: Any, *, tries: int = 200
) -> tuple[float, float] | None:
    """A uniform random point of ``region`` (rejection sampling), or None."""
    import shapely

    if region.is_empty:
        return None
    minx, miny, maxx, maxy = region.bounds
    xs = rng.uniform(minx, maxx, tries)
    ys = rng.uniform(miny, maxy, tries)
    hits = np.flatnonzero(shapely.contains_xy(region, xs, ys))
    return (float(xs[hits[0]]), float(ys[hits[0]])) if len(hits) else None


def make_fat(
    rng: np.random.Generator, tissue_union: Any, avoid: Any, px_um: float, short_px: float
) -> tuple[list[Any], list[Any]]:
    """Fat lobules: returns (lobules, adipocyte interiors), both shapely polygons."""
    import shapely
    from shapely.geometry import MultiPoint

    mm2 = tissue_union.area / px_um**2 / 1e6
    lobules: list[Any] = []
    cells: list[Any] = []
    for _ in range(rng.poisson(0.5 * mm2)):
        radius = min(rng.uniform(120, 320) * px_um, 0.2 * short_px)
        room = robust_difference(tissue_union.buffer(-0.3 * radius), avoid.buffer(radius))
        centre = random_point(rng, room)
        if centre is None or radius < 40 * px_um:
            continue
        blob = star_polygon(
            rng,
            *centre,
            radius,
            radius * rng.uniform(0.6, 1.0),
            n_vertices=120,
            harmonics=5,
            roughness=0.25,
        )
        blob = blob.intersection(tissue_union.buffer(-8 * px_um)).difference(avoid)
        blob = largest_polygon(blob)
        if blob is None or blob.area < (40 * px_um) ** 2:
            continue
        cell_r = rng.uniform(22, 36) * px_um
        pts = hex_points(rng, blob.bounds, 2 * cell_r, jitter=0.25)
        pts = pts[shapely.contains_xy(blob, pts[:, 0], pts[:, 1])]
        if len(pts) < 2:
            continue
        septum = rng.uniform(0.7, 1.2) * px_um
        for cell in shapely.voronoi_polygons(MultiPoint(pts), extend_to=blob).geoms:
            inner = largest_polygon(cell.intersection(blob).buffer(-septum))
            if inner is not None and inner.area > (0.4 * cell_r) ** 2 * math.pi:
                cells.append(shapely.set_precision(inner.simplify(0.3), 0.01))
        lobules.append(blob)
    return lobules, cells


def make_vessels(
    rng: np.random.Generator, tissue_union: Any, avoid: Any, px_um: float
) -> tuple[list[Any], list[Any]]:
    """Small vessels: returns (lumens, walls), the wall being the lumen grown by its thickness."""
    mm2 = tissue_union.area / px_um**2 / 1e6
    room = tissue_union.buffer(-30 * px_um).difference(avoid)
    lumens: list[Any] = []
    walls: list[Any] = []
    for _ in range(rng.poisson(10 * mm2)):
        a = rng.uniform(7, 35) * px_um
        b = a * rng.uniform(0.25, 0.8)
        thickness = rng.uniform(3, 8) * px_um
        centre = random_point(rng, room, tries=50)
        if centre is None:
            continue
        lumen = star_polygon(rng, *centre, a, b, n_vertices=64, harmonics=4, roughness=0.12)
        wall = lumen.buffer(thickness, quad_segs=4)
        if not room.contains(wall) or any(wall.intersects(w) for w in walls):
            continue
        lumens.append(lumen)
        walls.append(wall)
    return lumens, walls


def endothelium(
    rng: np.random.Generator, lumens: list[Any], px_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Endothelial nucleus centres along each lumen and their long-axis angles."""
    pts, angles = [], []
    for lumen in lumens:
        ring = lumen.exterior
        n = max(2, int(ring.length / (rng.uniform(14, 22) * px_um)))
        start = rng.uniform(0, ring.length / n)
        for k in range(n):
            s = start + k * ring.length / n
            p0, p1 = ring.interpolate(s - 1), ring.interpolate(s + 1)
            tx, ty = p1.x - p0.x, p1.y - p0.y
            norm = math.hypot(tx, ty) or 1.0
            nx, ny = ty / norm, -tx / norm  # a normal; flip it to point out of the lumen
            here = ring.interpolate(s)
            off = 1.3 * px_um
            if lumen.contains(_point(here.x + nx * off, here.y + ny * off)):
                nx, ny = -nx, -ny
            pts.append((here.x + nx * off, here.y + ny * off))
            angles.append(math.atan2(ty, tx) % math.pi)
    return np.asarray(pts, float).reshape(-1, 2), np.asarray(angles, float)


def _point(x: float, y: float) -> Any:
    from shapely.geometry import Point

    return Point(x, y)


def hex_points(
    rng: np.random.Generator,
    bounds: tuple[float, float, float, float],
    spacing: float,
    *,
    jitter: float = 0.12,
) -> np.ndarray:
    """A hexagonal grid of ``spacing`` px over ``bounds``, jittered by ``jitter * spacing``."""
    minx, miny, maxx, maxy = bounds
    row_h = spacing * math.sqrt(3) / 2
    ys = np.arange(miny, maxy + row_h, row_h)
    xs = np.arange(minx, maxx + spacing, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    return pts + rng.normal(0, jitter * spacing, pts.shape)


def poisson_points(rng: np.random.Generator, region: Any, density_px: float) -> np.ndarray:
    """Uniform random points of ``region``, ``density_px`` per px^2 on average, (n, 2)."""
    import shapely

    if region.is_empty:
        return np.empty((0, 2))
    minx, miny, maxx, maxy = region.bounds
    n = rng.poisson(density_px * (maxx - minx) * (maxy - miny))
    pts = np.column_stack([rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)])
    return pts[shapely.contains_xy(region, pts[:, 0], pts[:, 1])]
