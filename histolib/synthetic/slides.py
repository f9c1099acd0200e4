"""Synthetic whole-slide images with known ground truth (tissue, tumours, every cell).

A *layout* (:func:`make_layout`) holds everything that is true about a synthetic slide:
tissue pieces and tumour contours as shapely polygons, vessel lumens and fat cells as holes in
the tissue, red blood cells, and every nucleated cell (centre, class, nucleus shape) in level-0
pixels: tumour nests of large pale cancer nuclei with a rim and nucleoli, spindle stromal
nuclei, lymphocytes scattered and in dense aggregates, endothelial nuclei along the vessels.
It depends only on the seed, the size and the mpp, never on the stain, so the H&E and the
IHC renderings of one layout form a registered pair: the IHC rendering of an H&E region is
its "true" virtual IHC.

Rendering (:func:`render_region`) composes optical densities of the hematoxylin, eosin and DAB
stain vectors of :data:`skimage.color.rgb_from_hed` (the inverse of what
:func:`skimage.color.rgb2hed` separates), block by block: a region renders the same pixels
whichever block grid it is cut from. :func:`make_slide` writes a pyramidal JPEG TIFF that
OpenSlide opens with the right mpp, the tumour contours as QuPath GeoJSON (class ``Tumor``)
and every cell centre as CSV (``x,y,label,radius`` in level-0 px, label ``cancer|normal``).

Sizes are in microns and scale with the mpp. At 0.5 um/px normal nuclei (lymphocytes, spindle
stromal cells) have radii of about 5-7 px, which the authors' library detector finds with LoG
sigma 1..2 (H&E) or 1..3 (IHC); cancer nuclei have radii of about 12-15 px (sigma 8.5-10.6),
found with sigma 10..12 in H&E and 7..10 in IHC.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError

STAINS = ("he", "ihc")
CELL_COLUMNS = ("x", "y", "label", "radius")
TUMOUR_CLASS = "Tumor"

#: Cell kinds of a layout (``Layout.kind``); lymphocytes and stromal cells are "normal".
KIND_LYMPHOCYTE, KIND_STROMAL, KIND_CANCER, KIND_ENDOTHELIAL = 0, 1, 2, 3
KIND_NAMES = ("lymphocyte", "stromal", "cancer", "endothelial")

#: Orientations of the endothelial nucleus sprites (over 180 degrees).
_ORIENTATIONS = 16
#: Side of the square blocks a slide is rendered in (level-0 px).
BLOCK_SIZE = 1024
#: Margin (in microns, plus 4 px) rendered around each block so that blurs are seamless:
#: three times the widest Gaussian of the stroma texture (its truncation).
_HALO_UM = 7.5
#: skimage's optical-density scale (``combine_stains`` / ``separate_stains``).
_OD_SCALE = -math.log(1e-6)
#: Format version written into the TIFF description; a re-run reuses a slide only when equal.
_FORMAT_VERSION = 1
_DESCRIPTION_PREFIX = "histolib synthetic slide "
#: Slides larger than this (bytes of RGB) are assembled in a temporary file beside the output.
_MEMMAP_BYTES = 1 << 30


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sprite:
    """One pre-rendered nucleus shape (arrays are (row, col), centred on the nucleus centre).

    Attributes
    ----------
    density
        Hematoxylin density of the nucleus in [0, 1].
    inside
        Soft mask of the nucleus in [0, 1] (DAB is kept out of it).
    cytoplasm
        Soft mask of the cell's cytoplasm in [0, 1] (cancer cells), else None.
    radius
        Equivalent nucleus radius in px (radius of the disc of the same area).
    half
        The arrays are ``2 * half + 1`` px square.
    """

    density: np.ndarray
    inside: np.ndarray
    cytoplasm: np.ndarray | None
    radius: float
    half: int


@dataclass(frozen=True, eq=False)
class Layout:
    """Everything true about a synthetic slide; see :func:`make_layout`.

    Coordinates are level-0 px, (x, y). Cell centres lie on pixel centres (``k + 0.5``).

    ``tissue`` and ``tumours`` are shapely polygons; ``holes`` are empty spaces inside the
    tissue (vessel lumens, fat cells), ``walls`` the vessel walls (lumen grown by the wall
    thickness); ``rbc`` holds red blood cells in the lumens as rows ``(x, y, sprite)``. The
    nucleated cells (arrays ``x, y, kind, ...``) are those of the cells CSV.
    """

    width: int
    height: int
    mpp: float
    seed: int
    tissue: tuple[Any, ...]
    tumours: tuple[Any, ...]
    x: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    sprite: np.ndarray
    transform: np.ndarray
    shade: np.ndarray
    radius: np.ndarray
    sprites: tuple[tuple[Sprite, ...], ...]
    holes: tuple[Any, ...] = ()
    walls: tuple[Any, ...] = ()
    rbc: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False)
    rbc_sprites: tuple[np.ndarray, ...] = field(default=(), repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    _maps: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # a cache, rebuilt where the layout is used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def sprite_maps(self, i: int) -> tuple[Sprite, np.ndarray, np.ndarray, np.ndarray | None]:
        """Cell ``i``'s sprite and its density, nucleus and cytoplasm maps, as drawn (cached)."""
        k = (int(self.kind[i]), int(self.sprite[i]), int(self.transform[i]))
        found = self._maps.get(k)
        if found is None:
            sp = self.sprites[k[0]][k[1]]
            t = k[2]

            def tf(a: np.ndarray) -> np.ndarray:
                a = np.rot90(a, t % 4)
                return np.ascontiguousarray(a[:, ::-1] if t >= 4 else a)

            found = (
                sp,
                tf(sp.density),
                tf(sp.inside),
                None if sp.cytoplasm is None else tf(sp.cytoplasm),
            )
            self._maps[k] = found
        return found

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.x)

    @property
    def is_cancer(self) -> np.ndarray:
        """Boolean array, True for cancer cells."""
        return self.kind == KIND_CANCER

    @property
    def labels(self) -> np.ndarray:
        """Array of ``"cancer"`` / ``"normal"`` per cell."""
        return np.where(self.is_cancer, "cancer", "normal")

    @property
    def tumour_region(self) -> Any:
        """Union of the tumour contours (a shapely geometry, possibly empty)."""
        import shapely

        return shapely.union_all(list(self.tumours))

    @property
    def tissue_region(self) -> Any:
        """Union of the tissue pieces less the holes (a shapely geometry)."""
        import shapely

        region = shapely.union_all(list(self.tissue))
        return region.difference(shapely.union_all(list(self.holes))) if self.holes else region

    def polygon_bounds(self, name: str) -> np.ndarray:
        """Bounds ``(n, 4)`` of the polygons of attribute ``name`` (cached)."""
        import shapely

        key = ("bounds", name)
        if key not in self._maps:
            polys = getattr(self, name)
            self._maps[key] = (
                shapely.bounds(np.asarray(polys, dtype=object)) if polys else np.empty((0, 4))
            )
        return self._maps[key]

    def cells_in(
        self, x0: float, y0: float, w: float, h: float, *, margin: float = 0
    ) -> np.ndarray:
        """Indices of the cells whose centre lies in the box (level-0 px), grown by ``margin``."""
        sel = (
            (self.x >= x0 - margin)
            & (self.x < x0 + w + margin)
            & (self.y >= y0 - margin)
            & (self.y < y0 + h + margin)
        )
        return np.flatnonzero(sel)


@dataclass(frozen=True)
class SyntheticSlide:
    """What :func:`make_slide` wrote.

    Attributes
    ----------
    slide_path
        Pyramidal JPEG TIFF (OpenSlide "generic-tiff", mpp in its resolution tags).
    annotations_path
        QuPath GeoJSON FeatureCollection of the tumour contours, class ``Tumor``.
    cells_path
        CSV ``x,y,label,radius`` (level-0 px; label ``cancer`` or ``normal``).
    mpp, stain, width, height, seed, name
        How it was made.
    n_cells, n_cancer, n_tumours
        Ground-truth counts.
    reused
        True when an identical slide was already there and was kept.
    layout_options
        The :func:`make_layout` options beyond size, mpp and seed (see :meth:`layout`).
    """

    slide_path: Path
    annotations_path: Path
    cells_path: Path
    mpp: float
    stain: str
    width: int
    height: int
    seed: int
    name: str
    n_cells: int
    n_cancer: int
    n_tumours: int
    reused: bool = False
    layout_options: dict[str, Any] = field(default_factory=dict)

    @property
    def slide_id(self) -> str:
        """The slide id histolib gives this slide (its name)."""
        return self.name

    def layout(self) -> Layout:
        """The slide's layout (its ground truth), rebuilt from the parameters that made it."""
        return make_layout(
            self.width, self.height, mpp=self.mpp, seed=self.seed, **self.layout_options
        )


# --------------------------------------------------------------------------------------------
# Deterministic noise (depends on global coordinates only, so blocks are seamless)
# --------------------------------------------------------------------------------------------


def _hash01(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float32 from integer lattice coordinates (a 32-bit integer hash)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint32) * np.uint32(0x9E3779B1)
        h ^= iy.astype(np.uint32) * np.uint32(0x85EBCA77)
        h ^= np.uint32(key & 0xFFFFFFFF) * np.uint32(0xC2B2AE3D)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x2C1B3C6D)
        h ^= h >> np.uint32(12)
        h *= np.uint32(0x297A2D39)
        h ^= h >> np.uint32(15)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _value_noise_points(x: np.ndarray, y: np.ndarray, *, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at points (lattice ``cell`` px, smoothstep interpolation)."""
    gx, gy = x / cell, y / cell
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = _hash01(ix, iy, key), _hash01(ix + 1, iy, key)
    v01, v11 = _hash01(ix, iy + 1, key), _hash01(ix + 1, iy + 1, key)
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy


def _lerp(coords: np.ndarray, step: float, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Index (relative to node ``first``, nodes at ``k * step``) and weight of each coordinate."""
    g = coords / step - first
    i0 = np.floor(g).astype(np.intp)
    return i0, (g - i0).astype(np.float32)


def _separable_lerp(
    grid: np.ndarray, ry: np.ndarray, wy: np.ndarray, rx: np.ndarray, wx: np.ndarray
) -> np.ndarray:
    rows = grid[ry] * (1 - wy)[:, None]
    rows += grid[ry + 1] * wy[:, None]
    out = rows[:, rx]
    out *= 1 - wx
    out += rows[:, rx + 1] * wx
    return out


def _smooth_noise(xs: np.ndarray, ys: np.ndarray, *, scale: float, key: int) -> np.ndarray:
    """Gaussian-correlated noise (zero mean, unit std) of correlation length ``scale`` px.

    Evaluated on the grid ``ys x xs`` of level-0 coordinates, shape ``(len(ys), len(xs))``:
    white noise on a lattice of step ``scale / 3`` (hashed from the lattice coordinates, so a
    point's value does not depend on the box it is computed in), blurred, linearly interpolated.
    """
    from scipy import ndimage

    step = max(scale / 3.0, 1.0)
    sigma = scale / step
    pad = math.ceil(3 * sigma) + 1
    fx, fy = math.floor(xs.min() / step) - pad, math.floor(ys.min() / step) - pad
    mx = math.floor(xs.max() / step) + pad + 2 - fx
    my = math.floor(ys.max() / step) + pad + 2 - fy
    iy, ix = np.meshgrid(np.arange(fy, fy + my), np.arange(fx, fx + mx), indexing="ij")
    lattice = ndimage.gaussian_filter(_hash01(ix, iy, key) - np.float32(0.5), sigma)
    lattice *= np.float32(2 * math.sqrt(math.pi) * sigma * math.sqrt(12.0))
    return _separable_lerp(lattice, *_lerp(ys, step, fy), *_lerp(xs, step, fx))


class _CoarseGrid:
    """A global grid of step ``g`` px (nodes at ``(k + 0.5) * g``) covering a level-0 box.

    Slowly varying fields are computed on its nodes and interpolated to the pixel centres,
    which costs a fraction of computing them per pixel and keeps blocks seamless.
    """

    def __init__(self, x0: int, y0: int, w: int, h: int, g: int) -> None:
        self.g = g
        self.fx = math.floor((x0 + 0.5) / g - 0.5)
        self.fy = math.floor((y0 + 0.5) / g - 0.5)
        nx = math.floor((x0 + w - 0.5) / g - 0.5) + 2 - self.fx
        ny = math.floor((y0 + h - 0.5) / g - 0.5) + 2 - self.fy
        self.xs = (self.fx + np.arange(nx) + 0.5) * g
        self.ys = (self.fy + np.arange(ny) + 0.5) * g
        px = x0 + np.arange(w) + 0.5
        py = y0 + np.arange(h) + 0.5
        self._x = _lerp(px / g - 0.5, 1.0, self.fx)
        self._y = _lerp(py / g - 0.5, 1.0, self.fy)

    def noise(self, scale: float, key: int) -> np.ndarray:
        """:func:`_smooth_noise` on the nodes."""
        return _smooth_noise(self.xs, self.ys, scale=scale, key=key)

    def upsample(self, field: np.ndarray) -> np.ndarray:
        """A node field interpolated to the pixel centres of the box, (h, w) float32."""
        return _separable_lerp(field.astype(np.float32, copy=False), *self._y, *self._x)


_NOISE_TILE = 256
_NOISE_TEXTURE = 1024
_textures: dict[int, np.ndarray] = {}


def _noise_texture(key: int) -> np.ndarray:
    """A (1024, 1024) standard normal float32 texture, made once per key and process."""
    tex = _textures.get(key)
    if tex is None:
        rng = np.random.default_rng([key & 0xFFFFFFFF, 0x7E47])
        tex = _textures[key] = rng.standard_normal((_NOISE_TEXTURE, _NOISE_TEXTURE), np.float32)
    return tex


def _white_noise(x0: int, y0: int, w: int, h: int, *, key: int) -> np.ndarray:
    """Standard normal float32 noise on a (h, w) grid; each pixel's value depends on (x, y).

    Each 256 px cell of a global grid is a window of a noise texture at an offset hashed
    from the cell's position, so the noise is seamless across blocks and costs a copy.
    """
    out = np.empty((h, w), np.float32)
    tex = _noise_texture(key)
    t = _NOISE_TILE
    tys = np.arange(y0 // t, (y0 + h - 1) // t + 1)
    txs = np.arange(x0 // t, (x0 + w - 1) // t + 1)
    gy, gx = np.meshgrid(tys, txs, indexing="ij")
    span = _NOISE_TEXTURE - t
    oys = (_hash01(gx, gy, key * 2 + 1) * span).astype(int)
    oxs = (_hash01(gx, gy, key * 2 + 2) * span).astype(int)
    for j, ty in enumerate(tys):
        ay0, ay1 = max(y0, ty * t), min(y0 + h, (ty + 1) * t)
        for i, tx in enumerate(txs):
            ax0, ax1 = max(x0, tx * t), min(x0 + w, (tx + 1) * t)
            oy, ox = oys[j, i] - ty * t, oxs[j, i] - tx * t
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tex[
                oy + ay0 : oy + ay1, ox + ax0 : ox + ax1
            ]
    return out


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def _star_polygon(
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


def _largest_polygon(geom: Any) -> Any:
    """The largest polygon of a (multi)polygon result; None when empty."""
    if geom.is_empty:
        return None
    if geom.geom_type == "Polygon":
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon"]
    return max(polys, key=lambda g: g.area) if polys else None


def _make_tissue(rng: np.random.Generator, width: int, height: int, px_um: float) -> list[Any]:
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
        poly = _star_polygon(
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
        poly = _largest_polygon(poly.intersection(frame))
        if poly is not None:
            pieces.append(poly)
    return pieces


def _make_tumours(
    rng: np.random.Generator,
    tissue: list[Any],
    n_tumours: int | None,
    tumour_fraction: float,
    px_um: float,
    width: int,
    height: int,
) -> list[Any]:
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
            poly = _star_polygon(
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
            poly = _largest_polygon(poly.intersection(piece.buffer(-5 * px_um)))
            if poly is None or poly.area < 0.2 * math.pi * radius**2:
                continue
            tumours.append(shapely.set_precision(poly, 0.01))
            centres.append((cx, cy, radius))
            placed = True
            break
        if not placed:
            break
    return tumours


def _sprite(
    rng: np.random.Generator,
    kind: int,
    px_um: float,
    *,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
    phi: float | None = None,
) -> Sprite:
    """Render one nucleus (and, for cancer cells, its cytoplasm) as small arrays.

    ``cancer_texture`` in [0, 1] scales what tells a cancer nucleus apart besides its size:
    1 = pale vesicular chromatin, dark rim and nucleoli; 0 = as dense and plain as a normal
    nucleus. The random draws do not depend on it, so only the appearance changes. ``phi``
    fixes the orientation of the long axis (endothelial cells lie along the vessel wall).
    """
    from scipy import ndimage

    if kind == KIND_LYMPHOCYTE:
        r = rng.uniform(2.4, 3.1) * px_um
        aspect = rng.uniform(1.0, 1.15)
        a, b, rough, taper = r * math.sqrt(aspect), r / math.sqrt(aspect), 0.04, 0.0
    elif kind == KIND_STROMAL:
        a, b = rng.uniform(4.0, 6.0) * px_um, rng.uniform(1.4, 2.0) * px_um
        rough, taper = 0.03, 0.35
    elif kind == KIND_ENDOTHELIAL:
        a, b = rng.uniform(4.5, 6.5) * px_um, rng.uniform(1.1, 1.5) * px_um
        rough, taper = 0.02, 0.3
    else:
        r = rng.uniform(*cancer_radius_um) * px_um
        aspect = rng.uniform(1.0, 1.3)
        a, b, rough, taper = r * math.sqrt(aspect), r / math.sqrt(aspect), 0.07, 0.0
    cyt_r = rng.uniform(1.6, 1.9) * math.sqrt(a * b) if kind == KIND_CANCER else 0.0
    offset = rng.uniform(0, 0.2) * math.sqrt(a * b) if kind == KIND_CANCER else 0.0
    half = math.ceil(max(a * 1.25, cyt_r * 1.2 + offset)) + 2
    v, u = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    drawn = rng.uniform(0, np.pi)
    phi = drawn if phi is None else phi
    p = u * math.cos(phi) + v * math.sin(phi)
    q = -u * math.sin(phi) + v * math.cos(phi)
    b_eff = b * np.clip(1 - taper * (p / a) ** 2, 0.3, 1)
    theta = np.arctan2(q / b, p / a)
    scale = np.ones_like(theta)
    for k in range(2, 7):
        scale += rng.normal(0, rough / k**0.8) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.sqrt((p / a) ** 2 + (q / b_eff) ** 2) / scale
    r_eq = math.sqrt(a * b)
    inside = np.clip((1 - d) * r_eq / 1.0 + 0.5, 0, 1)
    radius = math.sqrt(float(inside.sum()) / math.pi)
    grain = ndimage.gaussian_filter(rng.standard_normal(d.shape), 0.8 * px_um / 2)
    grain /= grain.std() + 1e-9
    if kind != KIND_CANCER:
        level = rng.uniform(0.85, 1.0) if kind == KIND_LYMPHOCYTE else rng.uniform(0.72, 0.92)
        density = inside * level * np.clip(1 + 0.08 * grain, 0, 1.2)
        cytoplasm = None
    else:
        t = float(cancer_texture)
        pale = rng.uniform(0.38, 0.5)
        solid = rng.uniform(0.75, 0.9)
        interior = ((1 - t) * solid + t * pale) * np.clip(1 + (0.08 + 0.14 * t) * grain, 0.3, 2)
        rim_width = 0.6 * px_um
        rim = 0.72 * t * np.exp(-(((1 - d) * r_eq / rim_width) ** 2))
        nucleoli = np.zeros_like(d)
        for _ in range(int(rng.integers(1, 3))):
            ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.45) * r_eq
            nr = rng.uniform(0.6, 0.9) * px_um
            nucleoli = np.maximum(
                nucleoli,
                0.95
                * t
                * np.exp(-((u - rr * math.cos(ang)) ** 2 + (v - rr * math.sin(ang)) ** 2) / nr**2),
            )
        density = inside * np.clip(np.maximum(np.maximum(interior, rim), nucleoli), 0, 1)
        ang = rng.uniform(0, 2 * np.pi)
        cu, cv = u - offset * math.cos(ang), v - offset * math.sin(ang)
        ctheta = np.arctan2(cv, cu)
        cscale = np.ones_like(ctheta)
        for k in range(2, 8):
            cscale += rng.normal(0, 0.1 / k**0.7) * np.cos(k * ctheta + rng.uniform(0, 2 * np.pi))
        dc = np.hypot(cu, cv) / (cyt_r * cscale)
        cytoplasm = np.clip((1 - dc) * cyt_r / 1.5 + 0.5, 0, 1).astype(np.float32)
    return Sprite(
        density=density.astype(np.float32),
        inside=inside.astype(np.float32),
        cytoplasm=cytoplasm,
        radius=radius,
        half=half,
    )


def _rbc_sprite(rng: np.random.Generator, px_um: float) -> np.ndarray:
    """A red blood cell seen flat: a biconcave disc of eosin density (rim 1, centre ~0.55)."""
    r = rng.uniform(3.2, 3.9) * px_um
    aspect = rng.uniform(1.0, 1.2)
    half = math.ceil(r * 1.2) + 2
    v, u = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    phi = rng.uniform(0, np.pi)
    p = u * math.cos(phi) + v * math.sin(phi)
    q = -u * math.sin(phi) + v * math.cos(phi)
    d = np.hypot(p * math.sqrt(aspect), q / math.sqrt(aspect)) / r
    edge = np.clip((1 - d) * r / 0.8 + 0.5, 0, 1)
    return (edge * (0.55 + 0.45 * np.clip(d, 0, 1) ** 2)).astype(np.float32)


def _random_point(
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


def _make_fat(
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
        room = tissue_union.buffer(-0.3 * radius).difference(avoid.buffer(radius))
        centre = _random_point(rng, room)
        if centre is None or radius < 40 * px_um:
            continue
        blob = _star_polygon(
            rng,
            *centre,
            radius,
            radius * rng.uniform(0.6, 1.0),
            n_vertices=120,
            harmonics=5,
            roughness=0.25,
        )
        blob = blob.intersection(tissue_union.buffer(-8 * px_um)).difference(avoid)
        blob = _largest_polygon(blob)
        if blob is None or blob.area < (40 * px_um) ** 2:
            continue
        cell_r = rng.uniform(22, 36) * px_um
        pts = _hex_points(rng, blob.bounds, 2 * cell_r, jitter=0.25)
        pts = pts[shapely.contains_xy(blob, pts[:, 0], pts[:, 1])]
        if len(pts) < 2:
            continue
        septum = rng.uniform(0.7, 1.2) * px_um
        for cell in shapely.voronoi_polygons(MultiPoint(pts), extend_to=blob).geoms:
            inner = _largest_polygon(cell.intersection(blob).buffer(-septum))
            if inner is not None and inner.area > (0.4 * cell_r) ** 2 * math.pi:
                cells.append(shapely.set_precision(inner.simplify(0.3), 0.01))
        lobules.append(blob)
    return lobules, cells


def _make_vessels(
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
        centre = _random_point(rng, room, tries=50)
        if centre is None:
            continue
        lumen = _star_polygon(rng, *centre, a, b, n_vertices=64, harmonics=4, roughness=0.12)
        wall = lumen.buffer(thickness, quad_segs=4)
        if not room.contains(wall) or any(wall.intersects(w) for w in walls):
            continue
        lumens.append(lumen)
        walls.append(wall)
    return lumens, walls


def _endothelium(
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


def _hex_points(
    rng: np.random.Generator,
    bounds: tuple[float, float, float, float],
    spacing: float,
    *,
    jitter: float = 0.12,
) -> np.ndarray:
    minx, miny, maxx, maxy = bounds
    row_h = spacing * math.sqrt(3) / 2
    ys = np.arange(miny, maxy + row_h, row_h)
    xs = np.arange(minx, maxx + spacing, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    return pts + rng.normal(0, jitter * spacing, pts.shape)


def _poisson_points(rng: np.random.Generator, region: Any, density_px: float) -> np.ndarray:
    import shapely

    if region.is_empty:
        return np.empty((0, 2))
    minx, miny, maxx, maxy = region.bounds
    n = rng.poisson(density_px * (maxx - minx) * (maxy - miny))
    pts = np.column_stack([rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)])
    return pts[shapely.contains_xy(region, pts[:, 0], pts[:, 1])]


def _thin(
    points: np.ndarray, extent: np.ndarray, factor: np.ndarray, core: np.ndarray
) -> np.ndarray:
    """Greedy removal of overlapping cells, earlier cells first; returns the kept mask.

    Cells ``i`` and ``j`` overlap when closer than ``(extent_i + extent_j) * min(factor)``,
    or, when both have a ``core`` > 0, closer than ``core_i + core_j``.
    """
    from scipy.spatial import cKDTree

    keep = np.ones(len(points), bool)
    if len(points) < 2:
        return keep
    pairs = cKDTree(points).query_pairs(r=2 * float(extent.max()), output_type="ndarray")
    if len(pairs) == 0:
        return keep
    i, j = pairs[:, 0], pairs[:, 1]
    dist = np.hypot(*(points[i] - points[j]).T)
    need = (extent[i] + extent[j]) * np.minimum(factor[i], factor[j])
    # two cells that both have a core extent (cancer cells) may share cytoplasm
    both = (core[i] > 0) & (core[j] > 0)
    need[both] = core[i][both] + core[j][both]
    bad = pairs[dist < need]
    bad.sort(axis=1)
    bad = bad[np.lexsort((bad[:, 1], bad[:, 0]))]
    for a, b in bad.tolist():
        if keep[a] and keep[b]:
            keep[b] = False
    return keep


def make_layout(
    width: int = 4096,
    height: int = 4096,
    *,
    mpp: float = 0.5,
    seed: int = 0,
    n_tumours: int | None = None,
    tumour_fraction: float = 0.25,
    cell_density: float = 1.0,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
) -> Layout:
    """Draw the tissue, tumours and cells of a synthetic slide.

    The result depends only on the arguments (never on a stain), so renderings of one layout
    in H&E and IHC are registered.

    Parameters
    ----------
    width, height
        Level-0 size in px.
    mpp
        Microns per pixel at level 0; every size is drawn in microns and scales with it.
    seed
        Random seed.
    n_tumours
        Number of tumour nests; None chooses as many as cover about ``tumour_fraction`` of
        the tissue. Fewer are placed when the tissue has no room for more.
    tumour_fraction
        Target fraction of the tissue area inside tumour contours when ``n_tumours`` is None.
    cell_density
        Multiplier of the stromal and lymphocyte densities.
    cancer_radius_um
        Range of cancer nucleus radii in microns (normal nuclei: about 2.4-3.1 um
        lymphocytes, 4-6 x 1.4-2 um spindle cells).
    cancer_texture
        0..1, how much cancer nuclei differ from normal ones besides size (see
        :func:`_sprite`); lower values make a harder detection task.

    Returns
    -------
    Layout
    """
    import shapely

    _check_size(width, height, mpp)
    if n_tumours is not None and n_tumours < 0:
        raise ConfigError(f"n_tumours must be >= 0, not {n_tumours}")
    if not 0 <= tumour_fraction <= 0.9:
        raise ConfigError(f"tumour_fraction must be in [0, 0.9], not {tumour_fraction}")
    if not cell_density >= 0:
        raise ConfigError(f"cell_density must be >= 0, not {cell_density}")
    lo, hi = (float(v) for v in cancer_radius_um)
    if not 0 < lo <= hi:
        raise ConfigError(
            f"cancer_radius_um must be (low, high) with 0 < low <= high, not {cancer_radius_um}"
        )
    if not 0 <= cancer_texture <= 1:
        raise ConfigError(f"cancer_texture must be in [0, 1], not {cancer_texture}")
    px_um = 1.0 / mpp
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5E17])
    tissue = _make_tissue(rng, width, height, px_um)
    tumours = _make_tumours(rng, tissue, n_tumours, tumour_fraction, px_um, width, height)
    sprites = tuple(
        tuple(
            _sprite(rng, kind, px_um, cancer_radius_um=(lo, hi), cancer_texture=cancer_texture)
            for _ in range(48)
        )
        for kind in range(3)
    )
    endothelial = tuple(
        _sprite(rng, KIND_ENDOTHELIAL, px_um, phi=(j % _ORIENTATIONS) * math.pi / _ORIENTATIONS)
        for j in range(48)
    )
    sprites = (*sprites, endothelial)
    rbc_sprites = tuple(_rbc_sprite(rng, px_um) for _ in range(12))
    radii = [np.array([s.radius for s in bank]) for bank in sprites]
    cyt = np.array([s.radius for s in sprites[KIND_CANCER]]) * 1.75
    tissue_union = shapely.union_all(tissue)
    tumour_union = shapely.union_all(tumours) if tumours else shapely.Polygon()
    um2 = px_um * px_um  # px^2 per um^2

    # Fat lobules and small vessels (lumens with red blood cells), away from the tumours.
    avoid = tumour_union.buffer(40 * px_um)
    lobules, fat_cells = _make_fat(rng, tissue_union, avoid, px_um, min(width, height))
    if lobules:
        avoid = avoid.union(shapely.union_all(lobules).buffer(20 * px_um))
    lumens, walls = _make_vessels(rng, tissue_union, avoid, px_um)
    endo, endo_angle = _endothelium(rng, lumens, px_um)
    holes = lumens + fat_cells
    rbc_pts = [np.empty((0, 2))]
    for lumen in lumens:
        fill = rng.uniform(0, 0.8)
        rbc_pts.append(
            _poisson_points(rng, lumen.buffer(-2.5 * px_um), fill / (math.pi * (3.6 * px_um) ** 2))
        )
    rbc_xy = np.floor(np.concatenate(rbc_pts)) + 0.5
    rbc = np.column_stack([rbc_xy, rng.integers(0, len(rbc_sprites), len(rbc_xy))])

    # Cancer cells: a jittered hexagonal packing inside each tumour, broken into nests.
    cancer_pts = []
    for poly in tumours:
        inner = poly.buffer(-float(radii[KIND_CANCER].max()) - 2)
        if inner.is_empty:
            continue
        pts = _hex_points(rng, inner.bounds, 2 * float(cyt.mean()) * 0.95)
        pts = pts[shapely.contains_xy(inner, pts[:, 0], pts[:, 1])]
        nests = _value_noise_points(pts[:, 0], pts[:, 1], cell=70 * px_um, key=seed * 7 + 1)
        cancer_pts.append(pts[nests > 0.2])
    cancer = np.concatenate(cancer_pts) if cancer_pts else np.empty((0, 2))

    # Lymphocytes: dense aggregates outside the tumours, and scattered cells everywhere.
    tissue_mm2 = tissue_union.area / um2 / 1e6
    lymph_pts = []
    outside = tissue_union.difference(tumour_union.buffer(40 * px_um))
    n_aggr = rng.poisson(max(tissue_mm2, 0.3) * 0.8 * cell_density)
    for _ in range(n_aggr):
        centre = _poisson_points(rng, outside, 5e-5 / um2)
        if len(centre) == 0:
            continue
        n = int(rng.uniform(40, 250))
        sigma = rng.uniform(18, 30) * px_um * math.sqrt(n / 100)
        lymph_pts.append(centre[0] + rng.normal(0, sigma, (n, 2)))
    lymph_pts.append(_poisson_points(rng, tissue_union, 220e-6 / um2 * cell_density))
    lymph = np.concatenate(lymph_pts)
    lymph = lymph[shapely.contains_xy(tissue_union, lymph[:, 0], lymph[:, 1])]
    stromal = _poisson_points(rng, tissue_union, 900e-6 / um2 * cell_density)

    pts = np.concatenate([cancer, endo, lymph, stromal])
    kind = np.concatenate(
        [
            np.full(len(cancer), KIND_CANCER, np.int8),
            np.full(len(endo), KIND_ENDOTHELIAL, np.int8),
            np.full(len(lymph), KIND_LYMPHOCYTE, np.int8),
            np.full(len(stromal), KIND_STROMAL, np.int8),
        ]
    )
    sprite = np.empty(len(pts), np.int16)
    for k in (KIND_LYMPHOCYTE, KIND_STROMAL, KIND_CANCER):
        sel = kind == k
        sprite[sel] = rng.integers(0, len(sprites[k]), int(sel.sum()))
    orient = np.round(endo_angle / (math.pi / _ORIENTATIONS)).astype(int) % _ORIENTATIONS
    sprite[kind == KIND_ENDOTHELIAL] = orient + _ORIENTATIONS * rng.integers(0, 3, len(endo))
    radius = np.array([sprites[k][s].radius for k, s in zip(kind, sprite, strict=True)], np.float32)
    extent = np.where(kind == KIND_CANCER, 1.75 * radius, radius)
    extent = np.where(kind == KIND_STROMAL, 1.1 * radius, extent)
    factor = np.where(kind == KIND_LYMPHOCYTE, 0.9, 1.05)
    pts = np.floor(pts) + 0.5
    inside_frame = (pts[:, 0] > 0) & (pts[:, 0] < width) & (pts[:, 1] > 0) & (pts[:, 1] < height)
    core = np.where(kind == KIND_CANCER, 1.2 * radius, 0.0)
    keep = _thin(pts, extent, factor, core) & inside_frame
    if holes:
        in_hole = shapely.contains_xy(shapely.union_all(holes), pts[:, 0], pts[:, 1])
        keep &= ~in_hole
    pts, kind, sprite, radius = pts[keep], kind[keep], sprite[keep], radius[keep]
    n = len(pts)
    transform = rng.integers(0, 8, n).astype(np.int8)
    transform[kind == KIND_ENDOTHELIAL] = 0  # drawn along the wall already
    shade = np.where(
        kind == KIND_CANCER, rng.uniform(0.85, 1.15, n), rng.uniform(0.85, 1.08, n)
    ).astype(np.float32)
    return Layout(
        width=int(width),
        height=int(height),
        mpp=float(mpp),
        seed=int(seed),
        tissue=tuple(tissue),
        tumours=tuple(tumours),
        x=pts[:, 0].copy(),
        y=pts[:, 1].copy(),
        kind=kind,
        sprite=sprite,
        transform=transform,
        shade=shade,
        radius=radius,
        sprites=sprites,
        holes=tuple(holes),
        walls=tuple(walls),
        rbc=rbc,
        rbc_sprites=rbc_sprites,
        params={
            "width": int(width),
            "height": int(height),
            "mpp": float(mpp),
            "seed": int(seed),
            "n_tumours": n_tumours,
            "tumour_fraction": float(tumour_fraction),
            "cell_density": float(cell_density),
            "cancer_radius_um": [lo, hi],
            "cancer_texture": float(cancer_texture),
        },
    )


def _check_size(width: int, height: int, mpp: float) -> None:
    if int(width) < 64 or int(height) < 64:
        raise ConfigError(f"slide size must be at least 64 x 64 px, not {width} x {height}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ConfigError(f"mpp must be a positive number, not {mpp}")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _fill_ring_parity(ring: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Crossing counts of one closed ring: (h, w + 1) int32 whose row cumsum parity is inside."""
    acc = np.zeros((h, w + 1), np.int32)
    xa, ya, xb, yb = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    keep = (hi > y0) & (lo < y0 + h) & (ya != yb)
    xa, ya, xb, yb = xa[keep], ya[keep], xb[keep], yb[keep]
    if len(xa) == 0:
        return acc
    yc = (y0 + np.arange(h) + 0.5)[:, None]
    crosses = (ya <= yc) != (yb <= yc)
    rows, edges = np.nonzero(crosses)
    yr = yc[rows, 0]
    xi = xa[edges] + (yr - ya[edges]) * (xb[edges] - xa[edges]) / (yb[edges] - ya[edges])
    # pixel col c lies left of the crossing when its centre x0 + c + 0.5 < xi
    k = np.clip(np.ceil(xi - x0 - 0.5), 0, w).astype(np.int64)
    np.add.at(acc, (rows, np.zeros_like(k)), 1)
    np.add.at(acc, (rows, k), -1)
    return acc


def _rasterize_polygons(
    polys: tuple[Any, ...], x0: int, y0: int, w: int, h: int, *, bounds: np.ndarray | None = None
) -> np.ndarray:
    """Boolean (h, w) mask: pixel centre (x0 + col + 0.5, y0 + row + 0.5) inside a polygon.

    A scanline fill (even-odd per polygon, holes respected), exact at pixel centres, done in
    each polygon's bounding window. ``bounds`` (n, 4) may be given to skip far polygons fast.
    """
    import shapely
    from shapely.geometry import box

    mask = np.zeros((h, w), bool)
    if not polys:
        return mask
    if bounds is None:
        bounds = shapely.bounds(np.asarray(polys, dtype=object))
    near = np.flatnonzero(
        (bounds[:, 0] < x0 + w)
        & (bounds[:, 2] > x0)
        & (bounds[:, 1] < y0 + h)
        & (bounds[:, 3] > y0)
    )
    for i in near:
        poly = polys[i]
        minx, miny, maxx, maxy = bounds[i]
        c0, c1 = max(0, math.ceil(minx - x0 - 0.5)), min(w, math.floor(maxx - x0 - 0.5) + 1)
        r0, r1 = max(0, math.ceil(miny - y0 - 0.5)), min(h, math.floor(maxy - y0 - 0.5) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        if (
            c0 == 0
            and r0 == 0
            and c1 == w
            and r1 == h
            and poly.contains(box(x0, y0, x0 + w, y0 + h))
        ):
            mask[:] = True
            continue
        wx, wy, ww, wh = x0 + c0, y0 + r0, c1 - c0, r1 - r0
        acc = _fill_ring_parity(np.asarray(poly.exterior.coords), wx, wy, ww, wh)
        for ring in poly.interiors:
            acc += _fill_ring_parity(np.asarray(ring.coords), wx, wy, ww, wh)
        mask[r0:r1, c0:c1] |= (np.cumsum(acc[:, :ww], axis=1) % 2).astype(bool)
    return mask


def _layout_mask(layout: Layout, name: str, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    return _rasterize_polygons(
        getattr(layout, name), x0, y0, w, h, bounds=layout.polygon_bounds(name)
    )


def tumour_mask(layout: Layout, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The true tumour region of a level-0 box as a (h, w) boolean array.

    Pixel (row, col) is True when its centre ``(x0 + col + 0.5, y0 + row + 0.5)`` lies inside a
    tumour contour (the same rule as ``histolib.annotations.reading.rasterize`` at downsample 1).
    """
    return _layout_mask(layout, "tumours", int(x0), int(y0), int(w), int(h))


def tissue_mask(layout: Layout, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The true tissue region of a level-0 box as a (h, w) boolean array (pixel centres).

    Vessel lumens and fat cells are not tissue.
    """
    x0, y0, w, h = int(x0), int(y0), int(w), int(h)
    mask = _layout_mask(layout, "tissue", x0, y0, w, h)
    if mask.any() and layout.holes:
        mask &= ~_layout_mask(layout, "holes", x0, y0, w, h)
    return mask


def _paste_cells(
    layout: Layout, bx0: int, by0: int, bw: int, bh: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus density, nucleus mask and cytoplasm maps of the box (float32, (bh, bw))."""
    density = np.zeros((bh, bw), np.float32)
    inside = np.zeros((bh, bw), np.float32)
    cyto = np.zeros((bh, bw), np.float32)
    max_half = max(sp.half for bank in layout.sprites for sp in bank)
    for i in layout.cells_in(bx0, by0, bw, bh, margin=max_half + 1):
        sp, dens, ins, cyt = layout.sprite_maps(i)
        col, row = int(layout.x[i]) - bx0, int(layout.y[i]) - by0
        hf = sp.half
        c0, c1 = max(col - hf, 0), min(col + hf + 1, bw)
        r0, r1 = max(row - hf, 0), min(row + hf + 1, bh)
        if c0 >= c1 or r0 >= r1:
            continue
        sub = (slice(r0 - row + hf, r1 - row + hf), slice(c0 - col + hf, c1 - col + hf))
        np.maximum(density[r0:r1, c0:c1], dens[sub] * layout.shade[i], out=density[r0:r1, c0:c1])
        np.maximum(inside[r0:r1, c0:c1], ins[sub], out=inside[r0:r1, c0:c1])
        if cyt is not None:
            np.maximum(cyto[r0:r1, c0:c1], cyt[sub], out=cyto[r0:r1, c0:c1])
    return density, inside, cyto


def _paste_rbc(layout: Layout, bx0: int, by0: int, bw: int, bh: int) -> np.ndarray | None:
    """Eosin density of the red blood cells in the box, or None when there are none."""
    if len(layout.rbc) == 0:
        return None
    half = max(s.shape[0] for s in layout.rbc_sprites) // 2 + 1
    xs, ys = layout.rbc[:, 0], layout.rbc[:, 1]
    near = np.flatnonzero(
        (xs >= bx0 - half) & (xs < bx0 + bw + half) & (ys >= by0 - half) & (ys < by0 + bh + half)
    )
    if len(near) == 0:
        return None
    out = np.zeros((bh, bw), np.float32)
    for i in near:
        spr = layout.rbc_sprites[int(layout.rbc[i, 2])]
        hf = spr.shape[0] // 2
        col, row = int(xs[i]) - bx0, int(ys[i]) - by0
        c0, c1 = max(col - hf, 0), min(col + hf + 1, bw)
        r0, r1 = max(row - hf, 0), min(row + hf + 1, bh)
        if c0 >= c1 or r0 >= r1:
            continue
        sub = spr[r0 - row + hf : r1 - row + hf, c0 - col + hf : c1 - col + hf]
        np.maximum(out[r0:r1, c0:c1], sub, out=out[r0:r1, c0:c1])
    return out


def _stain_vectors() -> np.ndarray:
    from skimage.color import rgb_from_hed

    return np.asarray(rgb_from_hed, np.float32)


def _fibres(noise: np.ndarray, *, long_sigma: float, short_sigma: float, axis: int) -> np.ndarray:
    """Unit-variance fibre texture: white noise blurred along ``axis`` (two box filters
    approximating a Gaussian of ``long_sigma``) and across it (a Gaussian of ``short_sigma``)."""
    from scipy import ndimage

    width = max(1, round(math.sqrt(6 * long_sigma**2 + 1)))
    out = ndimage.uniform_filter1d(noise, width, axis=axis)
    ndimage.uniform_filter1d(out, width, axis=axis, output=out)
    ndimage.gaussian_filter1d(out, short_sigma, axis=1 - axis, output=out, truncate=3.0)
    # variance of white noise after the two boxes (a triangle) and the Gaussian
    tri = np.convolve(np.ones(width), np.ones(width)) / width**2
    out *= np.float32(1 / math.sqrt(float((tri**2).sum()) / (2 * math.sqrt(math.pi) * short_sigma)))
    return out


def render_region(
    layout: Layout, x0: int, y0: int, w: int, h: int, *, stain: str = "he"
) -> np.ndarray:
    """Render a level-0 box of a layout as an (h, w, 3) uint8 RGB array.

    Parameters
    ----------
    layout
        From :func:`make_layout`.
    x0, y0
        Level-0 origin of the box (may lie partly outside the slide: that is background).
    w, h
        Size in px.
    stain
        ``"he"`` or ``"ihc"`` (hematoxylin + DAB, DAB in the cytoplasm of cancer cells).

    Returns
    -------
    numpy.ndarray
        The pixels the slide written by :func:`make_slide` holds there before JPEG
        compression (the same whichever block grid they are cut from, to within one grey
        level of floating-point rounding).
    """
    from scipy import ndimage

    if stain not in STAINS:
        raise ConfigError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    x0, y0, w, h = int(x0), int(y0), int(w), int(h)
    m = math.ceil(_HALO_UM / layout.mpp) + 4
    bx0, by0, bw, bh = x0 - m, y0 - m, w + 2 * m, h + 2 * m
    tissue = tissue_mask(layout, bx0, by0, bw, bh)
    rbc = _paste_rbc(layout, bx0, by0, bw, bh)
    if not tissue.any() and rbc is None:
        return np.full((h, w, 3), 255, np.uint8)
    px_um = 1.0 / layout.mpp
    key = layout.seed * 1009
    inner = (slice(m, m + h), slice(m, m + w))
    if tissue.all():
        tis: Any = np.float32(1.0)
    else:
        tis = ndimage.gaussian_filter(tissue.astype(np.float32), 0.6 * px_um)[inner]
    density, inside, cyto = (a[inner] for a in _paste_cells(layout, bx0, by0, bw, bh))

    # Stroma: wavy fibres whose direction drifts, density drifting at ~100 um, clefts.
    fine = _white_noise(bx0, by0, bw, bh, key=key + 1)
    fib_a = _fibres(fine, long_sigma=2.5 * px_um, short_sigma=0.6 * px_um, axis=1)[inner]
    fib_b = _fibres(fine, long_sigma=2.5 * px_um, short_sigma=0.6 * px_um, axis=0)[inner]
    grid = _CoarseGrid(x0, y0, w, h, max(1, round(1.5 * px_um)))
    mix = grid.upsample(np.clip(grid.noise(40 * px_um, key + 2) * 0.6 + 0.5, 0, 1))
    fib_a -= fib_b
    fib_a *= mix
    fib_a += fib_b  # mix * a + (1 - mix) * b, unit variance
    fib_a *= np.float32(0.3)
    fib_a += 1
    stroma = np.clip(fib_a, 0.3, 2, out=fib_a)
    drift = np.clip(grid.noise(100 * px_um, key + 3) * 0.22 + 1, 0.4, 1.6)
    cleft = grid.noise(10 * px_um, key + 4) + 0.5 * grid.noise(4 * px_um, key + 7)
    stroma *= grid.upsample(drift * np.clip(2.0 - 0.85 * cleft, 0.12, 1.0))
    stroma *= tis
    if layout.walls:
        wall = _layout_mask(layout, "walls", x0, y0, w, h)
        if wall.any():
            stroma *= 1 + 0.9 * wall.astype(np.float32)

    vec = _stain_vectors() * np.float32(-_OD_SCALE)
    if stain == "he":
        cyto *= tis
        maps = [
            (vec[0], 0.005 * stroma + 0.13 * density + 0.012 * cyto),
            (vec[1], 0.028 * stroma + 0.016 * cyto),
        ]
        if rbc is not None:
            rbc = rbc[inner]
            maps += [(vec[1], 0.06 * rbc), (vec[2], 0.025 * rbc)]
    else:
        tex = grid.upsample(np.clip(grid.noise(3 * px_um, key + 5) * 0.18 + 1, 0.5, 1.5))
        inside -= 1
        cyto *= inside
        cyto *= tex
        cyto *= np.float32(-0.13)
        cyto *= tis  # DAB: 0.13 * cytoplasm * (1 - nucleus) * texture * tissue
        maps = [
            (vec[0], 0.007 * stroma + 0.11 * density),
            (vec[2], cyto),
            (np.full(3, -_OD_SCALE, np.float32), 0.0025 * stroma),
        ]
        if rbc is not None:  # haemoglobin: pale orange-red without eosin
            rbc = rbc[inner]
            maps += [(vec[1], 0.03 * rbc), (vec[2], 0.012 * rbc)]
    sensor = fine[inner] * np.float32(1.6)
    sensor += 0.5
    out = np.empty((h, w, 3), np.uint8)
    od = np.empty((h, w), np.float32)
    for c in range(3):
        np.multiply(maps[0][1], maps[0][0][c], out=od)
        for v, amount in maps[1:]:
            od += amount * v[c]
        np.exp(od, out=od)
        od *= 255
        od += sensor
        np.clip(od, 0, 255, out=od)
        out[..., c] = od
    return out


# --------------------------------------------------------------------------------------------
# Slides
# --------------------------------------------------------------------------------------------


def _blocks(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    return [
        (x0, y0, min(size, width - x0), min(size, height - y0))
        for y0 in range(0, height, size)
        for x0 in range(0, width, size)
    ]


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(layout: Layout, stain: str) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _WORKER_STATE["layout"] = layout
    _WORKER_STATE["stain"] = stain


def _render_block_job(block: tuple[int, int, int, int]) -> np.ndarray:
    return render_region(_WORKER_STATE["layout"], *block, stain=_WORKER_STATE["stain"])


def render_slide_array(
    layout: Layout,
    *,
    stain: str,
    out: np.ndarray | None = None,
    workers: int = 1,
    on_block: Callable[[], None] | None = None,
) -> np.ndarray:
    """Render the whole layout into an (height, width, 3) uint8 array, block by block.

    Parameters
    ----------
    layout
        From :func:`make_layout`.
    stain
        ``"he"`` or ``"ihc"``.
    out
        A preallocated array (for example a ``numpy.memmap``); None allocates one.
    workers
        Processes rendering blocks (1: in this process).
    on_block
        Called after each block is in place (progress).
    """
    if out is None:
        out = np.empty((layout.height, layout.width, 3), np.uint8)
    blocks = _blocks(layout.width, layout.height, BLOCK_SIZE)
    workers = max(1, min(int(workers), len(blocks)))

    def place(block: tuple[int, int, int, int], rgb: np.ndarray) -> None:
        x0, y0, w, h = block
        out[y0 : y0 + h, x0 : x0 + w] = rgb
        if on_block is not None:
            on_block()

    if workers == 1:
        for block in blocks:
            place(block, render_region(layout, *block, stain=stain))
        return out
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(layout, stain))
    try:
        for block, rgb in zip(blocks, pool.map(_render_block_job, blocks), strict=True):
            place(block, rgb)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return out


def _description(params: dict[str, Any]) -> str:
    return _DESCRIPTION_PREFIX + json.dumps(params, sort_keys=True)


def _existing_params(slide_path: Path) -> dict[str, Any] | None:
    """The parameters recorded in a synthetic slide's TIFF description, or None."""
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(slide_path))
        text = image.get("image-description")
    except pyvips.Error:
        return None
    if not isinstance(text, str) or not text.startswith(_DESCRIPTION_PREFIX):
        return None
    try:
        return json.loads(text[len(_DESCRIPTION_PREFIX) :])
    except ValueError:
        return None


def write_slide_tiff(
    rgb: np.ndarray, path: str | Path, *, mpp: float, description: str | None = None
) -> Path:
    """Write an (h, w, 3) uint8 array as a pyramidal JPEG TIFF that OpenSlide reads, atomically.

    256 px tiles, JPEG Q 90, BigTIFF, one page per level (no SubIFDs), resolution
    ``1000 / mpp`` px per mm so that OpenSlide reports ``openslide.mpp-x == mpp``.
    """
    import pyvips

    from histolib.slide.pyramid import save_pyramidal_tiff

    height, width = rgb.shape[:2]
    image = pyvips.Image.new_from_memory(rgb.data, width, height, 3, "uchar")
    return save_pyramidal_tiff(image, path, mpp=mpp, description=description)


def write_cells_csv(layout: Layout, path: str | Path) -> Path:
    """Write every cell as CSV ``x,y,label,radius`` (level-0 px), atomically."""
    from histolib.core.atomic import write_text

    labels = layout.labels
    lines = [",".join(CELL_COLUMNS)]
    lines += [
        f"{x:.1f},{y:.1f},{lab},{r:.2f}"
        for x, y, lab, r in zip(layout.x, layout.y, labels, layout.radius, strict=True)
    ]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def write_tumour_geojson(layout: Layout, path: str | Path) -> Path:
    """Write the tumour contours as a QuPath GeoJSON FeatureCollection (class ``Tumor``)."""
    import shapely

    from histolib.qupath.features import qupath_feature, write_feature_collection

    um2 = layout.mpp * layout.mpp
    features = []
    for i, poly in enumerate(layout.tumours):
        n_cancer = int((shapely.contains_xy(poly, layout.x, layout.y) & layout.is_cancer).sum())
        features.append(
            qupath_feature(
                poly,
                object_type="annotation",
                class_name=TUMOUR_CLASS,
                name=f"tumour {i + 1}",
                measurements={"Area um^2": poly.area * um2, "Cancer cells": n_cancer},
            )
        )
    write_feature_collection(path, features)
    return Path(path)


def read_cells_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a cells CSV written by :func:`make_slide` into arrays ``x, y, label, radius``."""
    from histolib.errors import InputError

    path = Path(path)
    try:
        data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read cells CSV ({exc})", path=path) from exc
    if data.dtype.names is None or tuple(data.dtype.names) != CELL_COLUMNS:
        raise InputError(f"cells CSV must have columns {','.join(CELL_COLUMNS)}", path=path)
    data = np.atleast_1d(data)
    return {
        "x": data["x"].astype(float),
        "y": data["y"].astype(float),
        "label": data["label"].astype(str),
        "radius": data["radius"].astype(float),
    }


def make_slide(
    out_dir: str | Path,
    *,
    name: str | None = None,
    stain: str = "he",
    width: int = 4096,
    height: int = 4096,
    mpp: float = 0.5,
    seed: int = 0,
    n_tumours: int | None = None,
    tumour_fraction: float = 0.25,
    cell_density: float = 1.0,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
    workers: int = 1,
    force: bool = False,
    progress: Any = None,
) -> SyntheticSlide:
    """Render a synthetic slide and its ground truth into ``out_dir``.

    Writes ``<name>.tif`` (pyramidal JPEG TIFF, mpp in its resolution tags),
    ``<name>.geojson`` (tumour contours, QuPath annotations of class ``Tumor``) and
    ``<name>_cells.csv`` (``x,y,label,radius``, level-0 px), each atomically; the TIFF is
    written last and records the parameters, so a complete slide made with the same
    parameters is reused, not rendered again (unless ``force``).

    Parameters
    ----------
    out_dir
        Output folder (created).
    name
        File stem and slide id; default ``synthetic_<stain>_<seed>``.
    stain
        ``"he"`` or ``"ihc"``. The layout does not depend on it: the same seed and size give
        a registered H&E / IHC pair.
    width, height, mpp, seed, n_tumours, tumour_fraction, cell_density, cancer_radius_um, \
    cancer_texture
        Passed to :func:`make_layout`.
    workers
        Processes rendering blocks (1: in this process).
    force
        Render even when an identical slide exists.
    progress
        A Rich ``Progress`` to report blocks on, or None.

    Returns
    -------
    SyntheticSlide
    """
    from histolib.core.atomic import ensure_writable_dir

    if stain not in STAINS:
        raise ConfigError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    _check_size(width, height, mpp)
    name = name or f"synthetic_{stain}_{seed}"
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ConfigError(f"invalid slide name {name!r}")
    out_dir = ensure_writable_dir(out_dir)
    slide_path = out_dir / f"{name}.tif"
    annotations_path = out_dir / f"{name}.geojson"
    cells_path = out_dir / f"{name}_cells.csv"
    options = {
        "n_tumours": n_tumours,
        "tumour_fraction": float(tumour_fraction),
        "cell_density": float(cell_density),
        "cancer_radius_um": [float(v) for v in cancer_radius_um],
        "cancer_texture": float(cancer_texture),
    }
    params = {
        "format": _FORMAT_VERSION,
        "stain": stain,
        "width": int(width),
        "height": int(height),
        "mpp": float(mpp),
        "seed": int(seed),
        **options,
    }
    if (
        not force
        and slide_path.exists()
        and annotations_path.exists()
        and cells_path.exists()
        and (old := _existing_params(slide_path)) is not None
        and {k: v for k, v in old.items() if k not in ("n_cells", "n_cancer", "n_tumours_placed")}
        == params
    ):
        return SyntheticSlide(
            slide_path=slide_path,
            annotations_path=annotations_path,
            cells_path=cells_path,
            mpp=float(mpp),
            stain=stain,
            width=int(width),
            height=int(height),
            seed=int(seed),
            name=name,
            n_cells=int(old.get("n_cells", 0)),
            n_cancer=int(old.get("n_cancer", 0)),
            n_tumours=int(old.get("n_tumours_placed", 0)),
            reused=True,
            layout_options=options,
        )

    layout = make_layout(width, height, mpp=mpp, seed=seed, **options)
    write_cells_csv(layout, cells_path)
    write_tumour_geojson(layout, annotations_path)
    task = None
    if progress is not None:
        task = progress.add_task(f"render {name}", total=len(_blocks(width, height, BLOCK_SIZE)))
    n_cancer = int(layout.is_cancer.sum())
    record = {
        **params,
        "n_cells": layout.n_cells,
        "n_cancer": n_cancer,
        "n_tumours_placed": len(layout.tumours),
    }
    with contextlib.ExitStack() as stack:
        canvas = None
        if int(width) * int(height) * 3 > _MEMMAP_BYTES:
            # a large slide is assembled in a temporary file, not in memory
            tmp_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=".tmp-" + name + "-", dir=out_dir)
            )
            canvas = np.memmap(
                Path(tmp_dir) / "canvas.raw", np.uint8, "w+", shape=(int(height), int(width), 3)
            )
        rgb = render_slide_array(
            layout,
            stain=stain,
            out=canvas,
            workers=workers,
            on_block=None if task is None else (lambda: progress.advance(task)),
        )
        write_slide_tiff(rgb, slide_path, mpp=mpp, description=_description(record))
        del rgb, canvas
    return SyntheticSlide(
        slide_path=slide_path,
        annotations_path=annotations_path,
        cells_path=cells_path,
        mpp=float(mpp),
        stain=stain,
        width=int(width),
        height=int(height),
        seed=int(seed),
        name=name,
        n_cells=layout.n_cells,
        n_cancer=n_cancer,
        n_tumours=len(layout.tumours),
        layout_options=options,
    )
