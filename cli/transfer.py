"""``histolib transfer``: restain a slide (pyramidal TIFF out) or a folder of tiles."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from histolib_cli.common import cli_errors, is_tty, out_console, warn
from histolib_cli.options import (
    allow_many_workers_option,
    scheduler_option,
    tile_size_option,
    workers_option,
)


def transfer(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint file (.pt) or run folder (its checkpoints/latest.pt)."
    ),
    slide: Path | None = typer.Argument(None, help="Slide to restain (any OpenSlide format)."),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Folder of tiles (and its sub-folders) to restain instead of a slide.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output .tif for a slide; output folder for --images."
    ),
    direction: str = typer.Option("he2ihc", "--direction", help="he2ihc or ihc2he."),
    mpp: float | None = typer.Option(
        None, "--mpp", help="Microns per pixel to run at (default: the checkpoint's, else 0.5)."
    ),
    overlap: int | None = typer.Option(
        None,
        "--overlap",
        help="Pixels shared by neighbouring windows (default: 64, at most a quarter window).",
    ),
    tile_size: int | None = tile_size_option(
        "Window side in px (default: the checkpoint's, else 256).", flag="--tile-size"
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per generator call."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    workers: int | None = workers_option("Reader threads (default: the usable CPUs, at most 8)."),
    allow_many_workers: bool = allow_many_workers_option(),
    slide_mpp: float | None = typer.Option(
        None, "--slide-mpp", help="Level-0 mpp of a slide whose metadata lacks it."
    ),
    tissue: bool = typer.Option(
        True, "--tissue/--no-tissue", help="Skip windows without tissue (left white)."
    ),
    glass: str = typer.Option(
        "white",
        "--glass",
        help="white: glass stays white (generator output faded out past the tissue edge); "
        "keep: the generator's output wherever a window ran.",
    ),
    amp: bool = typer.Option(
        True,
        "--amp/--no-amp",
        help="Mixed precision: on CUDA bf16 from compute capability 8.0, else fp16.",
    ),
    amp_dtype: str = typer.Option(
        "auto", "--amp-dtype", help="auto, bf16 or fp16 (any device, the CPU included)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo an existing output."),
    scheduler: str | None = scheduler_option(
        "Restain SLIDE on a worker of a Dask cluster (its scheduler's tcp:// address or "
        "scheduler file): the checkpoint is loaded there, on the worker's device; the worker "
        "must see the checkpoint, SLIDE and --out at the same paths (docs/cluster.md)."
    ),
) -> None:
    """Restain SLIDE (or --images DIR) with a checkpoint's generator.

    A slide becomes a pyramidal JPEG TIFF at the model's mpp (OpenSlide and QuPath read its
    levels and mpp) plus a PNG thumbnail beside it; overlapping windows are blended so that no
    seams show; windows without tissue are not run and glass stays white (--glass keep: the
    generator's output wherever a window ran). A folder of tiles becomes a folder of
    PNG tiles at the same relative paths. Outputs appear only when complete; an existing output
    is kept unless --overwrite (a folder of tiles resumes tile by tile; an interrupted slide is
    restained from the start). OUT may not be the input (also through links).
    """
    restarts = None if slide is None else "interrupted; a re-run restains the slide from the start"
    with cli_errors(interrupted=restarts), contextlib.ExitStack() as stack:
        from histolib.core.lock import output_lock, remove_stale_temporaries
        from histolib.errors import ConfigError
        from histolib.slide.pyramid import thumbnail_path_for
        from histolib_train.transfer.glass import check_glass
        from histolib_train.transfer.restaining import RestainSettings, restain

        if (slide is None) == (images is None):
            raise ConfigError("give either a SLIDE or --images DIR (not both)")
        check_glass(glass)
        side = [] if slide is None else [thumbnail_path_for(out)]
        reads = dict(inputs=[checkpoint, slide, images], side=side)
        stack.enter_context(
            output_lock(out, command="transfer", folder=images is not None, **reads)
        )
        if slide is not None:  # what a killed run left beside the slide's output
            remove_stale_temporaries(thumbnail_path_for(out))
        options: dict[str, Any] = dict(batch_size=batch_size, overwrite=overwrite)
        if slide is not None:
            options.update(workers=workers, slide_mpp=slide_mpp, tissue=tissue, glass=glass)
        settings = RestainSettings(
            checkpoint=str(checkpoint),
            direction=direction,
            device=device,
            amp=amp,
            amp_dtype=amp_dtype,
            mpp=mpp,
            tile_size=tile_size,
            overlap=overlap,
            slide_options=options,
        )
        done = restain(
            checkpoint,
            slide if slide is not None else images,  # type: ignore[arg-type]
            out=out,
            settings=settings,
            images=images is not None,
            scheduler=scheduler,
            progress=is_tty(),
        )
        for note in done.notes:
            warn(note)
        if done.tiles is not None:
            counts = done.tiles
            out_console().print(
                f"restained {counts['written']} tile(s) into {out}"
                + (f" ({counts['skipped']} already done)" if counts["skipped"] else ""),
                markup=False,
            )
            return
        _report(done.slide)


def _report(result: Any) -> None:
    """Print what a slide's transfer wrote (or that it kept an existing output)."""
    console = out_console()
    if result.skipped:
        console.print(f"{result.path} exists; kept (use --overwrite to redo it)", markup=False)
        return
    t = result.timings
    console.print(
        f"wrote {result.path} ({result.width} x {result.height} px at {result.mpp:g} um/px; "
        f"{result.tissue_windows} of {result.windows} windows on tissue) in "
        f"{t['wall']:.1f} s [read {t['read']:.1f} s, inference {t['inference']:.1f} s, "
        f"blend {t['blend']:.1f} s, write {t['write']:.1f} s]; thumbnail {result.thumbnail}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``histolib transfer`` to ``app``."""
    app.command("transfer")(transfer)
