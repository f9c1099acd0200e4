"""``histolib export qupath`` and ``histolib import qupath``: GeoJSON interchange with QuPath."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, is_tty, out_console, warn

CLASS_NAMES_HELP = (
    "Map histolib labels to QuPath classes, LABEL=Class pairs separated by commas "
    "(example: cancer=Tumor,normal=Normal). Unlisted labels keep their name."
)


def export_qupath_command(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="INPUT",
        help="Tile manifests (tiles.parquet) and cell libraries (.parquet or .geojson).",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one file per slide)."),
    cells: str = typer.Option(
        "detection",
        "--cells",
        help="Write cells as 'detection' boxes or as 'cell' objects with a nucleus circle.",
    ),
    class_names: str = typer.Option("", "--class-names", help=CLASS_NAMES_HELP),
    gzip_output: bool = typer.Option(
        False, "--gzip", help="Write compressed .geojson.gz files (QuPath 0.4+ reads them)."
    ),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        help="Expert contours to pass through (QuPath GeoJSON; ASAP or ImageScope XML "
        "converted): a folder of `<slide_id>.geojson` / `.xml`, or one file (for the only "
        "slide, or for the slide it is named after).",
    ),
) -> None:
    """Export tiles, cell libraries and contours as QuPath GeoJSON, one file per slide.

    Writes `OUT/<slide_id>.geojson`, a FeatureCollection in level-0 px.

    Tiles become 'tile' objects classified by label; cells 'detection' or 'cell' objects
    classified by label, with sigma and pass code as measurements; contours 'annotation's.

    In QuPath: File > Import objects from file, or drag the file onto the image.
    """
    writes = ("*.geojson", "*.geojson.gz", ".*")
    reads = [*inputs, annotations]
    with cli_errors(), output_lock(out, command="export qupath", inputs=reads, writes=writes):
        from histolib.core.progress import make_progress
        from histolib.qupath.export import export_qupath
        from histolib.qupath.features import parse_class_names

        mapping = parse_class_names(class_names)
        with make_progress(transient=True, disable=not is_tty()) as progress:
            result = export_qupath(
                inputs,
                out=out,
                cells=cells,
                class_names=mapping,
                gzip_output=gzip_output,
                annotations=annotations,
                progress=progress,
            )
        for message in result.messages:
            warn(message)
        console = out_console()
        for f in result.files:
            parts = [f"{f.tiles} tiles"] if f.tiles else []
            parts += [f"{f.cells} cells"] if f.cells else []
            parts += [f"{f.annotations} annotations"] if f.annotations else []
            console.print(f"{f.path}: {', '.join(parts) or 'empty FeatureCollection'}")


def import_qupath_command(
    geojsons: list[Path] = typer.Argument(
        ...,
        metavar="GEOJSON",
        help="QuPath exports named `<slide_id>.geojson` (.json, .geojson.gz).",
        show_default=False,
    ),
    tiles: Path = typer.Option(..., "--tiles", help="The tile manifest (tiles.parquet)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="The library to write (.parquet or .geojson)."
    ),
    class_names: str = typer.Option("", "--class-names", help=CLASS_NAMES_HELP),
) -> None:
    """Turn curated QuPath detections/cells back into a histolib cell library.

    Each detection or cell goes to the manifest tile that contains its centre.

    QuPath classes map back to labels through --class-names (cancer and normal always work).

    Objects outside every tile, unclassified or of another class are dropped and reported.
    """
    reads = [*geojsons, tiles]
    with cli_errors(), output_lock(out, command="import qupath", folder=False, inputs=reads):
        from histolib.core.progress import make_progress
        from histolib.qupath.features import parse_class_names
        from histolib.qupath.importer import import_qupath

        mapping = parse_class_names(class_names)
        with make_progress(transient=True, disable=not is_tty()) as progress:
            result = import_qupath(
                geojsons, tiles=tiles, out=out, class_names=mapping, progress=progress
            )
        for message in result.messages:
            warn(message)
        kept = ", ".join(f"{n} {label}" for label, n in sorted(result.kept.items())) or "0 cells"
        out_console().print(f"{result.path}: {result.count} cells ({kept})")


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``import`` groups, each with its ``qupath`` command."""
    export_app = typer.Typer(help="Export histolib products to other tools.", no_args_is_help=True)
    import_app = typer.Typer(help="Import objects from other tools.", no_args_is_help=True)
    export_app.command("qupath")(export_qupath_command)
    import_app.command("qupath")(import_qupath_command)
    app.add_typer(export_app, name="export")
    app.add_typer(import_app, name="import")
