"""Test helpers around synthetic slides (histolib.synthetic.slides), importable by every test.

``authors_stain_image`` and ``log_blobs`` re-state the authors' stain separation and blob
detector (docs/fidelity.md) with scikit-image alone, so the generator's tests do not depend
on histolib's own detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from histolib.synthetic.slides import SyntheticSlide, make_slide

_CHANNELS = {"h": 0, "e": 1, "d": 2}


def small_slide(
    out_dir: Path,
    *,
    stain: str = "he",
    seed: int = 1,
    width: int = 1536,
    height: int = 1280,
    mpp: float = 0.5,
    **kwargs: Any,
) -> SyntheticSlide:
    """A small synthetic slide (a fraction of a second to render) with its ground truth."""
    return make_slide(
        out_dir,
        name=kwargs.pop("name", f"syn_{stain}_{seed}"),
        stain=stain,
        seed=seed,
        width=width,
        height=height,
        mpp=mpp,
        **kwargs,
    )


def authors_stain_image(rgb: np.ndarray, channel: str) -> np.ndarray:
    """One stain as a [0, 1] grayscale image, dark = much stain (rgb2hed, hed2rgb, rgb2gray)."""
    from skimage.color import hed2rgb, rgb2gray, rgb2hed

    hed = rgb2hed(rgb)
    only = np.zeros_like(hed)
    only[..., _CHANNELS[channel]] = hed[..., _CHANNELS[channel]]
    return rgb2gray(hed2rgb(only)).astype(np.float32)


def log_blobs(
    gray: np.ndarray, *, smooth: float, min_sigma: float, max_sigma: float, threshold: float
) -> np.ndarray:
    """Blobs (row, col, sigma) of a stain image: Gaussian, inverted, ``blob_log`` (num_sigma 10)."""
    from skimage.feature import blob_log
    from skimage.filters import gaussian

    bright = 1 - gaussian(gray, sigma=smooth)
    return blob_log(
        bright,
        min_sigma=min_sigma,
        max_sigma=max_sigma,
        num_sigma=10,
        threshold=threshold,
        overlap=0.5,
        exclude_border=True,
    )


def matched_fraction(truth_xy: np.ndarray, found_xy: np.ndarray, *, tol: float) -> float:
    """Fraction of the true points with a found point closer than ``tol`` px."""
    from scipy.spatial import cKDTree

    if len(truth_xy) == 0:
        return 1.0
    if len(found_xy) == 0:
        return 0.0
    dist, _ = cKDTree(found_xy).query(truth_xy)
    return float(np.mean(dist < tol))


def read_tumour_polygons(path: Path) -> list[Any]:
    """The polygons of a QuPath GeoJSON FeatureCollection, read with json and shapely only."""
    from shapely.geometry import shape

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    return [shape(f["geometry"]) for f in data["features"]]
