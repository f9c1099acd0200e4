"""Stain separation and the DAB mask, computed the way the RoI-GAN authors do.

The authors (Boyd et al., MICCAI 2022, ``data/library_utils.py``) separate an RGB tile with
scikit-image's colour deconvolution: ``rgb2hed``, then each stain channel alone back through
``hed2rgb``, then ``rgb2gray``. The result is one grayscale image a stain, in [0, 1], where
*dark means much stain* (a haematoxylin-rich nucleus is dark in ``h``; DAB-positive cytoplasm
is dark in ``d``).

The DAB mask (IHC tile labels, IHC cell libraries and the evaluation of virtual IHC all use
it): Gaussian smoothing of the DAB image, Otsu threshold, DAB-positive = darker than the
threshold, binary closing with a disk, and the whole mask emptied when the mean DAB image is
above ``no_stain_mean`` (a tile with no stain at all, where Otsu would split noise).

The same functions serve every caller so that the masks agree pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from histolib.errors import ImageError

#: The slide stains histolib handles: H&E and IHC (DAB).
STAINS = ("he", "ihc")

#: The channels of colour deconvolution: haematoxylin, eosin, DAB.
STAIN_NAMES = ("h", "e", "d")


@dataclass(frozen=True)
class StainImages:
    """Grayscale stain images (dark = much stain), each (H, W) in [0, 1].

    ``None`` for a channel that was not asked for (see :func:`separate`'s ``channels``).
    """

    h: np.ndarray | None
    e: np.ndarray | None
    d: np.ndarray | None


@dataclass(frozen=True)
class DabMask:
    """The DAB mask and the numbers that decided it (for logs and ``pipeline_info``)."""

    mask: np.ndarray
    threshold: float
    mean_dab: float
    zeroed: bool
    raw_fraction: float


def _as_rgb(rgb: Any) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"empty image of shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"expected uint8 or float RGB, got dtype {arr.dtype}")
    return arr


def separate(rgb: Any, *, channels: str = "hed", dtype: Any = np.float32) -> StainImages:
    """Separate an RGB tile into grayscale H, E and DAB images, the authors' way.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 RGB (or float in [0, 1]); an alpha channel is dropped.
    channels
        Which stains to compute, any of ``"h"``, ``"e"``, ``"d"`` (default all three); the
        others are ``None``. Computing only what is needed saves time in the library builder.
    dtype
        ``np.float32`` (default, the public contract) or ``np.float64``. The cell library uses
        float64: it is what the authors' code computed, and the detector thresholds are
        compared at full precision so that the boxes are identical to theirs.

    Returns
    -------
    StainImages
        ``h``, ``e``, ``d`` as (H, W) arrays in [0, 1]; dark = much stain.

    Raises
    ------
    ImageError
        When ``rgb`` is not an (H, W, 3|4) uint8 or float image.
    """
    from skimage.color import hed2rgb, rgb2gray, rgb2hed

    arr = _as_rgb(rgb)
    unknown = set(channels) - set(STAIN_NAMES)
    if unknown:
        raise ValueError(f"unknown stain channels {sorted(unknown)}; use letters of 'hed'")
    hed = rgb2hed(arr)
    null = np.zeros_like(hed[:, :, 0])
    out: dict[str, np.ndarray | None] = {}
    for index, name in enumerate(STAIN_NAMES):
        if name not in channels:
            out[name] = None
            continue
        parts = [null, null, null]
        parts[index] = hed[:, :, index]
        gray = rgb2gray(hed2rgb(np.stack(parts, axis=-1)))
        out[name] = gray.astype(dtype, copy=False)
    return StainImages(h=out["h"], e=out["e"], d=out["d"])


def disk_dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by ``skimage.morphology.disk(radius)``, computed by distance transform.

    A pixel is in the dilation when a mask pixel lies within Euclidean distance ``radius``:
    exactly the footprint ``x**2 + y**2 <= radius**2`` of ``disk``. Pixels outside the image
    never contribute, which for this symmetric convex footprint is the same as skimage's
    default ``mode="reflect"`` (a mirrored pixel is never nearer than its original). Checked
    pixel for pixel against ``skimage.morphology.dilation`` in the tests; about 5 x faster.
    """
    from scipy import ndimage as ndi

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    return ndi.distance_transform_edt(~mask) <= radius


def disk_erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion by ``disk(radius)`` (outside pixels ignored, as skimage's reflect mode)."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return mask.copy()
    return ndi.distance_transform_edt(mask) > radius


def disk_closing(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary closing by ``disk(radius)``; equal to ``skimage.morphology.closing``."""
    if radius <= 0:
        return np.asarray(mask, dtype=bool).copy()
    return disk_erode(disk_dilate(mask, radius), radius)


def dab_mask_details(
    d: np.ndarray,
    *,
    sigma: float = 1.0,
    closing_radius: int = 9,
    no_stain_mean: float = 0.85,
    threshold: float | None = None,
) -> DabMask:
    """:func:`dab_mask` plus the threshold, the mean DAB value and whether it was emptied."""
    from skimage.filters import gaussian, threshold_otsu

    d = np.asarray(d)
    if d.ndim != 2:
        raise ImageError(f"expected a 2-D DAB image, got shape {d.shape}")
    filtered = gaussian(d, sigma=sigma) if sigma > 0 else d
    if threshold is None:
        lo, hi = float(filtered.min()), float(filtered.max())
        t = lo if lo == hi else float(threshold_otsu(filtered))
    else:
        t = float(threshold)
    raw = filtered < t
    raw_fraction = float(raw.mean())
    mask = disk_closing(raw, closing_radius)
    mean_dab = float(d.mean())
    zeroed = mean_dab > no_stain_mean
    if zeroed:
        mask = np.zeros_like(mask)
    return DabMask(
        mask=mask, threshold=t, mean_dab=mean_dab, zeroed=zeroed, raw_fraction=raw_fraction
    )


def dab_mask(
    d: np.ndarray,
    *,
    sigma: float = 1.0,
    closing_radius: int = 9,
    no_stain_mean: float = 0.85,
    threshold: float | None = None,
) -> np.ndarray:
    """The authors' DAB-positive mask of an IHC tile (or of a virtual IHC tile).

    Parameters
    ----------
    d
        The DAB grayscale image from :func:`separate` (dark = much DAB), (H, W).
    sigma
        Gaussian smoothing before thresholding (skimage ``gaussian``, mode ``nearest``).
    closing_radius
        Radius of the disk for the binary closing (0 = no closing).
    no_stain_mean
        The mask is emptied when the mean of ``d`` exceeds this (no stain on the tile).
    threshold
        Fixed threshold on the smoothed image; ``None`` = Otsu on this image.

    Returns
    -------
    numpy.ndarray
        (H, W) bool, True = DAB-positive.
    """
    return dab_mask_details(
        d,
        sigma=sigma,
        closing_radius=closing_radius,
        no_stain_mean=no_stain_mean,
        threshold=threshold,
    ).mask
