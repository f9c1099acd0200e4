"""Blending overlapping windows of an image processed window by window.

An image-to-image network run on a slide sees it in overlapping windows (``tile_size`` px,
``overlap`` px shared with each neighbour). Each window's output is added with a smooth weight
window (separable raised cosine: the weights of two neighbours sum to one across their shared
band), then divided by the summed weights, so hard window edges never show.
:class:`StripeBlender` does this one row of windows at a time, so memory stays flat in the
image height.
"""

from __future__ import annotations

import math

import numpy as np

from histolib.errors import ConfigError


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a window of ``size`` px sharing ``overlap`` px with neighbours.

    A raised-cosine ramp (``sin^2``) over the first and last ``overlap`` px and 1 between, so
    that with a stride of ``size - overlap`` the ramps of two neighbours sum to exactly 1.
    Weights are never 0 (pixel centres), so a slide edge reached by one window still works
    after normalisation. ``overlap = 0`` gives flat weights (hard seams).
    """
    if not 0 <= overlap < size:
        raise ConfigError(f"overlap must be in [0, tile size), got {overlap} for {size}")
    weights = np.ones(size, dtype=np.float32)
    if overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        weights[:overlap] = np.minimum(weights[:overlap], ramp)
        weights[size - overlap :] = np.minimum(weights[size - overlap :], ramp[::-1])
    return weights


def window_starts(length: int, *, tile_size: int, overlap: int) -> list[int]:
    """Origins of the windows covering ``[0, length)`` with the given overlap (regular grid).

    The last window may run past ``length``; that part is read as white and cropped away.
    """
    if not 0 <= overlap < tile_size:
        raise ConfigError(f"overlap must be in [0, tile size), got {overlap} for {tile_size}")
    stride = tile_size - overlap
    count = max(1, math.ceil(max(length - overlap, 1) / stride))
    return [k * stride for k in range(count)]


class StripeBlender:
    """Accumulate one row of overlapping windows and hand out the finished image rows.

    Holds ``tile_size`` rows of the padded output width as float sums of ``weight * value``
    and of weights. :meth:`pop` returns the top rows normalised (white where no window
    wrote) and shifts the band shared with the next window row to the top.
    """

    def __init__(self, *, width: int, tile_size: int, overlap: int) -> None:
        self.width, self.tile_size, self.overlap = width, tile_size, overlap
        self.stride = tile_size - overlap
        full_w = window_starts(width, tile_size=tile_size, overlap=overlap)[-1] + tile_size
        weights_1d = blend_weights(tile_size, overlap)
        self.weights = np.outer(weights_1d, weights_1d)
        self.acc = np.zeros((tile_size, full_w, 3), np.float32)
        self.wsum = np.zeros((tile_size, full_w), np.float32)
        self.has_data = False

    def add(self, x: int, tile: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Add a translated window whose left edge is output column ``x``.

        With ``alpha`` (``(tile_size, tile_size)`` in [0, 1]) the window counts as
        ``alpha * tile + (1 - alpha) * 255``: its output where ``alpha`` is 1, white where 0.
        """
        size = self.tile_size
        if alpha is None:
            self.acc[:, x : x + size] += tile * self.weights[..., None]
        else:
            faded = self.weights * alpha
            self.acc[:, x : x + size] += 255.0 * self.weights[..., None] + faded[..., None] * (
                tile - np.float32(255.0)
            )
        self.wsum[:, x : x + size] += self.weights
        self.has_data = True

    def add_white(self, x: int) -> None:
        """Add a background window (not run: white) whose left edge is output column ``x``.

        Blending white windows beside the tissue ones fades the generator's output into the
        white background smoothly instead of at a hard window edge.
        """
        size = self.tile_size
        self.acc[:, x : x + size] += 255.0 * self.weights[..., None]
        self.wsum[:, x : x + size] += self.weights
        self.has_data = True

    def pop(self, n_rows: int) -> np.ndarray:
        """The top ``n_rows`` finished rows ``(n_rows, width, 3)`` uint8; shift the rest up."""
        rows = np.full((n_rows, self.width, 3), 255, np.uint8)
        if self.has_data:
            top = self.wsum[:n_rows, : self.width]
            covered = top > 0
            values = self.acc[:n_rows, : self.width][covered] / top[covered][:, None]
            rows[covered] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            overlap, stride = self.overlap, self.stride
            self.acc[:overlap] = self.acc[stride:]
            self.acc[overlap:] = 0.0
            self.wsum[:overlap] = self.wsum[stride:]
            self.wsum[overlap:] = 0.0
            self.has_data = bool(overlap) and bool(self.wsum[:overlap].any())
        return rows
