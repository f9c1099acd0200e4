"""``histolib experiment``: train a grid of models, evaluate them, keep the best of each."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, is_tty, out_console

EXIT_SOME_FAILED = 2


def experiment(
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="The grid file."),
    out: Path = typer.Option(..., "--out", help="Experiment folder (created)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the runs and which are done; train nothing."
    ),
) -> None:
    """Train every combination of a grid, evaluate each on one held-out set, keep the best.

    GRID.yaml holds shared training options (any `histolib train` option), an `evaluation:`
    block (tiles / annotations or images / masks, n_tiles, seed, labels) and `grid:` with
    `models:` and `axes:` (see examples/paper_grid.yaml). Runs go to `OUT/runs/<model>-<axis>_
    <value>-...`; a finished run is not trained again and an interrupted one resumes. Writes
    OUT/results.csv (every run), OUT/table.md (Table 1 layout, the best run of each model by
    mean DICE, ties by BAC), OUT/summary.json and OUT/panel.png (Fig. 3 layout). Exit code 2
    when a run failed or stopped unfinished.
    """
    lock = contextlib.nullcontext() if dry_run else output_lock(out, command="experiment")
    with cli_errors(), lock:
        from histolib_train.experiment.runner import run_experiment

        console = out_console()
        result = run_experiment(grid, out=out, dry_run=dry_run, progress=is_tty(), log=_log)
        console.print(_runs_table(result))
        if dry_run:
            done = sum(r.state == "done" for r in result.records)
            console.print(f"{len(result.records)} runs, {done} done (dry run: nothing trained)")
            return
        console.print((out / "table.md").read_text(encoding="utf-8"), markup=False)
        console.print(f"wrote {out / 'results.csv'}, table.md, summary.json, panel.png")
        if any(r.status in ("failed", "stopped") for r in result.records):
            raise typer.Exit(EXIT_SOME_FAILED)


def _log(message: str) -> None:
    from histolib_cli.common import err_console

    err_console().print(message, markup=False)


def _runs_table(result: Any) -> Any:
    """Rich table of the runs: state found, what was done, mean DICE / BAC."""
    from rich.table import Table

    from histolib_train.experiment.report import settings_text

    table = Table(title=f"grid {result.grid.path}", title_justify="left")
    columns = ["run", "model", "settings", "state"]
    if not result.dry_run:
        columns += ["status", "DICE", "BAC", "best"]
    for column in columns:
        table.add_column(column)
    for record in result.records:
        cells = [record.spec.name, record.spec.model, settings_text(record.spec.settings)]
        cells.append(record.state)
        if not result.dry_run:
            scores = record.scores or {}
            means = [scores.get("all", {}).get(m, {}).get("mean") for m in ("dice", "bac")]
            cells.append(record.status + (f" ({record.note})" if record.note else ""))
            cells += ["n/a" if v is None else f"{v:.3f}" for v in means]
            cells.append("*" if result.best.get(record.spec.model) == record.spec.name else "")
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    """Add ``histolib experiment`` to ``app``."""
    app.command("experiment")(experiment)
