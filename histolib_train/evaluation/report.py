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
from histolib_train.evaluation.scoring import (
    CONVENTION,
    TRUTH_KEYS,
    convention_note,
    virtual_dab_mask,
)
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
    *TRUTH_KEYS,
)
OUTLINE_COLOUR = (0, 200, 0)


def _fmt(stat: Mapping[str, Any] | None, *, ci: bool = False) -> str:
    if not stat:
        return "n/a"
    mean, std = stat["mean"], stat["std"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean:.3f} ± {std:.3f}"
    if ci and stat.get("ci"):
        low, high = stat["ci"]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


SCORE_HEAD = ("model", "tiles", "n", "DICE", "DICE (both empty = 0)", "BAC", "DAB fraction")
TRUTH_HEAD = (
    "model",
    "PSNR (dB)",
    "SSIM",
    "DAB DICE vs real IHC",
    "DAB DICE vs real IHC (both empty = 0)",
)
GROUPS_NOTE = (
    "Tiles: all tiles; tumour tiles (non-empty annotation); border tiles (annotation "
    "fraction strictly between 0 and {threshold:g}, where localisation matters most)."
)
PAPER_NOTE = (
    "Paper target (Boyd et al. 2022, Table 1, proposed model): DICE 0.536 ± 0.360, "
    "BAC 0.634 ± 0.221 on its private GR data; DICE 0.533, BAC 0.615 on CAMELYON16."
)


def score_rows(
    checkpoints: Mapping[str, Mapping[str, Any]], groups: Sequence[str] | None = None
) -> list[list[str]]:
    """Rows of :data:`SCORE_HEAD`: per model and group of tiles (``groups``: summary keys,
    default all of :data:`~histolib_train.evaluation.scoring.GROUPS`), mean ± std [interval]
    of both DICE conventions, BAC and the DAB fraction."""
    from histolib_train.evaluation.scoring import GROUPS

    rows = []
    for name, result in checkpoints.items():
        for key in groups or list(GROUPS):
            stat = result.get(key) or {}
            cells = [_fmt(stat.get(m), ci=True) for m in ("dice", "dice_empty0", "bac")]
            rows.append(
                [
                    str(name),
                    GROUPS[key][1],
                    str(stat.get("n_tiles", 0)),
                    *cells,
                    _fmt(stat.get("pred_fraction")),
                ]
            )
    return rows


def _psnr(stat: Mapping[str, Any] | None) -> str:
    if not stat:
        return "n/a"
    same = stat.get("identical_tiles", 0)
    if stat.get("n", 0) == 0 and same:
        return f"inf ({same} identical tiles)"
    return _fmt(stat, ci=True) + (f" (+ {same} identical tiles: inf)" if same else "")


def truth_rows(checkpoints: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Rows of :data:`TRUTH_HEAD` for the models scored against registered real IHC."""
    rows = []
    for name, result in checkpoints.items():
        stat = result.get("all", {})
        if "ssim" in stat:
            rows.append(
                [
                    str(name),
                    _psnr(stat.get("psnr")),
                    _fmt(stat.get("ssim"), ci=True),
                    _fmt(stat.get("dab_dice"), ci=True),
                    _fmt(stat.get("dab_dice_empty0"), ci=True),
                ]
            )
    return rows


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def table_notes(summary: Mapping[str, Any]) -> list[str]:
    """The notes under an evaluation table: interval, groups, conventions, paper target."""
    from histolib_train.evaluation.scoring import BORDER_THRESHOLD
    from histolib_train.evaluation.stats import Resampling

    first = next(iter(summary.get("checkpoints", {}).values()), {})
    notes = []
    interval = first.get("interval")
    if interval:
        fields = ("unit", "n_units", "n_boot", "seed", "level")
        notes.append(Resampling(**{k: interval[k] for k in fields}).text)
    threshold = first.get("border_threshold", BORDER_THRESHOLD)
    notes += [GROUPS_NOTE.format(threshold=threshold), f"Convention: {CONVENTION}"]
    note = convention_note(summary)
    if note:
        notes.append(note)
    notes.append(PAPER_NOTE)
    return notes


def table_markdown(summary: Mapping[str, Any], *, groups: Sequence[str] | None = None) -> str:
    """The paper's Table 1 layout, one row per model and group of tiles: mean ± std
    [95 % interval] of DICE (both conventions) and BAC; the scores against real IHC where
    given; the paired differences between models; the notes."""
    from histolib_train.evaluation.stats import paired_markdown

    groups = groups or summary.get("groups")
    lines = [
        f"Virtual IHC DAB mask vs expert annotation, {summary['n_tiles']} H&E tiles "
        "(mean ± std over tiles [95 % interval of the mean]).",
        "",
        *markdown_table(SCORE_HEAD, score_rows(summary["checkpoints"], groups)),
    ]
    real = summary.get("real_ihc")
    if real:
        lines.append(
            f"| real IHC (mask statistics only) | all tiles | {real['n_tiles']} | – | – | – | "
            f"{_fmt(real['pred_fraction'])} |"
        )
    truth = truth_rows(summary["checkpoints"])
    if truth:
        lines += ["", "Against the registered real IHC of the same tiles (--ihc-truth):", ""]
        lines += markdown_table(TRUTH_HEAD, truth)
    paired = paired_markdown(summary.get("paired", []), ("dice_empty0", "dice"))
    if paired:
        lines += ["", *paired]
    for note in table_notes(summary):
        lines += ["", note]
    return "\n".join([*lines, ""])


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
    legend = [(_wrap(text, font, width - 22, measure), colour) for text, colour in PANEL_LEGEND]
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


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    """An HTML ``<table>`` (cells escaped; the first column text, the others numbers)."""
    import html

    out = [
        f"<table><caption>{html.escape(caption)}</caption>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' for c in row[1:])
        out.append(f"<tr><td>{html.escape(row[0])}</td>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def table_html(summary: Mapping[str, Any], *, groups: Sequence[str] | None = None) -> str:
    """:func:`table_markdown` as HTML tables with their captions and notes."""
    import html

    rows = score_rows(summary["checkpoints"], groups or summary.get("groups"))
    real = summary.get("real_ihc")
    if real:
        label = "real IHC (mask statistics only)"
        stat = _fmt(real["pred_fraction"])
        rows.append([label, "all tiles", str(real["n_tiles"]), "–", "–", "–", stat])
    caption = (
        f"Virtual IHC DAB mask vs expert annotation, {summary['n_tiles']} H&E tiles "
        "(mean ± std over tiles [95 % interval of the mean])"
    )
    out = [html_table(SCORE_HEAD, rows, caption)]
    truth = truth_rows(summary["checkpoints"])
    if truth:
        out.append(html_table(TRUTH_HEAD, truth, "Against the registered real IHC"))
    paired = [p for p in summary.get("paired", []) if p["metric"] in ("dice_empty0", "dice")]
    if paired:
        from histolib_train.evaluation.stats import fmt_ci, fmt_p

        head = ("first", "second", "metric", "mean difference", "interval", "Wilcoxon p")
        cells = [
            [
                p["first"],
                p["second"],
                p["metric"],
                "n/a" if p["mean_difference"] is None else f"{p['mean_difference']:+.3f}",
                fmt_ci(p["ci"]),
                fmt_p(p["wilcoxon_p"]),
            ]
            for p in paired
        ]
        out.append(html_table(head, cells, "Paired differences on the same tiles"))
    out += [f"<p><small>{html.escape(note)}</small></p>" for note in table_notes(summary)]
    return "\n".join(out)


PANEL_CAPTION = (
    "Rows: held-out tiles (tumour boundaries first). Columns: the H&E tile, its expert "
    "annotation (white = tumour), then the virtual IHC of each model with the outline of "
    "its DAB mask."
)
DISTRIBUTION_CAPTION = (
    "DICE (both-empty tiles counted 1, then 0) and balanced accuracy per tile for each "
    "model, over all tiles, the tumour tiles (non-empty annotation) and the border tiles (some "
    "tumour, less than the positive threshold): box = quartiles, black bar = median, "
    "diamond = mean, "
    "whiskers = 1.5 interquartile ranges, dots = tiles."
)


def _drawn_groups(folder: Path) -> list[str] | None:
    """The groups an evaluation folder's summary says were drawn (None: all, or unknown)."""
    import json

    try:
        groups = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("groups")
    except (OSError, ValueError, AttributeError):
        return None
    return list(groups) if isinstance(groups, list) else None


def evaluation_figures_html(folder: Path, base: Path) -> str:
    """The distribution plot and the panel of an evaluation ``folder``, with their legends,
    linked relative to ``base``."""
    import html
    import os

    from histolib_train.evaluation.plot import GROUP_STYLES

    groups = _drawn_groups(folder)
    drawn = [(n, c, "fill") for k, n, c in GROUP_STYLES if groups is None or k in groups]
    parts = []
    for name, caption, legend in (
        ("distribution.png", DISTRIBUTION_CAPTION, drawn),
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
        write_distribution(out / "distribution.png", rows, groups=summary.get("groups"))
    write_html(out, summary)
