"""The evaluation's reports: ``tiles.csv``, ``table.md`` (the paper's Table 1 layout) and
``panel.png`` (the layout of its Fig. 3)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import write_text
from histolib_train.evaluation.scoring import CONVENTION, convention_note, virtual_dab_mask
from histolib_train.evaluation.tiles import EvalTile

CSV_COLUMNS = (
    "checkpoint",
    "tile_id",
    "slide_id",
    "dice",
    "dice_empty0",
    "bac",
    "sensitivity",
    "specificity",
    "tp",
    "fp",
    "fn",
    "tn",
    "pred_fraction",
    "truth_fraction",
)
OUTLINE_COLOUR = (0, 200, 0)


def _fmt(stat: Mapping[str, Any]) -> str:
    mean, std = stat["mean"], stat["std"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def table_markdown(summary: Mapping[str, Any]) -> str:
    """The paper's Table 1 layout: one row per checkpoint, mean +- std of DICE and BAC."""
    lines = [
        f"Virtual IHC DAB mask vs expert annotation, {summary['n_tiles']} H&E tiles "
        f"(mean ± std over tiles).",
        "",
        "| model | DICE | BAC | DICE (tumour tiles) | BAC (tumour tiles) | DAB fraction |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in summary["checkpoints"].items():
        a, t = result["all"], result["tumour_tiles"]
        lines.append(
            f"| {name} | {_fmt(a['dice'])} | {_fmt(a['bac'])} | {_fmt(t['dice'])} | "
            f"{_fmt(t['bac'])} | {_fmt(a['pred_fraction'])} |"
        )
    real = summary.get("real_ihc")
    if real:
        lines.append(
            f"| real IHC ({real['n_tiles']} tiles, mask statistics only) | – | – | – | – | "
            f"{_fmt(real['pred_fraction'])} |"
        )
    lines += [
        "",
        f"Convention: {CONVENTION}",
        "",
        convention_note(summary),
        "",
        "Paper target (Boyd et al. 2022, Table 1, proposed model): DICE 0.536 ± 0.360, "
        "BAC 0.634 ± 0.221 on its private GR data; DICE 0.533, BAC 0.615 on CAMELYON16.",
        "",
    ]
    return "\n".join(lines)


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(mask, mode="thick")] = colour
    return out


def write_panel(
    path: Path,
    tiles: Sequence[EvalTile],
    fakes: Mapping[str, Sequence[np.ndarray]],
) -> Path:
    """Paper Fig. 3 layout: a row per tile; H&E, annotation, then one virtual IHC per model.

    The DAB mask of each virtual IHC is outlined in green.
    """
    from PIL import Image, ImageDraw

    from histolib.core.atomic import atomic_path

    side = max(max(t.rgb.shape[:2]) for t in tiles) if tiles else 256
    gap, header = 4, 24
    cell = side + gap
    names = ["H&E", "annotation", *fakes]
    canvas = Image.new("RGB", (cell * len(names), header + cell * len(tiles)), "white")
    draw = ImageDraw.Draw(canvas)
    for col, name in enumerate(names):
        draw.text((col * cell + 4, 6), str(name)[: max(8, side // 7)], fill=(0, 0, 0))
    for row, tile in enumerate(tiles):
        mask_rgb = np.repeat((tile.mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        columns = [tile.rgb, mask_rgb]
        for name in fakes:
            fake = np.asarray(fakes[name][row])
            columns.append(_outline(fake, virtual_dab_mask(fake), OUTLINE_COLOUR))
        for col, image in enumerate(columns):
            canvas.paste(Image.fromarray(image), (col * cell, header + row * cell))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def panel_tiles(tiles: Sequence[EvalTile], count: int) -> list[int]:
    """Indices of up to ``count`` tiles for the panel: tumour boundaries first, then the rest."""
    fractions = [float(t.mask.mean()) for t in tiles]
    boundary = [i for i, f in enumerate(fractions) if 0.05 < f < 0.95]
    tumour = [i for i, f in enumerate(fractions) if f >= 0.95]
    other = [i for i, f in enumerate(fractions) if f <= 0.05]
    return sorted((boundary + tumour + other)[:count])


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the per-tile rows as ``tiles.csv`` (:data:`CSV_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` (JSON-safe: NaN as null)."""
    import json

    from histolib.core.jsonable import jsonable

    write_text(path, json.dumps(jsonable(summary), indent=2) + "\n")
