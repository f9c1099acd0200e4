"""Glass stays glass: where the virtual slide shows the generator and where it shows white.

A generator trained on tissue tiles invents texture on white input, so a window that touches
tissue but is mostly glass would otherwise come out as a grey, textured square. With
``glass="white"`` (the default of :func:`histolib_train.transfer.slide.transfer_slide`) each
window's output is ``alpha * generator + (1 - alpha) * white``, where ``alpha`` is 1 on tissue,
0 on glass and fades from one to the other over :data:`EDGE_UM` microns outside the tissue
edge.

``alpha`` comes from a tissue mask at :data:`MASK_UM` microns per pixel, computed from the
window's own pixels (the reader threads do it while reading, so it costs no pass over the
slide): colour saturation smoothed over :data:`SMOOTH_UM` and cut at the slide's tissue
threshold (Otsu on the low-resolution thumbnail, as :func:`histolib.slide.tissue.tissue_mask`
finds it), gated by the slide's low-resolution tissue mask grown by :data:`GATE_UM` (so dust
and debris that the slide-level clean-up removed stay white too). Deeper inside the
low-resolution mask than :data:`GATE_UM` everything is tissue, as for the tissue mask of
``histolib tile`` (small holes, lumens and gaps between fibres keep the generator's output):
the fine mask decides only along the tissue's edge. The fade is a Gaussian blur of the mask,
doubled and clipped, so ``alpha`` is exactly 1 on the tissue edge itself and inside, and no
white halo eats into the tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from histolib.core.options import spec_map
from histolib.errors import ConfigError
from histolib_train.transfer.options import TransferOptions

GLASS_MODES = spec_map(TransferOptions)["glass"].choices or ()
"""``white``: glass is white in the output; ``keep``: the generator's output everywhere a
window ran (the behaviour before glass masking)."""
MASK_UM = 1.0
"""Pixel of the fine tissue mask, microns (at least one output pixel)."""
SMOOTH_UM = 2.0
"""Sigma of the Gaussian applied to the saturation before the threshold, microns."""
EDGE_UM = 4.0
"""Width of the fade from the generator's output to white beyond the tissue edge, microns
(alpha falls below 0.05 at this distance)."""
GATE_UM = 16.0
"""The low-resolution tissue mask is grown by this much before it gates the fine mask, and
shrunk by this much to give the interior, where everything is tissue."""
ALL_GLASS, ALL_TISSUE, MIXED = 0, 1, -1
"""What :meth:`GlassMask.fill_alpha` found: a window's alpha all 0, all 1, or in between."""


def check_glass(glass: str) -> str:
    """Validate a ``--glass`` value.

    Raises
    ------
    ConfigError
        For anything but ``white`` or ``keep``.
    """
    if glass not in GLASS_MODES:
        raise ConfigError(f"--glass must be one of {', '.join(GLASS_MODES)}, not {glass!r}")
    return glass


@dataclass
class LowResTissue:
    """The slide's low-resolution tissue mask, its scale and its saturation threshold."""

    mask: np.ndarray
    scale_x: float  # level-0 px per mask px
    scale_y: float
    threshold: float
    mpp: float  # microns per mask px


def lowres_tissue(slide: Any, *, max_size: int = 2048) -> LowResTissue:
    """Tissue mask of ``slide``'s thumbnail (longest side ``max_size``) and its threshold."""
    from histolib.slide.tissue import smoothed_saturation, tissue_mask, tissue_threshold

    thumb = slide.thumbnail(max_size=max_size)
    width0, height0 = slide.dimensions
    thumb_mpp = slide.mpp * width0 / thumb.shape[1]
    mask = np.asarray(tissue_mask(thumb, mpp=thumb_mpp), dtype=bool)
    threshold = tissue_threshold(smoothed_saturation(thumb, mpp=thumb_mpp))
    return LowResTissue(mask, width0 / mask.shape[1], height0 / mask.shape[0], threshold, thumb_mpp)


class GlassMask:
    """Per-window ``alpha`` (1 = tissue, 0 = glass) of a slide read at ``mpp``.

    Parameters
    ----------
    lowres
        The slide's low-resolution tissue (:func:`lowres_tissue`).
    mpp
        Microns per output pixel.
    downsample
        Level-0 px per output px.
    """

    def __init__(self, lowres: LowResTissue, *, mpp: float, downsample: float) -> None:
        from scipy import ndimage

        self.threshold = lowres.threshold
        self.scale_x, self.scale_y = lowres.scale_x, lowres.scale_y
        self.downsample = downsample
        self.factor = max(1, round(MASK_UM / mpp))  # output px per fine-mask px
        self.fine_um = self.factor * mpp
        radius = max(1, math.ceil(GATE_UM / lowres.mpp))
        square = np.ones((3, 3), bool)
        self.gate = ndimage.binary_dilation(lowres.mask, structure=square, iterations=radius)
        self.interior = ndimage.binary_erosion(
            lowres.mask, structure=square, iterations=radius, border_value=1
        )

    def _cells(self, *, x: int, y: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices into the low-resolution masks of each fine pixel's centre
        (both ascending)."""
        f = self.factor
        ys = (y + (np.arange(rows) + 0.5) * f) * self.downsample / self.scale_y
        xs = (x + (np.arange(cols) + 0.5) * f) * self.downsample / self.scale_x
        gy = np.clip(ys.astype(np.int64), 0, self.gate.shape[0] - 1)
        gx = np.clip(xs.astype(np.int64), 0, self.gate.shape[1] - 1)
        return gy, gx

    def _saturated(self, rgb: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """Where the window's smoothed saturation, at :data:`MASK_UM`, is over the threshold."""
        from histolib.slide.tissue import smoothed_saturation

        f = self.factor
        height, width = rgb.shape[:2]
        if (rows * f, cols * f) != (height, width):
            padded = np.full((rows * f, cols * f, 3), 255, np.uint8)
            padded[:height, :width] = rgb[..., :3]
            rgb = padded
        small = np.zeros((rows, cols, 3), np.float32)
        for dy in range(f):  # block mean by strided sums (a reshaped mean is several x slower)
            for dx in range(f):
                small += rgb[dy::f, dx::f, :3]
        small /= f * f
        return smoothed_saturation(small, mpp=self.fine_um, smooth_um=SMOOTH_UM) > self.threshold

    def fine_mask(self, rgb: np.ndarray, *, x: int, y: int) -> np.ndarray:
        """Boolean tissue mask at :data:`MASK_UM` of the window ``rgb`` at output ``(x, y)``.

        Shape ``(ceil(h / factor), ceil(w / factor))``: saturated pixels within the grown
        low-resolution mask, and everything in its interior.
        """
        rows, cols = (math.ceil(n / self.factor) for n in rgb.shape[:2])
        gy, gx = self._cells(x=x, y=y, rows=rows, cols=cols)
        # The cells lie in the rectangle spanned by the first and last index: a window wholly
        # inside the interior, or wholly outside the gate, is settled by that small slice.
        box = (slice(gy[0], gy[-1] + 1), slice(gx[0], gx[-1] + 1))
        if self.interior[box].all():
            return np.ones((rows, cols), bool)
        if not self.gate[box].any():
            return np.zeros((rows, cols), bool)
        cells = np.ix_(gy, gx)
        interior, gate = self.interior[cells], self.gate[cells]
        if interior.all() or not gate.any():  # no pixel to look at
            return interior
        return (self._saturated(rgb, rows, cols) & gate) | interior

    def alpha(
        self, rgb: np.ndarray, *, x: int, y: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``alpha`` (float32, the window's shape, in [0, 1]) of the window at output ``(x, y)``,
        written into ``out`` when given."""
        height, width = rgb.shape[:2]
        if out is None:
            out = np.empty((height, width), np.float32)
        self.fill_alpha(rgb, x=x, y=y, out=out)
        return out

    def fill_alpha(self, rgb: np.ndarray, *, x: int, y: int, out: np.ndarray) -> int:
        """Write the window's ``alpha`` into ``out`` (float32, the window's shape); say which
        kind it is: :data:`ALL_TISSUE` (all 1, one fill), :data:`ALL_GLASS` (all 0, one fill)
        or :data:`MIXED`."""
        from scipy import ndimage

        height, width = rgb.shape[:2]
        mask = self.fine_mask(rgb, x=x, y=y)
        if not mask.any():
            out.fill(0.0)
            return ALL_GLASS
        if mask.all():
            out.fill(1.0)
            return ALL_TISSUE
        sigma = EDGE_UM / 2.5 / self.fine_um
        soft = ndimage.gaussian_filter(mask.astype(np.float32), sigma=sigma, mode="nearest")
        soft = np.clip(2.0 * soft, 0.0, 1.0)
        if self.factor > 1:
            soft = upsample_linear(soft, self.factor)
        out[...] = soft[:height, :width]
        return MIXED


def _linear_taps(n: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights that upsample ``n`` samples ``factor`` times (pixel centres
    aligned, edges held)."""
    pos = (np.arange(n * factor) + 0.5) / factor - 0.5
    pos = np.clip(pos, 0, n - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    return low, high, (pos - low).astype(np.float32)


def upsample_linear(image: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear ``factor`` x upsampling of a 2-D float image (separable, pixel areas aligned)."""
    rows, cols = image.shape
    r0, r1, rw = _linear_taps(rows, factor)
    c0, c1, cw = _linear_taps(cols, factor)
    tall = image[r0] * (1 - rw)[:, None] + image[r1] * rw[:, None]
    return tall[:, c0] * (1 - cw) + tall[:, c1] * cw


def input_tissue(slide_path: Any, *, mpp: float, shape: tuple[int, int]) -> np.ndarray:
    """The input slide's tissue mask at ``mpp``, cropped or padded to ``shape`` (rows, cols):
    what :func:`glass_difference` measures against
    (:func:`histolib.slide.tissue.tissue_mask` of the whole slide read at ``mpp``)."""
    from histolib.slide.reader import open_slide
    from histolib.slide.tissue import tissue_mask

    with open_slide(slide_path) as slide:
        rgb = slide.read_level_image(mpp / slide.mpp)
    found = tissue_mask(rgb, mpp=mpp)
    mask = np.zeros(shape, bool)
    rows, cols = min(shape[0], found.shape[0]), min(shape[1], found.shape[1])
    mask[:rows, :cols] = found[:rows, :cols]
    return mask


def glass_difference(
    rgb: np.ndarray, tissue: np.ndarray, *, block: int = 256, min_glass: float = 0.25
) -> dict[str, float]:
    """How far from white a virtual slide is on the glass: the measure of glass masking.

    Parameters
    ----------
    rgb
        The output slide (or a region of it), ``(H, W, 3)`` uint8.
    tissue
        The input's tissue mask at the same resolution, ``(H, W)`` bool.
    block
        Side of the blocks over which the maximum is taken, px.
    min_glass
        Blocks with less glass than this fraction of their pixels are left out of the maximum
        (a few glass pixels at a tissue edge say little about a block).

    Returns
    -------
    dict
        ``mean``: mean ``|255 - value|`` over the glass pixels (all channels);
        ``block_max``: its maximum over the ``block`` x ``block`` blocks;
        ``glass_fraction``: the share of glass pixels; ``blocks``: blocks measured.
    """
    rgb = np.asarray(rgb)
    glass = ~np.asarray(tissue, dtype=bool)
    if rgb.shape[:2] != glass.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {glass.shape} differ in size")
    diff = (255.0 - rgb[..., :3].astype(np.float32)).mean(axis=2)
    n_glass = int(glass.sum())
    mean = float(diff[glass].mean()) if n_glass else 0.0
    worst, blocks = 0.0, 0
    for top in range(0, glass.shape[0], block):
        for left in range(0, glass.shape[1], block):
            cell = glass[top : top + block, left : left + block]
            if cell.sum() < min_glass * block * block:
                continue
            blocks += 1
            worst = max(worst, float(diff[top : top + block, left : left + block][cell].mean()))
    return {
        "mean": mean,
        "block_max": worst,
        "glass_fraction": n_glass / glass.size,
        "blocks": blocks,
    }
