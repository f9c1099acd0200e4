"""``histolib synth``: synthetic slides with known tumours and cells."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib_cli.common import cli_errors, out_console
from histolib_cli.options import (
    allow_many_workers_option,
    mpp_option,
    overwrite_option,
    seed_option,
    workers_option,
)


def register(app: typer.Typer) -> None:
    """Add ``histolib synth`` to ``app``."""

    @app.command(
        "synth",
        help=(
            "Render synthetic pyramidal TIFF slides with their ground truth.\n\n"
            "Beside each `<name>.tif`: `<name>.geojson` (tumour contours, QuPath annotations of "
            "class Tumor) and `<name>_cells.csv` (x,y,label,radius of every cell in level-0 px, "
            "label cancer or normal).\n\n"
            "The layout depends only on the seed, size and mpp, so the H&E and IHC slides of "
            "one seed are a registered pair. A slide already there with the same parameters "
            "is kept."
        ),
    )
    def synth(
        out_dir: Path = typer.Argument(..., help="Folder to write the slides into (created)."),
        stain: str = typer.Option("both", "--stain", help="he, ihc or both (a registered pair)."),
        width: int = typer.Option(4096, "--width", help="Level-0 width in px."),
        height: int = typer.Option(4096, "--height", help="Level-0 height in px."),
        mpp: float = mpp_option("Microns per pixel at level 0."),
        seed: int = seed_option("Random seed of the layout."),
        name: str | None = typer.Option(
            None,
            "--name",
            help="File stem (default `synthetic_<stain>_<seed>`; with --stain both, "
            "`<name>_he` and `<name>_ihc`).",
        ),
        tumours: int | None = typer.Option(
            None, "--tumours", help="Number of tumour nests (default: scaled to the tissue)."
        ),
        workers: int | None = workers_option(
            "Processes rendering blocks (default: the cores, at most 8)."
        ),
        allow_many_workers: bool = allow_many_workers_option(),
        force: bool = overwrite_option(
            "Render again even when an identical slide exists.", flag="--force"
        ),
    ) -> None:
        """Render synthetic slides (see the command help)."""
        with cli_errors():
            from histolib.core.parallel import resolve_workers
            from histolib.core.progress import make_progress
            from histolib.errors import ConfigError
            from histolib.synthetic.slides import make_slide

            stains = {"he": ["he"], "ihc": ["ihc"], "both": ["he", "ihc"]}.get(stain.lower())
            if stains is None:
                raise ConfigError(f"--stain must be he, ihc or both, not {stain!r}")
            n_workers = resolve_workers(workers)
            console = out_console()
            for one in stains:
                if name is None:
                    stem = None
                elif len(stains) > 1:
                    stem = f"{name}_{one}"
                else:
                    stem = name
                with make_progress(transient=True) as progress:
                    slide = make_slide(
                        out_dir,
                        name=stem,
                        stain=one,
                        width=width,
                        height=height,
                        mpp=mpp,
                        seed=seed,
                        n_tumours=tumours,
                        workers=n_workers,
                        force=force,
                        progress=progress,
                    )
                verb = "kept (identical)" if slide.reused else "wrote"
                console.print(
                    f"{verb} {slide.slide_path}  [{one}, {slide.width} x {slide.height} px, "
                    f"{slide.mpp:g} um/px, seed {slide.seed}]",
                    markup=False,
                )
                console.print(
                    f"      {slide.annotations_path}  [{slide.n_tumours} tumour contours, "
                    "class Tumor]",
                    markup=False,
                )
                console.print(
                    f"      {slide.cells_path}  [{slide.n_cells} cells, {slide.n_cancer} cancer]",
                    markup=False,
                )
