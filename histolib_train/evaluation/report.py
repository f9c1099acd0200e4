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


PANEL_LEGEND = (
    ("annotation: white = tumour (expert contours)", None),
    ("outline: DAB mask of the virtual IHC", OUTLINE_COLOUR),
)
LEGEND_LINE = 16


def _font(size: int) -> Any:
    """PIL's default font at ``size`` px (the bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: float, draw: Any) -> list[str]:
    """``text`` broken into lines no wider than ``width`` px (a word longer stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def write_panel(
    path: Path,
    tiles: Sequence[EvalTile],
    fakes: Mapping[str, Sequence[np.ndarray]],
) -> Path:
    """Paper Fig. 3 layout: a row per tile; H&E, annotation, then one virtual IHC per model.

    The DAB mask of each virtual IHC is outlined in green; a legend below says so.
    """
    from PIL import Image, ImageDraw

    from histolib.core.atomic import atomic_path

    side = max(max(t.rgb.shape[:2]) for t in tiles) if tiles else 256
    gap, header = 4, 24
    cell = side + gap
    names = ["H&E", "annotation", *fakes]
    width = cell * len(names)
    font = _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend = [
        (_wrap(text, font, width - 22, measure), colour) for text, colour in PANEL_LEGEND
    ]
    footer = 10 + LEGEND_LINE * sum(len(lines) for lines, _ in legend)
    canvas = Image.new("RGB", (width, header + cell * len(tiles) + footer), "white")
    draw = ImageDraw.Draw(canvas)
    for col, name in enumerate(names):
        draw.text((col * cell + 4, 5), str(name)[: max(8, side // 7)], fill=(0, 0, 0), font=font)
    for row, tile in enumerate(tiles):
        mask_rgb = np.repeat((tile.mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        columns = [tile.rgb, mask_rgb]
        for name in fakes:
            fake = np.asarray(fakes[name][row])
            columns.append(_outline(fake, virtual_dab_mask(fake), OUTLINE_COLOUR))
        for col, image in enumerate(columns):
            canvas.paste(Image.fromarray(image), (col * cell, header + row * cell))
    y = header + cell * len(tiles) + 6
    for lines, colour in legend:
        if colour is None:
            draw.rectangle((4, y + 2, 11, y + 11), fill="white", outline=(0, 0, 0))
        else:
            draw.rectangle((4, y + 2, 11, y + 11), outline=colour, width=2)
        for line in lines:
            draw.text((18, y), line, fill=(0, 0, 0), font=font)
            y += LEGEND_LINE
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


# ---------------------------------------------------------------------------------------
# HTML: the table, legends, the evaluation's report.html

PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "figure{display:inline-block;margin:8px;vertical-align:top;max-width:100%}"
    "figure img{max-width:100%;height:auto;border:1px solid #ddd}"
    "figcaption{font-size:small;color:#333;max-width:1100px}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
    "caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".legend{list-style:none;padding:0;margin:.3em 0}"
    ".legend li{display:inline-block;margin-right:1.2em}"
    ".swatch{display:inline-block;width:14px;height:14px;margin-right:4px;"
    "vertical-align:middle;box-sizing:border-box}"
)


def legend_html(items: Sequence[tuple[str, tuple[int, int, int], str]]) -> str:
    """A legend: ``(label, rgb, kind)`` with kind ``box`` (an outline), ``fill`` or ``line``."""
    import html

    parts = ['<ul class="legend">']
    for label, (r, g, b), kind in items:
        colour = f"rgb({r},{g},{b})"
        if kind == "box":
            style = f"border:3px solid {colour}"
        elif kind == "line":
            style = f"height:4px;background:{colour}"
        else:
            style = f"background:{colour};border:1px solid #888"
        parts.append(f'<li><span class="swatch" style="{style}"></span>{html.escape(label)}</li>')
    parts.append("</ul>")
    return "".join(parts)


def table_html(summary: Mapping[str, Any]) -> str:
    """:func:`table_markdown` as an HTML ``<table>`` with its caption and notes."""
    import html

    head = ("model", "DICE", "BAC", "DICE (tumour tiles)", "BAC (tumour tiles)", "DAB fraction")
    rows = []
    for name, result in summary["checkpoints"].items():
        a, t = result["all"], result["tumour_tiles"]
        cells = [_fmt(a["dice"]), _fmt(a["bac"]), _fmt(t["dice"]), _fmt(t["bac"])]
        cells.append(_fmt(a["pred_fraction"]))
        rows.append([html.escape(str(name)), *cells])
    real = summary.get("real_ihc")
    if real:
        label = f"real IHC ({real['n_tiles']} tiles, mask statistics only)"
        rows.append([html.escape(label), "–", "–", "–", "–", _fmt(real["pred_fraction"])])
    out = [
        "<table><caption>Virtual IHC DAB mask vs expert annotation, "
        f"{summary['n_tiles']} H&amp;E tiles (mean ± std over tiles)</caption>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' for c in row[1:])
        out.append(f"<tr><td>{row[0]}</td>{cells}</tr>")
    out.append("</tbody></table>")
    out.append(f"<p><small>Convention: {html.escape(CONVENTION)}</small></p>")
    out.append(
        "<p><small>Paper target (Boyd et al. 2022, Table 1, proposed model): DICE 0.536 ± "
        "0.360, BAC 0.634 ± 0.221 on its private GR data; DICE 0.533, BAC 0.615 on "
        "CAMELYON16.</small></p>"
    )
    return "\n".join(out)


PANEL_CAPTION = (
    "Rows: held-out tiles (tumour boundaries first). Columns: the H&E tile, its expert "
    "annotation (white = tumour), then the virtual IHC of each model with the outline of "
    "its DAB mask."
)
DISTRIBUTION_CAPTION = (
    "DICE and balanced accuracy per tile for each model, over all tiles and over the tumour "
    "tiles (non-empty annotation): box = quartiles, black bar = median, diamond = mean, "
    "whiskers = 1.5 interquartile ranges, dots = tiles."
)


def evaluation_figures_html(folder: Path, base: Path) -> str:
    """The distribution plot and the panel of an evaluation ``folder``, with their legends,
    linked relative to ``base``."""
    import html
    import os

    from histolib_train.evaluation.plot import GROUPS

    parts = []
    for name, caption, legend in (
        ("distribution.png", DISTRIBUTION_CAPTION, [(n, c, "fill") for n, c in GROUPS]),
        ("panel.png", PANEL_CAPTION, [("DAB mask of the virtual IHC", OUTLINE_COLOUR, "box")]),
    ):
        if not (folder / name).is_file():
            continue
        rel = html.escape(os.path.relpath(folder / name, base))
        parts.append(
            f'<figure><a href="{rel}"><img src="{rel}" alt="{html.escape(name)}"></a>'
            f"<figcaption>{legend_html(legend)}{html.escape(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def write_html(out: Path, summary: Mapping[str, Any]) -> Path:
    """``out/report.html``: the table, the distribution plot and the panel, with legends."""
    body = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>histolib evaluation</title><style>{PAGE_STYLE}</style></head><body>",
        "<h1>Evaluation: virtual IHC against expert annotations</h1>",
        table_html(summary),
        evaluation_figures_html(out, out),
        "<p>Per-tile scores: <a href='tiles.csv'>tiles.csv</a>; everything: "
        "<a href='summary.json'>summary.json</a>.</p>",
        "</body></html>",
    ]
    path = out / "report.html"
    write_text(path, "\n".join(body) + "\n")
    return path


def write_figures_and_html(
    out: Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """``distribution.png`` (:mod:`histolib_train.evaluation.plot`) and ``report.html``."""
    from histolib_train.evaluation.plot import write_distribution

    if rows:
        write_distribution(out / "distribution.png", rows)
    write_html(out, summary)
