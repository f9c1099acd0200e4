"""Quality-control pictures: a slide thumbnail with its tissue mask, contours and tiles.

Colours: tissue-mask outline green, glass outside the mask greyed, contours yellow, tiles
outlined by label (positive red, negative blue, boundary orange, unlabelled purple).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MASK_COLOR = (0, 170, 0)
CONTOUR_COLOR = (255, 200, 0)
LABEL_COLORS = {
    "positive": (220, 20, 60),
    "negative": (30, 110, 255),
    "boundary": (255, 140, 0),
    "unlabelled": (150, 0, 200),
}


def _polygons(geometry: Any) -> list[Any]:
    if geometry is None or geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    if hasattr(geometry, "geoms"):
        out: list[Any] = []
        for part in geometry.geoms:
            out.extend(_polygons(part))
        return out
    return []


def draw_qc(
    thumbnail: Any,
    *,
    downsample: float,
    mask: Any | None = None,
    contours: Any | None = None,
    tiles: Sequence[tuple[float, float, float, str]] = (),
    title: str = "",
) -> Any:
    """Draw the QC picture.

    Parameters
    ----------
    thumbnail
        RGB uint8 array of the slide; pixel ``(row, col)`` covers level-0
        ``(col * downsample, row * downsample)`` onwards.
    downsample
        Level-0 px per thumbnail px.
    mask
        Boolean tissue mask of any resolution covering the same area from level-0 (0, 0)
        (resized to the thumbnail with nearest neighbour), or None.
    contours
        Shapely (Multi)Polygon in level-0 px, or None.
    tiles
        ``(x0, y0, side, label)`` in level-0 px.
    title
        Text written in the legend.

    Returns
    -------
    PIL.Image.Image
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    base = np.asarray(thumbnail, dtype=np.uint8)
    rows, cols = base.shape[:2]
    image = Image.fromarray(base)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        row_idx = np.minimum((np.arange(rows) * mask.shape[0]) // max(rows, 1), mask.shape[0] - 1)
        col_idx = np.minimum((np.arange(cols) * mask.shape[1]) // max(cols, 1), mask.shape[1] - 1)
        small = mask[np.ix_(row_idx, col_idx)]
        greyed = Image.blend(image, Image.new("RGB", image.size, (150, 150, 150)), 0.45)
        image = Image.composite(image, greyed, Image.fromarray(small))
        edge = small & ~ndimage.binary_erosion(small, iterations=2, border_value=0)
        image.paste(MASK_COLOR, mask=Image.fromarray(edge))
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(rows, cols) / 600))
    for polygon in _polygons(contours):
        for ring in [polygon.exterior, *polygon.interiors]:
            points = [(x / downsample, y / downsample) for x, y in ring.coords]
            if len(points) >= 2:
                draw.line(points, fill=CONTOUR_COLOR, width=width, joint="curve")
    counts: dict[str, int] = {}
    for x0, y0, side, label in tiles:
        counts[label] = counts.get(label, 0) + 1
        box = (
            x0 / downsample,
            y0 / downsample,
            (x0 + side) / downsample - 1,
            (y0 + side) / downsample - 1,
        )
        draw.rectangle(box, outline=LABEL_COLORS.get(label, (0, 0, 0)), width=1)
    lines = [(title, (0, 0, 0))] if title else []
    lines.append(("tissue mask", MASK_COLOR))
    if contours is not None:
        lines.append(("contours", CONTOUR_COLOR))
    for label, color in LABEL_COLORS.items():
        if counts.get(label):
            lines.append((f"{label}: {counts[label]} tiles", color))
    font_size = max(11, max(rows, cols) // 90)
    try:
        font = ImageFont.load_default(size=font_size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font
        font = ImageFont.load_default()
        font_size = 11
    line_h = font_size + 3
    box_w = 8 + max((int(draw.textlength(text, font=font)) for text, _ in lines), default=0)
    draw.rectangle((0, 0, box_w + 4, 4 + line_h * len(lines)), fill=(255, 255, 255))
    for index, (text, color) in enumerate(lines):
        draw.text((4, 2 + index * line_h), text, fill=color, font=font)
    return image


def save_qc(path: str | Path, image: Any) -> Path:
    """Write a QC picture as PNG, atomically."""
    from histolib.core.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return path
