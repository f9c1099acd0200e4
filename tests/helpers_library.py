"""Synthetic tiles for the cell-library tests: pink background, dark purple nuclei."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUND = (236, 200, 222)  # eosin-pink
NUCLEUS = (70, 40, 130)  # haematoxylin-purple
DAB = (150, 90, 40)  # brown


def draw_tile(
    size: int | tuple[int, int] = 256,
    *,
    nuclei: Iterable[tuple[float, float, float]] = (),
    background: tuple[int, int, int] = BACKGROUND,
    nucleus: tuple[int, int, int] = NUCLEUS,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """An RGB uint8 tile with dark discs ``(x, y, radius)`` (soft-edged) on a background."""
    width, height = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    alpha = np.zeros((height, width))
    for x, y, r in nuclei:
        d = np.hypot(xx - x, yy - y)
        alpha = np.maximum(alpha, np.clip(r + 0.5 - d, 0, 1))
    bg = np.array(background, dtype=np.float64)
    fg = np.array(nucleus, dtype=np.float64)
    img = bg * (1 - alpha[..., None]) + fg * alpha[..., None]
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img.round(), 0, 255).astype(np.uint8)


def random_tile(seed: int, size: int = 256, *, n_small: int = 60, n_large: int = 6) -> np.ndarray:
    """A busy synthetic H&E-like tile: many small nuclei, a few large ones, some noise."""
    rng = np.random.default_rng(seed)
    nuclei = [
        (rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 4)) for _ in range(n_small)
    ] + [(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(9, 15)) for _ in range(n_large)]
    return draw_tile(size, nuclei=nuclei, noise=6.0, seed=seed)


def ihc_tile(seed: int, size: int = 256) -> np.ndarray:
    """A synthetic IHC-like tile: brown cytoplasm patches with pale nuclei, blue nuclei."""
    rng = np.random.default_rng(seed)
    img = draw_tile(
        size,
        nuclei=[(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 4)) for _ in range(50)],
        background=(235, 235, 240),
        nucleus=(90, 90, 160),
        noise=4.0,
        seed=seed,
    ).astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(5):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(20, 40)
        blob = np.hypot(xx - cx, yy - cy) < r
        img[blob] = np.array(DAB)
        hole = np.hypot(xx - cx, yy - cy) < r / 3
        img[hole] = (200, 190, 200)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as PNG (creating folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def write_tumour_geojson(path: str | Path, polygons: list[list[tuple[float, float]]]) -> Path:
    """A QuPath-style GeoJSON FeatureCollection of tumour annotations (level-0 px)."""
    features = []
    for i, ring in enumerate(polygons):
        ring = list(ring)
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "id": f"t{i}",
                "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                },
            }
        )
    path = Path(path)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def reference_boxes(ref: dict) -> list[tuple[int, int, int, int, str]]:
    """The reference json's boxes as sorted ``(x0, y0, x1, y1, label)`` tuples."""
    names = {0: "normal", 1: "cancer"}
    return sorted(
        (b["xmin"], b["ymin"], b["xmax"], b["ymax"], names[b["label"]]) for b in ref["boxes"]
    )


def cell_boxes(cells) -> list[tuple[int, int, int, int, str]]:
    """A TileCells' boxes as sorted ``(x0, y0, x1, y1, label)`` tuples."""
    return sorted(
        (*(int(v) for v in box), label)
        for box, label in zip(cells.boxes, cells.labels, strict=True)
    )
