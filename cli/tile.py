"""``histolib tile``: labelled tiles on a grid over the tissue of whole-slide images."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib_cli.common import cli_errors, err_console, is_tty, out_console

EXIT_SOME_FAILED = 2


def register(app: typer.Typer) -> None:
    """Add ``histolib tile`` to ``app``."""

    @app.command("tile")
    def tile(
        slides: list[Path] = typer.Argument(
            ...,
            metavar="SLIDE_OR_DIR...",
            help="Slide files (anything OpenSlide reads; PNG/JPEG/TIFF need --slide-mpp) "
            "or folders of slides.",
        ),
        out: Path = typer.Option(..., "--out", help="Output folder (created)."),
        annotations: Path | None = typer.Option(
            None,
            "--annotations",
            help="QuPath GeoJSON contours: a file (one slide) or a folder of "
            "`<slide_id>.geojson` files.",
        ),
        stain: str = typer.Option(
            "he", "--stain", help="he or ihc (IHC without contours is labelled from DAB)."
        ),
        mpp: float = typer.Option(0.5, "--mpp", help="Microns per tile pixel (0.5 = 20x)."),
        size: int = typer.Option(256, "--size", help="Tile side in px."),
        slide_mpp: float | None = typer.Option(
            None, "--slide-mpp", help="Level-0 microns per pixel of the slides (overrides)."
        ),
        min_tissue: float = typer.Option(
            0.5, "--min-tissue", help="Minimum tissue fraction of a tile."
        ),
        balance: bool = typer.Option(
            False, "--balance", help="As many positive as negative tiles per slide (seeded)."
        ),
        max_tiles: int | None = typer.Option(
            None, "--max-tiles", help="At most N tiles per slide (seeded draw)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of --balance / --max-tiles draws."),
        workers: int | None = typer.Option(
            None, "--workers", help="Processes (default: the cores; 1 = in this process)."
        ),
        image_format: str = typer.Option(
            "png", "--format", help="png, jpeg or none (manifest of coordinates only)."
        ),
        positive_class: list[str] | None = typer.Option(
            None,
            "--positive-class",
            help="Contour class meaning tumour (repeatable; default: every annotation).",
        ),
        positive_fraction: float = typer.Option(
            0.5,
            "--positive-fraction",
            help="Fraction of a tile inside the contours from which it is positive.",
        ),
        dab_fraction: float = typer.Option(
            0.1,
            "--dab-fraction",
            help="IHC: fraction of DAB-positive pixels from which a tile is positive.",
        ),
        png_compression: int = typer.Option(
            1, "--png-compression", help="zlib level of PNG tiles, 0-9 (1 = fast)."
        ),
        jpeg_quality: int = typer.Option(90, "--jpeg-quality", help="JPEG quality, 1-100."),
        mpp_tolerance: float = typer.Option(
            0.0,
            "--mpp-tolerance",
            help="Read a level within this relative mpp distance of --mpp unresampled "
            "(e.g. 0.01 takes 0.499 um/px as 0.5).",
        ),
        min_region_area: float = typer.Option(
            5000.0, "--min-region-area", help="Smallest tissue region kept, um^2."
        ),
        max_hole_area: float = typer.Option(
            10000.0, "--max-hole-area", help="Largest hole in tissue filled, um^2."
        ),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Show a progress bar on stderr."
        ),
    ) -> None:
        """Cut slides into labelled tiles on a grid over their tissue.

        Writes `OUT/tiles/<slide_id>/<tile_id>.png`, the manifest OUT/tiles.parquet, and per
        slide a tissue mask (`OUT/masks/<slide_id>.png`) and a QC picture (`OUT/qc/<slide_id>.png`).
        A re-run skips finished slides and tiles. With several slides, a bad one is reported
        and skipped; the exit code is then 2 (1 when every slide failed).
        """
        with cli_errors():
            from histolib.tiling.run import TilingError, tile_slides

            try:
                manifest = tile_slides(
                    slides,
                    out=out,
                    annotations=annotations,
                    stain=stain.lower(),
                    mpp=mpp,
                    size=size,
                    slide_mpp=slide_mpp,
                    min_tissue=min_tissue,
                    balance=balance,
                    max_tiles=max_tiles,
                    seed=seed,
                    workers=workers,
                    image_format=image_format.lower(),
                    positive_classes=positive_class or None,
                    positive_fraction=positive_fraction,
                    dab_fraction=dab_fraction,
                    png_compression=png_compression,
                    jpeg_quality=jpeg_quality,
                    mpp_tolerance=mpp_tolerance,
                    min_region_um2=min_region_area,
                    max_hole_um2=max_hole_area,
                    progress=progress and is_tty(),
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
    from histolib.tiles.manifest import read_manifest
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
