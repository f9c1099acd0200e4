"""Tissue detection on a low-resolution image of a slide.

The mask is found on colour saturation, the cue that separates stained tissue from the white
or grey glass in both H&E and IHC: saturation ``(max - min) / max`` of RGB, smoothed, then
thresholded with Otsu (clipped to ``[min_threshold, max_threshold]`` so that a slide that is
all glass or all tissue still gets a sensible split). With ``pale=True`` (used for IHC, whose
light counterstain can be barely saturated) pale tissue is recovered by hysteresis: pixels
that are both a little saturated (> ``weak_saturation``) and a little darker than the glass
(by > ``weak_darkness`` grey levels; the glass level is the 99th percentile of the
brightness) join the mask where they connect to confidently stained tissue. Clean-up is
morphological and sized in microns, so that it means the same at any scanner resolution: a
closing that joins tissue fibres, holes smaller than ``max_hole_um2`` filled, regions smaller
than ``min_region_um2`` removed.

The mask is written as a PNG (white = tissue) whose text chunk ``histolib`` records its scale
(level-0 px per mask px), so that it can be laid back over the slide.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError, ImageError

#: Defaults of :func:`tissue_mask` (microns and saturation units).
DEFAULT_MIN_REGION_UM2 = 5000.0
DEFAULT_MAX_HOLE_UM2 = 10000.0
DEFAULT_CLOSING_UM = 8.0
DEFAULT_SMOOTH_UM = 4.0
DEFAULT_MIN_THRESHOLD = 0.05
DEFAULT_MAX_THRESHOLD = 0.15
DEFAULT_WEAK_SATURATION = 0.02
DEFAULT_WEAK_DARKNESS = 4.0
PNG_META_KEY = "histolib"


def saturation(rgb: Any) -> Any:
    """HSV saturation ``(max - min) / max`` of an RGB uint8 image, float32 in [0, 1]."""
    import numpy as np

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ImageError(f"expected an RGB image, got an array of shape {rgb.shape}")
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(red, green), blue).astype(np.float32)
    low = np.minimum(np.minimum(red, green), blue).astype(np.float32)
    high -= low
    high /= np.maximum(high + low, 1.0)
    return high


def smoothed_saturation(rgb: Any, *, mpp: float, smooth_um: float = DEFAULT_SMOOTH_UM) -> Any:
    """:func:`saturation` smoothed by a Gaussian of sigma ``smooth_um`` (skipped below 0.3 px).

    What :func:`tissue_mask` thresholds; ``rgb`` may be uint8 or float (0-255).
    """
    from scipy import ndimage

    sat = saturation(rgb)
    sigma = smooth_um / mpp
    if sigma >= 0.3:
        sat = ndimage.gaussian_filter(sat, sigma=sigma, mode="nearest")
    return sat


def tissue_threshold(
    sat: Any,
    *,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    max_threshold: float = DEFAULT_MAX_THRESHOLD,
) -> float:
    """Otsu's threshold of a saturation image, clipped to ``[min_threshold, max_threshold]``."""
    import numpy as np
    from skimage.filters import threshold_otsu

    values = np.asarray(sat, dtype=np.float32).ravel()
    if values.size == 0 or float(values.max()) - float(values.min()) < 1e-6:
        return float(min_threshold)
    otsu = float(threshold_otsu(values, nbins=256))
    return float(min(max(otsu, min_threshold), max_threshold))


def tissue_mask(
    rgb: Any,
    *,
    mpp: float,
    min_region_um2: float = DEFAULT_MIN_REGION_UM2,
    max_hole_um2: float = DEFAULT_MAX_HOLE_UM2,
    closing_um: float = DEFAULT_CLOSING_UM,
    smooth_um: float = DEFAULT_SMOOTH_UM,
    threshold: float | None = None,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    max_threshold: float = DEFAULT_MAX_THRESHOLD,
    weak_saturation: float = DEFAULT_WEAK_SATURATION,
    weak_darkness: float = DEFAULT_WEAK_DARKNESS,
    pale: bool = False,
) -> Any:
    """Boolean tissue mask of a low-resolution RGB image of a slide.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` uint8 image of the slide (white background).
    mpp
        Microns per pixel of ``rgb`` (sizes below are converted with it).
    min_region_um2
        Connected tissue regions smaller than this area are dropped (dust, debris).
    max_hole_um2
        Holes inside tissue smaller than this area are filled.
    closing_um
        Radius of the morphological closing that joins nearby tissue fibres.
    smooth_um
        Sigma of the Gaussian applied to the saturation before thresholding.
    threshold
        Fixed saturation threshold; None uses Otsu clipped to
        ``[min_threshold, max_threshold]``.
    pale
        Also take pale tissue (see the module docstring): for IHC, whose counterstain can be
        barely saturated. Off by default: on H&E it would also take grey glass next to tissue
        where the slide's background is uneven.
    weak_saturation, weak_darkness
        What "pale tissue" is with ``pale``: pixels above both (saturation; grey levels under
        the glass level) that connect to pixels above the main threshold.

    Returns
    -------
    numpy.ndarray
        Boolean ``(rows, cols)``, True on tissue.
    """
    import numpy as np
    from scipy import ndimage
    from skimage import morphology

    if not mpp or mpp <= 0:
        raise ConfigError(f"tissue mask needs a positive mpp, got {mpp}")
    for name, value in (
        ("min_region_um2", min_region_um2),
        ("max_hole_um2", max_hole_um2),
        ("closing_um", closing_um),
        ("smooth_um", smooth_um),
    ):
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"{name} must be >= 0, got {value}")
    rgb = np.asarray(rgb)
    sat = smoothed_saturation(rgb, mpp=mpp, smooth_um=smooth_um)
    sigma = smooth_um / mpp
    cut = (
        tissue_threshold(sat, min_threshold=min_threshold, max_threshold=max_threshold)
        if threshold is None
        else float(threshold)
    )
    strong = sat > cut
    if pale and strong.any():
        brightness = rgb[..., :3].mean(axis=2, dtype=np.float32)
        if sigma >= 0.3:
            brightness = ndimage.gaussian_filter(brightness, sigma=sigma, mode="nearest")
        glass = float(np.percentile(brightness, 99))
        weak = strong | ((sat > weak_saturation) & (glass - brightness > weak_darkness))
        labels, count = ndimage.label(weak)
        seeded = np.zeros(count + 1, dtype=bool)
        seeded[np.unique(labels[strong])] = True
        seeded[0] = False
        mask = seeded[labels]
    else:
        mask = strong
    radius = round(closing_um / mpp)
    if radius >= 1 and mask.any():
        footprint = morphology.disk(radius)
        # Pad so that the closing does not glue tissue to the image border.
        padded = np.pad(mask, radius, mode="constant")
        padded = ndimage.binary_closing(padded, structure=footprint)
        mask = padded[radius:-radius, radius:-radius]
    pixel_area = mpp * mpp
    hole_px = int(max_hole_um2 / pixel_area)
    if hole_px >= 1:
        mask = morphology.remove_small_holes(mask, max_size=hole_px)
    region_px = int(min_region_um2 / pixel_area)
    if region_px >= 1:
        mask = morphology.remove_small_objects(mask, max_size=region_px)
    return mask


def block_fractions(mask: Any, *, block: int, rows: int, cols: int) -> Any:
    """Fraction of True pixels in each ``block x block`` cell of the top-left ``rows x cols``
    grid of ``mask`` (cells past the mask's edge count as False). Returns ``(rows, cols)``."""
    import numpy as np

    need_h, need_w = rows * block, cols * block
    grid = np.zeros((need_h, need_w), dtype=np.float32)
    h = min(need_h, mask.shape[0])
    w = min(need_w, mask.shape[1])
    grid[:h, :w] = mask[:h, :w]
    return grid.reshape(rows, block, cols, block).mean(axis=(1, 3))


def save_mask_png(path: str | Path, mask: Any, *, info: dict[str, Any]) -> Path:
    """Write a tissue mask as an 8-bit PNG (255 = tissue) with ``info`` in a text chunk.

    ``info`` should hold at least ``downsample`` (level-0 px per mask px). Atomic.
    """
    import numpy as np
    from PIL import Image, PngImagePlugin

    from histolib.core.atomic import atomic_path

    meta = PngImagePlugin.PngInfo()
    meta.add_text(PNG_META_KEY, json.dumps(info, default=str))
    image = Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8))
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=meta, optimize=False, compress_level=1)
    return path


def load_mask_png(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a mask written by :func:`save_mask_png`; returns ``(bool array, info)``."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            info = json.loads(image.info.get(PNG_META_KEY, "{}"))
            mask = np.asarray(image.convert("L")) > 127
    except (OSError, UnidentifiedImageError, json.JSONDecodeError) as exc:
        raise ImageError(f"not a histolib tissue mask ({exc})", path=path) from None
    return mask, info
