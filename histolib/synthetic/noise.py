"""Deterministic noise for synthetic slides: hashed lattice noise and textures.

Every value depends on global level-0 coordinates only (never on the box it is computed in),
so a slide rendered block by block is seamless.
"""

from __future__ import annotations

import math

import numpy as np


def hash01(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
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


def value_noise_points(x: np.ndarray, y: np.ndarray, *, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at points (lattice ``cell`` px, smoothstep interpolation)."""
    gx, gy = x / cell, y / cell
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = hash01(ix, iy, key), hash01(ix + 1, iy, key)
    v01, v11 = hash01(ix, iy + 1, key), hash01(ix + 1, iy + 1, key)
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


def smooth_noise(xs: np.ndarray, ys: np.ndarray, *, scale: float, key: int) -> np.ndarray:
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
    lattice = ndimage.gaussian_filter(hash01(ix, iy, key) - np.float32(0.5), sigma)
    lattice *= np.float32(2 * math.sqrt(math.pi) * sigma * math.sqrt(12.0))
    return _separable_lerp(lattice, *_lerp(ys, step, fy), *_lerp(xs, step, fx))


class CoarseGrid:
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
        """:func:`smooth_noise` on the nodes."""
        return smooth_noise(self.xs, self.ys, scale=scale, key=key)

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


def white_noise(x0: int, y0: int, w: int, h: int, *, key: int) -> np.ndarray:
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
    oys = (hash01(gx, gy, key * 2 + 1) * span).astype(int)
    oxs = (hash01(gx, gy, key * 2 + 2) * span).astype(int)
    for j, ty in enumerate(tys):
        ay0, ay1 = max(y0, ty * t), min(y0 + h, (ty + 1) * t)
        for i, tx in enumerate(txs):
            ax0, ax1 = max(x0, tx * t), min(x0 + w, (tx + 1) * t)
            oy, ox = oys[j, i] - ty * t, oxs[j, i] - tx * t
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tex[
                oy + ay0 : oy + ay1, ox + ax0 : ox + ax1
            ]
    return out
