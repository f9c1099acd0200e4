"""Reports of a grid: every run (results.csv), the best of each model (table.md), summary.json.

The best run of a model is the one with the highest mean DICE over all held-out tiles; ties go
to the higher mean BAC, then to the run listed first in the grid. Runs that are not finished or
not evaluated take no part.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

RESULT_METRICS = (
    ("all", "dice"),
    ("all", "bac"),
    ("tumour_tiles", "dice"),
    ("tumour_tiles", "bac"),
)


def _mean(scores: Mapping[str, Any] | None, part: str, metric: str) -> float | None:
    if not scores:
        return None
    value = scores.get(part, {}).get(metric, {}).get("mean")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _std(scores: Mapping[str, Any] | None, part: str, metric: str) -> float | None:
    if not scores or _mean(scores, part, metric) is None:
        return None
    value = scores[part][metric].get("std")
    return None if value is None or math.isnan(float(value)) else float(value)


def select_best(records: Sequence[Any]) -> dict[str, Any]:
    """Model name -> its best evaluated run (mean DICE on all tiles, ties by BAC, then order)."""
    best: dict[str, Any] = {}
    for record in records:
        dice = _mean(record.scores, "all", "dice")
        if dice is None:
            continue
        key = (dice, _mean(record.scores, "all", "bac") or -math.inf)
        current = best.get(record.spec.model)
        if current is None:
            best[record.spec.model] = record
            continue
        held = (
            _mean(current.scores, "all", "dice"),
            _mean(current.scores, "all", "bac") or -math.inf,
        )
        if key > held:
            best[record.spec.model] = record
    return best


def panel_indices(tiles: Sequence[Any], count: int) -> list[int]:
    """Up to ``count`` tiles for the Fig. 3 panel: tumour borders first, then tumour, then
    the rest (the evaluation's choice), in the held-out set's order."""
    fractions = [float(t.mask.mean()) for t in tiles]
    border = [i for i, f in enumerate(fractions) if 0.05 < f < 0.95]
    tumour = [i for i, f in enumerate(fractions) if f >= 0.95]
    other = [i for i, f in enumerate(fractions) if f <= 0.05]
    return sorted((border + tumour + other)[: max(0, count)])


def _fmt(scores: Mapping[str, Any] | None, part: str, metric: str) -> str:
    mean = _mean(scores, part, metric)
    if mean is None:
        return "n/a"
    std = _std(scores, part, metric)
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def settings_text(settings: Mapping[str, Any]) -> str:
    """``n_blocks 6, lambda_cyc 30`` (``-`` without settings)."""
    from histolib_train.experiment.grid import format_value

    return ", ".join(f"{k} {format_value(v)}" for k, v in settings.items()) or "-"


def best_table_markdown(result: Any) -> str:
    """The paper's Table 1 layout: one row per model's best run, with its settings."""
    from histolib_train.evaluation.scoring import CONVENTION

    n_tiles = len(result.tile_ids)
    lines = [
        f"Best run of each model: virtual IHC DAB mask vs expert annotation, {n_tiles} held-out "
        "H&E tiles (mean ± std over tiles; best = highest mean DICE, ties by BAC).",
        "",
        "| model | settings | DICE | BAC | DICE (tumour tiles) | BAC (tumour tiles) | run |",
        "|---|---|---|---|---|---|---|",
    ]
    by_name = {r.spec.name: r for r in result.records}
    for model, name in result.best.items():
        record = by_name[name]
        cells = [_fmt(record.scores, part, metric) for part, metric in RESULT_METRICS]
        lines.append(
            f"| {model} | {settings_text(record.spec.settings)} | {' | '.join(cells)} | {name} |"
        )
    missing = sorted({r.spec.model for r in result.records} - set(result.best))
    if missing:
        lines += ["", f"No finished, evaluated run of: {', '.join(missing)}."]
    lines += [
        "",
        f"Convention: {CONVENTION}",
        "",
        "Paper target (Boyd et al. 2022, Table 1, proposed model): DICE 0.536 ± 0.360, "
        "BAC 0.634 ± 0.221 on its private GR data; DICE 0.533, BAC 0.615 on CAMELYON16.",
        "",
    ]
    return "\n".join(lines)


def result_rows(result: Any) -> list[dict[str, Any]]:
    """One dict per run: name, model, each axis, state, status, best, scores."""
    rows = []
    for record in result.records:
        row: dict[str, Any] = {"run": record.spec.name, "model": record.spec.model}
        for axis in result.grid.axes:
            row[axis] = record.spec.settings.get(axis, record.spec.options.get(axis, ""))
        row.update(
            state=record.state,
            status=record.status,
            best=result.best.get(record.spec.model) == record.spec.name,
            n_tiles=(record.scores or {}).get("all", {}).get("n_tiles", ""),
        )
        for part, metric in RESULT_METRICS:
            prefix = metric if part == "all" else f"tumour_{metric}"
            for stat, fn in (("mean", _mean), ("std", _std)):
                value = fn(record.scores, part, metric)
                row[f"{prefix}_{stat}"] = "" if value is None else f"{value:.6f}"
        row["note"] = record.note
        rows.append(row)
    return rows


def write_reports(result: Any) -> None:
    """Write ``results.csv``, ``table.md`` and ``summary.json`` into ``result.out``."""
    from histolib.core.atomic import write_text
    from histolib.core.jsonable import jsonable

    rows = result_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["run"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(result.out / "results.csv", buffer.getvalue())
    write_text(result.out / "table.md", best_table_markdown(result))
    summary = {
        "grid": str(result.grid.path),
        "evaluation": vars(result.grid.evaluation),
        "n_tiles": len(result.tile_ids),
        "tile_ids": result.tile_ids,
        "best": result.best,
        "runs": {
            r.spec.name: {
                "model": r.spec.model,
                "settings": r.spec.settings,
                "state": r.state,
                "status": r.status,
                "note": r.note,
                "run_dir": str(r.run_dir),
                "checkpoint": str(r.checkpoint) if r.finished else None,
                "scores": r.scores,
            }
            for r in result.records
        },
    }
    write_text(result.out / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
