"""Rendering a synthetic layout: polygon masks, pasted nuclei, stroma texture, stain colours.

:func:`render_region` composes optical densities of the hematoxylin, eosin and DAB stain
vectors of :data:`skimage.color.rgb_from_hed` (the inverse of what
:func:`skimage.color.rgb2hed` separates), block by block: a region renders the same pixels
whichever block grid it is cut from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from histolib.errors import ConfigError
from histolib.stain import STAINS
from histolib.synthetic.layout import Layout
from histolib.synthetic.noise import CoarseGrid, white_noise

#: Margin (in microns, plus 4 px) rendered around each block so that blurs are seamless:
#: three times the widest Gaussian of the stroma texture (its truncation).
_HALO_UM = 7.5
#: skimage's optical-density scale (``combine_stains`` / ``separate_stains``).
_OD_SCALE = -math.log(1e-6)


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
    tumour contour (the same rule as ``histolib.annotations.regions.rasterize`` at downsample 1).
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


Window = tuple[slice, slice]


def _window(col: int, row: int, half: int, bw: int, bh: int) -> tuple[Window, Window] | None:
    """Where a ``2 * half + 1`` px sprite centred on (col, row) lands in a (bh, bw) box.

    Returns the box window and the matching sprite window, or None when they do not overlap.
    """
    c0, c1 = max(col - half, 0), min(col + half + 1, bw)
    r0, r1 = max(row - half, 0), min(row + half + 1, bh)
    if c0 >= c1 or r0 >= r1:
        return None
    sprite = (slice(r0 - row + half, r1 - row + half), slice(c0 - col + half, c1 - col + half))
    return (slice(r0, r1), slice(c0, c1)), sprite


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
        window = _window(int(layout.x[i]) - bx0, int(layout.y[i]) - by0, sp.half, bw, bh)
        if window is None:
            continue
        dst, sub = window
        np.maximum(density[dst], dens[sub] * layout.shade[i], out=density[dst])
        np.maximum(inside[dst], ins[sub], out=inside[dst])
        if cyt is not None:
            np.maximum(cyto[dst], cyt[sub], out=cyto[dst])
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
        window = _window(int(xs[i]) - bx0, int(ys[i]) - by0, spr.shape[0] // 2, bw, bh)
        if window is None:
            continue
        dst, sub = window
        np.maximum(out[dst], spr[sub], out=out[dst])
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


Maps = list[tuple[np.ndarray, Any]]


def _stroma(
    layout: Layout,
    fine: np.ndarray,
    grid: CoarseGrid,
    inner: tuple[slice, slice],
    tis: Any,
    box: tuple[int, int, int, int],
) -> np.ndarray:
    """Stroma density: wavy fibres whose direction drifts, density drifting at ~100 um,
    clefts, and thicker vessel walls; zero outside the tissue."""
    px_um = 1.0 / layout.mpp
    key = layout.seed * 1009
    fib_a = _fibres(fine, long_sigma=2.5 * px_um, short_sigma=0.6 * px_um, axis=1)[inner]
    fib_b = _fibres(fine, long_sigma=2.5 * px_um, short_sigma=0.6 * px_um, axis=0)[inner]
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
        wall = _layout_mask(layout, "walls", *box)
        if wall.any():
            stroma *= 1 + 0.9 * wall.astype(np.float32)
    return stroma


def _stain_maps(
    stain: str,
    vec: np.ndarray,
    planes: dict[str, Any],
    rbc: np.ndarray | None,
    texture: Any,
) -> Maps:
    """(stain vector, amount) pairs of a rendering from its density planes.

    ``planes`` holds ``stroma``, ``density`` (nuclei), ``inside`` (nucleus mask), ``cyto``
    (cytoplasm) and ``tis`` (soft tissue mask); ``cyto`` and ``inside`` are used up. IHC puts
    DAB in the cytoplasm of cancer cells, out of their nuclei, with ``texture``.
    """
    stroma, density, cyto, tis = (planes[k] for k in ("stroma", "density", "cyto", "tis"))
    if stain == "he":
        cyto *= tis
        maps = [
            (vec[0], 0.005 * stroma + 0.13 * density + 0.012 * cyto),
            (vec[1], 0.028 * stroma + 0.016 * cyto),
        ]
        if rbc is not None:
            maps += [(vec[1], 0.06 * rbc), (vec[2], 0.025 * rbc)]
        return maps
    inside = planes["inside"]
    inside -= 1
    cyto *= inside
    cyto *= texture
    cyto *= np.float32(-0.13)
    cyto *= tis  # DAB: 0.13 * cytoplasm * (1 - nucleus) * texture * tissue
    maps = [
        (vec[0], 0.007 * stroma + 0.11 * density),
        (vec[2], cyto),
        (np.full(3, -_OD_SCALE, np.float32), 0.0025 * stroma),
    ]
    if rbc is not None:  # haemoglobin: pale orange-red without eosin
        maps += [(vec[1], 0.03 * rbc), (vec[2], 0.012 * rbc)]
    return maps


def _compose(maps: Maps, sensor: np.ndarray) -> np.ndarray:
    """RGB uint8 of summed optical densities (Beer-Lambert) plus sensor noise."""
    h, w = sensor.shape
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
    fine = white_noise(bx0, by0, bw, bh, key=key + 1)
    grid = CoarseGrid(x0, y0, w, h, max(1, round(1.5 * px_um)))
    stroma = _stroma(layout, fine, grid, inner, tis, (x0, y0, w, h))
    vec = _stain_vectors() * np.float32(-_OD_SCALE)
    rbc = None if rbc is None else rbc[inner]
    texture = None
    if stain == "ihc":
        texture = grid.upsample(np.clip(grid.noise(3 * px_um, key + 5) * 0.18 + 1, 0.5, 1.5))
    planes = {"stroma": stroma, "density": density, "inside": inside, "cyto": cyto, "tis": tis}
    maps = _stain_maps(stain, vec, planes, rbc, texture)
    sensor = fine[inner] * np.float32(1.6)
    sensor += 0.5
    return _compose(maps, sensor)
