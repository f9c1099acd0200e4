"""``histolib build-library``: cancer and normal cell boxes from tiles (the authors' pipeline)."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib.library.params import LibraryParams
from histolib_cli.common import cli_errors, is_tty, out_console
from histolib_cli.options import (
    allow_many_workers_option,
    field_option,
    given_values,
    out_option,
    parse_assignments,
    scheduler_option,
    seed_option,
    workers_option,
)

SET_HELP = (
    "Set any parameter, KEY=VALUE (repeatable), e.g. --set he_cancer_threshold=0.02. "
    "Keys: the fields of histolib.library.params.LibraryParams (see --params)."
)


def build_library_command(
    manifest: Path | None = typer.Argument(
        None,
        metavar="[MANIFEST]",
        help="Tile manifest (tiles.parquet from 'histolib tile').",
        show_default=False,
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Folder of PNG tiles instead of a manifest (each its own slide)."
    ),
    masks: Path | None = typer.Option(
        None,
        "--masks",
        help="With --images and H&E: folder of tumour masks, same stem, PNG, non-zero = tumour.",
    ),
    stain: str = typer.Option(..., "--stain", help="he or ihc."),
    out: Path = out_option("Library file: .parquet (GeoParquet) or .geojson."),
    params_file: Path | None = typer.Option(
        None, "--params", help="TOML or YAML file of parameters (flat keys)."
    ),
    preset: str = typer.Option(
        "authors", "--preset", help="authors (their code; default) or paper (graph edges 25 px)."
    ),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    overlays: int = typer.Option(
        0, "--overlays", help="Draw N random tiles with their boxes into `<name>_overlays/`."
    ),
    workers: int | None = workers_option(short=True),
    allow_many_workers: bool = allow_many_workers_option(),
    scheduler: str | None = scheduler_option(),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        help="H&E with a manifest: contours file or folder of `<slide_id>.geojson` / `.xml` "
        "(default: the annotations the manifest records).",
    ),
    positive_class: list[str] = typer.Option(
        [],
        "--positive-class",
        help="Annotation class that is tumour (repeatable; default: the manifest's, "
        "else every annotation).",
    ),
    tile_mpp: float = typer.Option(
        0.5, "--tile-mpp", help="With --images: um/px of the tiles (distances scale with it)."
    ),
    seed: int = seed_option("Seed of the choice of overlay tiles."),
    graph_distance: float | None = field_option(LibraryParams, "graph_distance", not_given=True),
    dilation_radius: float | None = field_option(LibraryParams, "dilation_radius", not_given=True),
    box_size: int | None = field_option(LibraryParams, "box_size", not_given=True),
    detector: str | None = field_option(LibraryParams, "detector", not_given=True),
) -> None:
    """Build a library of cancer and normal cell boxes from H&E or IHC tiles.

    H&E: normal nuclei (LoG, sigma 1..2) that form clusters of >= 3 cells; cancer nuclei
    (sigma 10..12) inside the expert tumour contour but outside the cluster hulls grown by
    10 px. IHC: a DAB mask (Otsu); normal nuclei outside it, cancer nuclei inside. Boxes are
    48x48 px centred on the nuclei; nuclei nearer than 24 px to the tile edge are dropped.

    Writes OUT (one row a cell, box in level-0 px), OUT's `<name>_tiles.csv` (counts a tile)
    and, with --overlays, PNG pictures. A re-run skips tiles already done (cache in the
    hidden folder `.<name>.work` beside OUT).
    """
    values = given_values(LibraryParams, locals(), not_given=True)
    from histolib.library.build import build_library, counts_path, overlays_dir, work_dir

    side = [counts_path(out), overlays_dir(out), work_dir(out)]
    reads = dict(inputs=[manifest, annotations, params_file], scanned=[images, masks], side=side)
    with cli_errors(), output_lock(out, command="build-library", folder=False, **reads):
        from histolib.library.params import resolve_params

        overrides: dict[str, object] = {**parse_assignments(sets), **values}  # flags win
        params = resolve_params(preset=preset, file=params_file, overrides=overrides)
        result = build_library(
            manifest=manifest,
            images=images,
            masks=masks,
            stain=stain.lower(),
            out=out,
            params=params,
            preset=preset,
            workers=workers,
            scheduler=scheduler,
            overlays=overlays,
            annotations=annotations,
            positive_classes=list(positive_class) or None,
            tile_mpp=tile_mpp,
            seed=seed,
            progress=is_tty(),
        )
        from histolib.library.cellio import read_library

        gdf, meta = read_library(result)
        p = meta.get("params", {})
        console = out_console()
        console.print(
            f"{result}: {len(gdf)} cells ({p.get('n_cancer', 0)} cancer, "
            f"{p.get('n_normal', 0)} normal) from {p.get('n_tiles', 0)} tiles"
        )
        console.print(f"per-tile counts: {counts_path(result)}")
        if overlays:
            console.print(f"overlays: {overlays_dir(result)}")


def register(app: typer.Typer) -> None:
    """Add ``build-library`` to the ``histolib`` command."""
    app.command("build-library")(build_library_command)
