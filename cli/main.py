"""Entry point of the ``histolib`` command."""

from __future__ import annotations

import importlib

import typer

from histolib_cli.common import restore_safety_limits, set_debug, set_safety_limits

app = typer.Typer(
    name="histolib",
    help=(
        "Whole-slide tiling, cell libraries, QuPath interchange and region-guided CycleGANs "
        "for virtual IHC. Coordinates are (x, y) in level-0 slide pixels everywhere."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Each module defines ``register(app)``; they import nothing heavy at load time.
COMMAND_MODULES = (
    "synth",
    "tile",
    "split",
    "info",
    "library",
    "qupath",
    "train",
    "transfer",
    "evaluate",
    "experiment",
    "demo",
    "cluster",
    "view",
)


def _print_version(value: bool) -> None:
    """``--version``: print the version and exit, before any command is looked for."""
    if value:
        from histolib import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
    max_image_pixels: int | None = typer.Option(
        None,
        "--max-image-pixels",
        help="Largest tile or mask image read, in px (default 4096 x 4096).",
    ),
    max_annotation_mb: int | None = typer.Option(
        None,
        "--max-annotation-mb",
        help="Largest annotation file read, MiB after decompression (default 512).",
    ),
    max_grid_tiles: int | None = typer.Option(
        None, "--max-grid-tiles", help="Most tile-grid positions of one slide (default 2^23)."
    ),
    max_upsampling: float | None = typer.Option(
        None,
        "--max-upsampling",
        help="Most a slide may be enlarged to reach the target mpp (default 4).",
    ),
    max_slide_pixels: int | None = typer.Option(
        None,
        "--max-slide-pixels",
        help="Largest plain-image slide (PNG, JPEG, untiled TIFF), in px (default 178956970, "
        "Pillow's decompression-bomb size).",
    ),
    max_repair_crossings: int | None = typer.Option(
        None,
        "--max-repair-crossings",
        help="Most overlapping edge pairs of one self-intersecting contour that is repaired "
        "(default 1000000).",
    ),
    any_mpp: bool = typer.Option(
        False,
        "--any-mpp",
        help="Accept an mpp outside the plausible range of microscopy (0.05..50 um/px).",
    ),
) -> None:
    set_debug(debug)
    ctx.call_on_close(restore_safety_limits())
    set_safety_limits(
        image_pixels=max_image_pixels,
        annotation_bytes=None if max_annotation_mb is None else max_annotation_mb * 1024 * 1024,
        grid_tiles=max_grid_tiles,
        upsampling=max_upsampling,
        slide_pixels=max_slide_pixels,
        repair_crossings=max_repair_crossings,
        any_mpp=True if any_mpp else None,
    )


for _name in COMMAND_MODULES:
    importlib.import_module(f"histolib_cli.{_name}").register(app)


def main() -> None:
    """Run the ``histolib`` command line."""
    app()


if __name__ == "__main__":
    main()
