"""``histolib tile``: labelled tiles on a grid over the tissue of whole-slide images."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib.tiling.options import TilingOptions
from histolib_cli.common import cli_errors, err_console, is_tty, one_line, out_console
from histolib_cli.options import (
    allow_many_workers_option,
    field_option,
    options_from,
    out_option,
    progress_option,
    scheduler_option,
    workers_option,
)

EXIT_SOME_FAILED = 2
#: What tile writes in --out (slides and contours kept elsewhere in it are fine).
WRITES = ("tiles.parquet", "tiles/*", "masks/*", "qc/*", ".*")
T = TilingOptions


def register(app: typer.Typer) -> None:
    """Add ``histolib tile`` to ``app``."""
    app.command("tile")(tile_command)


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
    allow_many_workers: bool = allow_many_workers_option(),
    scheduler: str | None = scheduler_option(),
    progress: bool = progress_option(),
    stain: str = field_option(T, "stain"),
    mpp: float = field_option(T, "mpp"),
    size: int = field_option(T, "size"),
    slide_mpp: float | None = field_option(T, "slide_mpp"),
    min_tissue: float = field_option(T, "min_tissue"),
    balance: bool = field_option(T, "balance"),
    max_tiles: int | None = field_option(T, "max_tiles"),
    seed: int = field_option(T, "seed"),
    image_format: str = field_option(T, "image_format"),
    positive_classes: list[str] | None = field_option(T, "positive_classes"),
    positive_fraction: float = field_option(T, "positive_fraction"),
    dab_fraction: float = field_option(T, "dab_fraction"),
    png_compression: int = field_option(T, "png_compression"),
    jpeg_quality: int = field_option(T, "jpeg_quality"),
    mpp_tolerance: float = field_option(T, "mpp_tolerance"),
    min_region_um2: float = field_option(T, "min_region_um2"),
    max_hole_um2: float = field_option(T, "max_hole_um2"),
) -> None:
    """Cut slides into labelled tiles on a grid over their tissue.

    Writes `OUT/tiles/<slide_id>/<tile_id>.png`, the manifest OUT/tiles.parquet, and per
    slide a tissue mask (`OUT/masks/<slide_id>.png`) and a QC picture (`OUT/qc/<slide_id>.png`).
    A re-run skips finished slides and tiles. With several slides, a bad one is reported
    and skipped; the exit code is then 2 (1 when every slide failed).
    """
    with cli_errors():
        options = options_from(TilingOptions, locals())
    inputs = [*slides, annotations]
    with cli_errors(), output_lock(out, command="tile", inputs=inputs, writes=WRITES):
        from histolib.tiling.tiler import TilingError, tile_slides

        try:
            manifest = tile_slides(
                slides,
                out=out,
                options=options,
                annotations=annotations,
                workers=workers,
                allow_many_workers=allow_many_workers,
                scheduler=scheduler,
                progress=progress and is_tty(),
            )
        except TilingError as exc:
            console = err_console()
            for message in exc.failures.values():
                console.print(f"[bold red]error:[/] {one_line(message)}", markup=True)
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
