"""``histolib experiment``: train a grid of models, evaluate them, keep the best of each."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, is_tty, out_console

EXIT_SOME_FAILED = 2
#: What experiment writes in --out (the grid file may live there).
WRITES = ("runs/*", "evaluation/*", "results.csv", "table.md", "summary.json", "*.png", ".*")


def experiment(
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="The grid file."),
    out: Path = typer.Option(..., "--out", help="Experiment folder (created)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the runs and which are done; train nothing."
    ),
    select_by: str = typer.Option(
        "dice_empty0",
        "--select-by",
        help="Mean over all val tiles each model's best run is selected by: dice_empty0 "
        "(both-empty tiles count 0, default: a blank generator scores 0), dice or bac.",
    ),
    select_on_test: bool = typer.Option(
        False,
        "--select-on-test",
        help="Without a val part, select on the test part itself (the table is marked optimistic).",
    ),
    checkpoint: str = typer.Option(
        "final",
        "--checkpoint",
        help="Checkpoint each run is scored with: final (after the last epoch, default) or "
        "epoch_N (epoch_21: the authors' last saved weights).",
    ),
) -> None:
    """Train every combination of a grid, evaluate each on one held-out set, keep the best.

    GRID.yaml holds shared training options (any `histolib train` option), an `evaluation:`
    block (tiles / annotations or images / masks, n_tiles, seed, labels) and `grid:` with
    `models:` and `axes:` (see examples/paper_grid.yaml). Runs go to `OUT/runs/<model>-<axis>_
    <value>-...`; a finished run is not trained again and an interrupted one resumes. Each
    model's best run is selected on the manifest's val part (`histolib split --val-fraction`)
    by --select-by and only the selected runs are scored and reported on test; without a val
    part the command refuses unless --select-on-test. Writes OUT/results.csv (every run, per
    part), OUT/table.md (Table 1 layout: the selection, then the selected runs on test with
    intervals and paired differences), OUT/summary.json and OUT/panel.png (Fig. 3 layout).
    Exit code 2 when a run failed or stopped unfinished. See docs/evaluation.md.
    """
    lock = (
        contextlib.nullcontext()
        if dry_run
        else output_lock(out, command="experiment", inputs=[grid], writes=WRITES)
    )
    with cli_errors(), lock:
        from histolib_train.experiment.runner import run_experiment

        console = out_console()
        result = run_experiment(
            grid,
            out=out,
            dry_run=dry_run,
            progress=is_tty(),
            log=_log,
            select_by=select_by.lower(),
            select_on_test=select_on_test,
            checkpoint=checkpoint.lower(),
        )
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
        part = result.selection.get("part", "val")
        columns += ["status", f"DICE ({part})", f"DICE both empty = 0 ({part})", "best"]
    for column in columns:
        table.add_column(column)
    for record in result.records:
        cells = [record.spec.name, record.spec.model, settings_text(record.spec.settings)]
        cells.append(record.state)
        if not result.dry_run:
            scores = (record.val_scores if part == "val" else record.scores) or {}
            means = [scores.get("all", {}).get(m, {}).get("mean") for m in ("dice", "dice_empty0")]
            cells.append(record.status + (f" ({record.note})" if record.note else ""))
            cells += ["n/a" if v is None else f"{v:.3f}" for v in means]
            cells.append("*" if result.best.get(record.spec.model) == record.spec.name else "")
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    """Add ``histolib experiment`` to ``app``."""
    app.command("experiment")(experiment)
