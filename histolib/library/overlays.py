"""QC pictures of cell libraries: a tile with its boxes and the regions that decided them.

Red boxes: cancer cells; blue boxes: normal cells. H&E: the excluded region (cluster hulls
grown by the dilation radius) is shaded yellow and the tumour annotation outlined green.
IHC: the DAB mask is shaded yellow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CANCER_COLOUR = (230, 30, 30)
NORMAL_COLOUR = (30, 80, 230)
SHADE_COLOUR = np.array([255, 220, 0], dtype=np.float64)
TUMOUR_COLOUR = (0, 170, 60)


def overlay_image(rgb: np.ndarray, cells: Any, *, scale: int = 2) -> np.ndarray:
    """The overlay as an (H * scale, W * scale, 3) uint8 array.

    ``cells`` is a :class:`histolib.library.detect.TileCells` computed with ``details=True`` (for
    the shading); without it only the boxes are drawn.
    """
    from PIL import Image, ImageDraw

    base = np.asarray(rgb, dtype=np.float64)[:, :, :3].copy()
    shade = cells.masks.get("exclusion")
    if shade is None:
        shade = cells.masks.get("dab")
    if shade is not None:
        base[shade] = 0.6 * base[shade] + 0.4 * SHADE_COLOUR
    img = Image.fromarray(base.round().astype(np.uint8)).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(img)
    tumour = cells.masks.get("tumour")
    if tumour is not None and tumour.any():
        from scipy import ndimage as ndi

        edge = tumour & ~ndi.binary_erosion(tumour, border_value=1)
        ys, xs = np.nonzero(edge)
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            draw.rectangle(
                [x * scale, y * scale, x * scale + scale - 1, y * scale + scale - 1],
                fill=TUMOUR_COLOUR,
            )
    for box, label in zip(cells.boxes, cells.labels, strict=True):
        x0, y0, x1, y1 = (int(v) * scale for v in box)
        colour = CANCER_COLOUR if label == "cancer" else NORMAL_COLOUR
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=max(1, scale))
    return np.asarray(img)


def draw_overlay(rgb: np.ndarray, cells: Any, *, path: str | Path, scale: int = 2) -> Path:
    """Write :func:`overlay_image` as a PNG (atomically)."""
    from PIL import Image

    from histolib.core.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(overlay_image(rgb, cells, scale=scale)).save(tmp, format="PNG")
    return path
