"""Reports of a grid: every run (results.csv), the selected run of each model (table.md),
summary.json.

The selected run of a model is the one with the highest mean ``select_by`` (default
``dice_empty0``) over all tiles of the selection part (``val``; ``test`` only with
``--select-on-test``); ties go to the higher mean BAC, then to the run listed first in the grid.
Runs that are not finished or not evaluated take no part. The table reports the selected runs
on the ``test`` part, and says which part each figure comes from.
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
    ("all", "dice_empty0"),
    ("all", "bac"),
    ("tumour_tiles", "dice"),
    ("tumour_tiles", "dice_empty0"),
    ("tumour_tiles", "bac"),
    ("border_tiles", "dice"),
    ("border_tiles", "dice_empty0"),
    ("border_tiles", "bac"),
)
#: The means a run can be selected by (over all tiles of the selection part).
SELECT_METRICS = ("dice_empty0", "dice", "bac")
OPTIMISTIC = "selected on the reporting set (optimistic)"


def check_select_by(metric: str) -> str:
    """``metric`` when it is one of :data:`SELECT_METRICS`, else a ConfigError."""
    from histolib.errors import ConfigError

    if metric not in SELECT_METRICS:
        raise ConfigError(f"--select-by must be {', '.join(SELECT_METRICS)}, not {metric!r}")
    return metric


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


def _part_scores(record: Any, part: str) -> dict[str, Any] | None:
    return record.val_scores if part == "val" else record.scores


def select_best(
    records: Sequence[Any], *, metric: str = "dice_empty0", part: str = "val"
) -> dict[str, Any]:
    """Model name -> its best evaluated run by mean ``metric`` over all tiles of ``part``
    (``val``: ``record.val_scores``; ``test``: ``record.scores``), ties by BAC, then order."""
    best: dict[str, Any] = {}
    held: dict[str, tuple[float, float]] = {}
    for record in records:
        scores = _part_scores(record, part)
        value = _mean(scores, "all", metric)
        if value is None:
            continue
        key = (value, _mean(scores, "all", "bac") or -math.inf)
        model = record.spec.model
        if model not in best or key > held[model]:
            best[model], held[model] = record, key
    return best


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


def lambda_id_of(record: Any) -> str:
    """The identity-loss weight λ_id a run used (its resolved configuration), as text."""
    from histolib_train.experiment.grid import format_value, run_config

    if getattr(record.spec, "options", None) is None:
        return "n/a"
    return format_value(run_config(record.spec, record.run_dir).lambda_id)


def _selection_text(result: Any) -> list[str]:
    sel = result.selection
    metric, part = sel.get("metric", "dice_empty0"), sel.get("part", "val")
    n_test = len(result.tile_ids)
    if sel.get("optimistic"):
        return [
            f"**{OPTIMISTIC.capitalize()}**: each model's best run by mean {metric} over all "
            f"{n_test} tiles of the test part, the same tiles the figures below are on: they "
            "overstate what the models do on new tiles (no val part: `histolib split "
            "--val-fraction`).",
        ]
    return [
        f"Selection: each model's best run by mean {metric} over all {sel.get('n_tiles')} tiles "
        f"of the **{part}** part; every figure below is on the **test** part ({n_test} tiles), "
        "which took no part in the selection.",
    ]


def best_table_markdown(result: Any, paired: Sequence[Mapping[str, Any]] = ()) -> str:
    """The paper's Table 1 layout: the selection (part, metric, each model's run and its
    selection score), then the selected runs' scores on the test part (both DICE conventions,
    all / tumour / border tiles, intervals), the paired differences and the notes."""
    from histolib_train.evaluation.report import (
        SCORE_HEAD,
        markdown_table,
        score_rows,
        table_notes,
    )

    sel = result.selection
    metric, part = sel.get("metric", "dice_empty0"), sel.get("part", "val")
    by_name = {r.spec.name: r for r in result.records}
    lines = [*_selection_text(result), ""]
    chosen = []
    for model, name in result.best.items():
        record = by_name[name]
        value = _mean(_part_scores(record, part), "all", metric)
        text = "n/a" if value is None else f"{value:.3f}"
        settings = settings_text(record.spec.settings)
        chosen.append([model, name, settings, lambda_id_of(record), text])
    head = ("model", "selected run", "settings", "λ_id", f"{metric} on {part}")
    lines += markdown_table(head, chosen)
    scores = {m: by_name[n].scores for m, n in result.best.items() if by_name[n].scores}
    lines += ["", f"Selected runs on the test part ({len(result.tile_ids)} tiles):", ""]
    lines += markdown_table(SCORE_HEAD, score_rows(scores))
    missing = sorted({r.spec.model for r in result.records} - set(result.best))
    if missing:
        lines += ["", f"No finished, evaluated run of: {', '.join(missing)}."]
    if paired:
        from histolib_train.evaluation.stats import paired_markdown

        lines += ["", "On the test part. " + paired_markdown(paired, ("dice_empty0", "dice"))[0]]
        lines += paired_markdown(paired, ("dice_empty0", "dice"))[1:]
    for note in table_notes({"checkpoints": scores}):
        lines += ["", note]
    return "\n".join([*lines, ""])


def result_rows(result: Any) -> list[dict[str, Any]]:
    """One dict per run: name, model, each axis, state, status, best, and the mean and std of
    every score of :data:`RESULT_METRICS` on each part it was scored on, named
    ``<part>_<group>_<metric>_<stat>`` (``val_dice_empty0_mean``, ``test_border_dice_std``)."""
    rows = []
    for record in result.records:
        row: dict[str, Any] = {"run": record.spec.name, "model": record.spec.model}
        for axis in result.grid.axes:
            row[axis] = record.spec.settings.get(axis, record.spec.options.get(axis, ""))
        if "lambda_id" not in row:
            row["lambda_id"] = lambda_id_of(record)
        row.update(
            state=record.state,
            status=record.status,
            best=result.best.get(record.spec.model) == record.spec.name,
            selected_on=result.selection.get("part", ""),
        )
        for split in ("val", "test"):
            scores = _part_scores(record, split)
            row[f"{split}_n_tiles"] = (scores or {}).get("all", {}).get("n_tiles", "")
            for group, metric in RESULT_METRICS:
                prefix = {"all": "", "tumour_tiles": "tumour_", "border_tiles": "border_"}[group]
                for stat, fn in (("mean", _mean), ("std", _std)):
                    value = fn(scores, group, metric)
                    key = f"{split}_{prefix}{metric}_{stat}"
                    row[key] = "" if value is None else f"{value:.6f}"
        row["note"] = record.note
        rows.append(row)
    return rows


def selected_comparisons(result: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every pair of selected runs compared on the same test tiles (their ``tiles.csv``),
    and the resampling used; ``([], None)`` when fewer than two were scored."""
    from histolib_train.evaluation.stats import paired_comparisons, resampling_for
    from histolib_train.experiment.runner import EVAL_DIR

    by_name = {r.spec.name: r for r in result.records}
    rows_by_model = {}
    for model, name in result.best.items():
        path = by_name[name].run_dir / EVAL_DIR / "tiles.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                rows_by_model[model] = list(csv.DictReader(handle))
    if not rows_by_model:
        return [], None
    first = next(iter(rows_by_model.values()))
    resampling = resampling_for([r["slide_id"] for r in first])
    if len(rows_by_model) < 2:
        return [], resampling.as_dict()
    return paired_comparisons(rows_by_model, resampling), resampling.as_dict()


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
    paired, interval = selected_comparisons(result)
    write_text(result.out / "table.md", best_table_markdown(result, paired))
    summary = {
        "grid": str(result.grid.path),
        "evaluation": vars(result.grid.evaluation),
        "selection": {**result.selection, "reported_on": "test"},
        "n_tiles": len(result.tile_ids),
        "tile_ids": result.tile_ids,
        "best": result.best,
        "interval": interval,
        "paired": paired,
        "runs": {
            r.spec.name: {
                "model": r.spec.model,
                "settings": r.spec.settings,
                "state": r.state,
                "status": r.status,
                "note": r.note,
                "run_dir": str(r.run_dir),
                "checkpoint": str(r.checkpoint) if r.finished else None,
                "scores": {"val": r.val_scores, "test": r.scores},
            }
            for r in result.records
        },
    }
    write_text(result.out / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
