"""``histolib split``: a train / val / test ``split`` column in tile manifests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from histolib_cli.common import cli_errors, out_console, warn
from histolib_cli.options import overwrite_option, seed_option


def split(
    manifests: list[Path] = typer.Argument(
        ..., metavar="MANIFEST...", help="Tile manifests (tiles.parquet); each split on its own."
    ),
    test_fraction: float = typer.Option(
        0.1, "--test-fraction", help="Target fraction of the tiles held out for testing."
    ),
    val_fraction: float = typer.Option(
        0.0,
        "--val-fraction",
        help="Target fraction of the tiles in a val part, the set `histolib experiment` selects "
        "its best runs on (drawn like test, from what test leaves; 0: no val part).",
    ),
    by: str = typer.Option(
        "slide",
        "--by",
        help="slide: whole slides to test, none in both parts (default); tile: the authors' "
        "tile-level train_test_split.",
    ),
    seed: int = seed_option("Seed (42: the authors' random_state).", default=42),
    force: bool = overwrite_option(
        "Replace a split that a manifest already holds.", flag="--force"
    ),
) -> None:
    """Write a `split` column (train / val / test) into tile manifests.

    `--by slide` sends whole slides to the test part, chosen so that the test share of the
    tiles is close to `--test-fraction` (at least one slide in each part; a manifest of one
    slide needs `--by tile`). `--by tile` is the authors' 10 % tile-level split
    (`train_test_split(test_size=0.1, random_state=42)`, re-implemented with numpy: the same
    algorithm, not checked to be bit-identical). The same settings give the same split and leave
    the file untouched; a manifest that already holds another split keeps it unless `--force`.
    `--val-fraction F` adds a `val` part of about F of the tiles (by slide or tile, as test;
    the test part stays the one drawn without it): `histolib experiment` selects each model's
    best run on `val` and reports it on `test`.
    A manifest's folder is locked as `histolib tile` locks it: no tile run can grow a manifest
    while it is being split.
    """
    with cli_errors(), contextlib.ExitStack() as locks:
        from histolib.core.lock import output_lock
        from histolib.tileset.split import split_manifests

        for folder in dict.fromkeys(Path(m).absolute().parent for m in manifests):
            locks.enter_context(output_lock(folder, command="split"))  # as `tile` locks it
        reports = split_manifests(
            manifests,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            by=by.lower(),
            seed=seed,
            force=force,
        )
        for report in reports:
            if report.note:
                warn(f"{report.path}: {report.note}")
        out_console().print(_table(reports))


def _table(reports: list[Any]) -> Any:
    """Rich table: per manifest and part, tiles, slides and labels."""
    from rich.table import Table

    table = Table(title="tile split", title_justify="left")
    for column in ("manifest", "status", "part", "tiles", "slides", "labels"):
        table.add_column(column, justify="right" if column in ("tiles", "slides") else "left")
    for report in reports:
        parts = ("train", "val", "test") if report.tiles.get("val") else ("train", "test")
        for part in parts:
            labels = ", ".join(f"{n} {k}" for k, n in report.labels.get(part, {}).items())
            first = part == "train"
            share = f" ({report.part_fraction(part):.1%})" if part != "train" else ""
            table.add_row(
                str(report.path) if first else "",
                f"{report.status} (by {report.by}, seed {report.seed})" if first else "",
                part,
                f"{report.tiles.get(part, 0)}{share}",
                str(report.slides.get(part, 0)),
                labels or "-",
                end_section=part == "test",
            )
    return table


def register(app: typer.Typer) -> None:
    """Add ``histolib split`` to ``app``."""
    app.command("split")(split)
