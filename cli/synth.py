"""``histolib synth``: synthetic slides with known tumours and cells."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.synthetic.options import SynthOptions
from histolib_cli.common import cli_errors, out_console
from histolib_cli.options import (
    allow_many_workers_option,
    field_option,
    options_from,
    overwrite_option,
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
        stain: str = field_option(SynthOptions, "stain"),
        width: int = field_option(SynthOptions, "width"),
        height: int = field_option(SynthOptions, "height"),
        mpp: float = field_option(SynthOptions, "mpp"),
        seed: int = field_option(SynthOptions, "seed"),
        name: str | None = field_option(SynthOptions, "name"),
        tumours: int | None = field_option(SynthOptions, "tumours"),
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
            options = options_from(SynthOptions, locals())
            from histolib.core.parallel import resolve_workers
            from histolib.core.progress import make_progress
            from histolib.synthetic.slides import make_slide

            n_workers = resolve_workers(workers)
            console = out_console()
            for one in options.stains:
                with make_progress(transient=True) as progress:
                    slide = make_slide(
                        out_dir,
                        name=options.stem(one),
                        stain=one,
                        **options.layout_keywords(),
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
