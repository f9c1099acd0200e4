"""IHC labels from DAB: one threshold per slide, then the DAB-positive fraction of each tile.

Without contours an IHC slide's tiles are labelled from DAB: a threshold is found once per
slide (Otsu on the smoothed DAB image of the tissue pixels of up to ``DAB_SAMPLE_TILES``
sampled tiles), and a tile is ``positive`` when the fraction of its pixels in the authors' DAB
mask at that threshold is >= ``dab_fraction``.
"""

from __future__ import annotations

import math
from typing import Any

from histolib.slide.reader import LevelChoice

DAB_SAMPLE_TILES = 64
AUTHORS_MPP = 0.5  # the resolution at which the authors' DAB-mask parameters are given


def dab_params(tile_mpp: float) -> tuple[float, int]:
    """The authors' DAB-mask sigma and closing radius (given at 0.5 um/px) at ``tile_mpp``."""
    scale = AUTHORS_MPP / tile_mpp
    return 1.0 * scale, max(1, round(9 * scale))


def dab_fraction(rgb: Any, *, threshold: float, sigma: float, closing_radius: int) -> float:
    """Fraction of a tile's pixels in the authors' DAB mask at a fixed (per-slide) threshold.

    The mask is :func:`histolib.stain.dab_mask` without its "no stain" rule (which empties a
    tile whose mean DAB value is high, a guard needed by a per-tile Otsu threshold but not by a
    per-slide one: it would empty tiles that are half tumour).
    """
    from histolib.stain import dab_mask, separate

    mask = dab_mask(
        separate(rgb).d,
        sigma=sigma,
        closing_radius=closing_radius,
        threshold=threshold,
        no_stain_mean=math.inf,
    )
    return float(mask.mean())


def dab_threshold(
    slide: Any,
    choice: LevelChoice,
    *,
    x0: Any,
    y0: Any,
    size: int,
    mask: Any,
    block: int,
    mask_rows: Any,
    mask_cols: Any,
    sigma: float,
    rng: Any,
    sample: int = DAB_SAMPLE_TILES,
) -> float | None:
    """Otsu threshold of the smoothed DAB image over the tissue pixels of sampled tiles.

    Up to ``sample`` candidate tiles are drawn with ``rng``; each is read at the tile scale,
    separated (:func:`histolib.stain.separate`), smoothed with ``sigma`` as the DAB mask is,
    and its pixels under the tissue mask pooled. None when there is no tissue.
    """
    import numpy as np
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from histolib.stain import separate

    n = len(x0)
    if n == 0:
        return None
    picks = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    inside = (np.arange(size) * block) // size
    pooled = []
    for i in picks.tolist():
        rgb = np.asarray(slide.read_pil(float(x0[i]), float(y0[i]), size, size, choice))
        d = ndimage.gaussian_filter(separate(rgb).d.astype(np.float32), sigma=sigma)
        r, c = int(mask_rows[i]), int(mask_cols[i])
        block_mask = mask[r * block : (r + 1) * block, c * block : (c + 1) * block]
        if block_mask.shape != (block, block):
            continue
        tissue_px = block_mask[np.ix_(inside, inside)]
        pooled.append(d[tissue_px])
    values = np.concatenate(pooled) if pooled else np.empty(0, np.float32)
    if values.size < 16 or float(values.max() - values.min()) < 1e-6:
        return None
    return float(threshold_otsu(values))


def dab_labels(fractions: Any, *, dab_fraction: float) -> tuple[Any, Any]:
    """``(fractions, labels)``: NaN fractions (tiles not read) as 0; ``positive`` from
    ``dab_fraction`` up, else ``negative``."""
    import numpy as np

    fractions = np.nan_to_num(fractions, nan=0.0)
    labels = np.where(fractions >= dab_fraction, "positive", "negative").astype(object)
    return fractions, labels
