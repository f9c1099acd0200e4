"""``distribution.png``: DICE (both conventions) and BAC per tile, box plots, drawn with PIL.

Three panels (DICE with both-empty tiles counted 1, DICE with them counted 0, BAC) on a 0-1
axis; for each model a box per group of tiles drawn (all, tumour, border tiles: ``groups``).
A box spans the quartiles with the median as a line and the mean as a diamond; whiskers
reach the furthest tile within 1.5 interquartile ranges; every tile is also a
dot (jittered sideways), since per-tile DICE is often bimodal (0 or 1) in a way a box hides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: (summary key, label, colour) of each group of tiles.
GROUP_STYLES = (
    ("all", "all tiles", (70, 110, 200)),
    ("tumour_tiles", "tumour tiles", (230, 130, 30)),
    ("border_tiles", "border tiles", (60, 160, 90)),
)
GROUPS = tuple((label, colour) for _, label, colour in GROUP_STYLES)
METRICS = (
    ("dice", "DICE (both empty = 1)"),
    ("dice_empty0", "DICE (both empty = 0)"),
    ("bac", "balanced accuracy"),
)
PLOT_H = 300
TOP, BOTTOM, LEFT = 72, 48, 46
BOX_W, PAIR_GAP, MODEL_W = 34, 8, 150
MIN_PANEL_W = 300


def _font(size: int) -> Any:
    from histolib_train.evaluation.report import _font as font

    return font(size)


def _values(
    rows: Sequence[Mapping[str, Any]], model: str, metric: str, groups: Sequence[str]
) -> list[np.ndarray]:
    """Finite values of ``metric`` for ``model``, one array per group key of ``groups``."""
    from histolib_train.evaluation.scoring import in_group

    mine = [r for r in rows if r.get("checkpoint") == model]
    out = []
    for group in ([r for r in mine if in_group(r, key)] for key in groups):
        vals = np.array([float(r[metric]) for r in group], dtype=float)
        out.append(vals[np.isfinite(vals)])
    return out


def _y(value: float, top: int) -> float:
    return top + (1.0 - value) * PLOT_H


def _box(draw: Any, x: float, values: np.ndarray, colour: tuple, top: int, seed: int) -> None:
    """One box with whiskers, median, mean and the jittered tiles at column ``x``."""
    font = _font(11)
    if values.size == 0:
        draw.text((x - 8, _y(0.5, top)), "n/a", fill=(120, 120, 120), font=font)
        return
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    low = values[values >= q1 - 1.5 * iqr].min()
    high = values[values <= q3 + 1.5 * iqr].max()
    half = BOX_W / 2
    light = tuple(int(c + (255 - c) * 0.65) for c in colour)
    draw.line((x, _y(high, top), x, _y(q3, top)), fill=colour, width=2)
    draw.line((x, _y(q1, top), x, _y(low, top)), fill=colour, width=2)
    for v in (low, high):
        draw.line((x - half / 2, _y(v, top), x + half / 2, _y(v, top)), fill=colour, width=2)
    draw.rectangle((x - half, _y(q3, top), x + half, _y(q1, top)), fill=light, outline=colour)
    jitter = np.random.default_rng(seed).uniform(-half * 0.8, half * 0.8, values.size)
    for v, dx in zip(values, jitter, strict=True):
        cx, cy = x + dx, _y(float(v), top)
        draw.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=colour)
    draw.line((x - half, _y(median, top), x + half, _y(median, top)), fill=(0, 0, 0), width=3)
    mean_y = _y(float(values.mean()), top)
    draw.polygon(
        [(x, mean_y - 5), (x + 5, mean_y), (x, mean_y + 5), (x - 5, mean_y)],
        fill="white",
        outline=(0, 0, 0),
    )
    draw.text((x - half, top + PLOT_H + 4), f"n={values.size}", fill=(80, 80, 80), font=font)


def _panel(
    draw: Any,
    left: int,
    title: str,
    models: list[str],
    columns: list[list[np.ndarray]],
    styles: Sequence[tuple[str, str, tuple]],
) -> None:
    """Axes, grid and the boxes of one metric; ``columns[m]`` = one array per group drawn."""
    font, small = _font(14), _font(11)
    width = max(MODEL_W * len(models), MIN_PANEL_W - LEFT - 20)
    draw.text((left, TOP - 26), title, fill=(0, 0, 0), font=font)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _y(tick, TOP)
        draw.line((left, y, left + width, y), fill=(225, 225, 225), width=1)
        draw.text((left - 34, y - 7), f"{tick:.2f}", fill=(60, 60, 60), font=small)
    draw.line((left, TOP, left, TOP + PLOT_H), fill=(0, 0, 0), width=1)
    draw.line((left, TOP + PLOT_H, left + width, TOP + PLOT_H), fill=(0, 0, 0), width=1)
    for m, (model, groups) in enumerate(zip(models, columns, strict=True)):
        centre = left + MODEL_W * m + MODEL_W / 2
        step = BOX_W + PAIR_GAP
        offsets = [(g - (len(styles) - 1) / 2) * step for g in range(len(styles))]
        for g, ((_, _, colour), values, dx) in enumerate(zip(styles, groups, offsets, strict=True)):
            _box(draw, centre + dx, values, colour, TOP, seed=97 * m + g)
        label = model if len(model) <= 18 else model[:17] + "…"
        text_w = draw.textlength(label, font=small)
        draw.text((centre - text_w / 2, TOP + PLOT_H + 22), label, fill=(0, 0, 0), font=small)


def write_distribution(
    path: str | Path, rows: Sequence[Mapping[str, Any]], *, groups: Sequence[str] | None = None
) -> Path:
    """Draw the DICE (both conventions) and BAC distributions of every model in ``rows``
    (``tiles.csv`` rows with ``checkpoint``, ``dice``, ``dice_empty0``, ``bac``, ``tp``,
    ``fn``, ``truth_fraction``) into ``path`` (PNG, atomic), a box per group key of
    ``groups`` (default: all three)."""
    from PIL import Image, ImageDraw

    from histolib.core.atomic import atomic_path

    styles = [g for g in GROUP_STYLES if groups is None or g[0] in set(groups)]
    keys = [g[0] for g in styles]
    models = list(dict.fromkeys(str(r["checkpoint"]) for r in rows))
    panel_w = max(LEFT + MODEL_W * max(1, len(models)) + 20, MIN_PANEL_W)
    canvas = Image.new("RGB", (panel_w * len(METRICS) + 10, TOP + PLOT_H + BOTTOM), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (metric, title) in enumerate(METRICS):
        columns = [_values(rows, model, metric, keys) for model in models]
        _panel(draw, LEFT + panel_w * index, f"{title} per tile", models, columns, styles)
    font = _font(12)
    x = LEFT
    for _, name, colour in styles:  # the legend, top line
        draw.rectangle((x, 4, x + 12, 16), fill=colour)
        draw.text((x + 17, 3), name, fill=(0, 0, 0), font=font)
        x += 30 + int(draw.textlength(name, font=font))
    note = "box: quartiles, bar: median, diamond: mean, whiskers: 1.5 IQR, dots: tiles"
    draw.text((LEFT, 22), note, fill=(80, 80, 80), font=font)
    with atomic_path(Path(path)) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
