"""``histolib tile``: labelled tiles on a grid over the tissue of whole-slide images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from histolib.core.lock import output_lock
from histolib.tiling.options import TilingOptions
from histolib_cli.common import cli_errors, err_console, is_tty, out_console
from histolib_cli.options import (
    command_options,
    out_option,
    progress_option,
    scheduler_option,
    workers_option,
)

EXIT_SOME_FAILED = 2


def register(app: typer.Typer) -> None:
    """Add ``histolib tile`` to ``app``."""
    app.command("tile")(tile_command)


@command_options(TilingOptions)
def tile_command(
    slides: list[Path] = typer.Argument(
        ...,
        metavar="SLIDE_OR_DIR...",
        help="Slide files (anything OpenSlide reads; PNG/JPEG/TIFF need --slide-mpp) "
        "or folders of slides.",
    ),
    out: Path = out_option("Output folder (created).", short=False),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        help="Contours (QuPath GeoJSON, ASAP or ImageScope XML): a file (one slide) or a "
        "folder of `<slide_id>.geojson` / `.xml` files.",
    ),
    workers: int | None = workers_option(),
    scheduler: str | None = scheduler_option(),
    progress: bool = progress_option(),
    *,
    values: dict[str, Any],
) -> None:
    """Cut slides into labelled tiles on a grid over their tissue.

    Writes `OUT/tiles/<slide_id>/<tile_id>.png`, the manifest OUT/tiles.parquet, and per
    slide a tissue mask (`OUT/masks/<slide_id>.png`) and a QC picture (`OUT/qc/<slide_id>.png`).
    A re-run skips finished slides and tiles. With several slides, a bad one is reported
    and skipped; the exit code is then 2 (1 when every slide failed).
    """
    with cli_errors(), output_lock(out, command="tile"):
        from histolib.tiling.tiler import TilingError, tile_slides

        try:
            manifest = tile_slides(
                slides,
                out=out,
                annotations=annotations,
                workers=workers,
                scheduler=scheduler,
                progress=progress and is_tty(),
                **values,
            )
        except TilingError as exc:
            console = err_console()
            for message in exc.failures.values():
                console.print(f"[bold red]error:[/] {message}", markup=True)
            if exc.manifest is not None:
                _summary(exc.manifest)
            console.print(f"[bold red]{exc}[/]", markup=True)
            raise typer.Exit(EXIT_SOME_FAILED if exc.manifest is not None else 1) from None
        _summary(manifest)


def _summary(manifest: Path) -> None:
    """Print what the manifest holds: tiles per slide and label, notes, where things are."""
    from histolib.tileset.manifest import read_manifest
    from histolib_cli.common import warn

    gdf, meta = read_manifest(manifest)
    slides = meta.get("params", {}).get("slides", {})
    console = out_console()
    for slide_id, info in slides.items():
        for note in info.get("notes", []):
            warn(f"{slide_id}: {note}")
        rows = gdf[gdf["slide_id"] == slide_id]
        counts = rows["label"].value_counts().to_dict()
        detail = ", ".join(f"{counts[k]} {k}" for k in sorted(counts)) or "no tiles"
        console.print(
            f"{slide_id}: {len(rows)} tiles ({detail}) at {info.get('tile_mpp', 0):.4g} um/px; "
            f"QC {manifest.parent / info.get('qc_path', '')}"
        )
    console.print(f"wrote {len(gdf)} tiles from {len(slides)} slide(s): {manifest}")
