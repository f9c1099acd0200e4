"""``histolib transfer``: restain a slide (pyramidal TIFF out) or a folder of tiles."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from histolib_cli.common import cli_errors, is_tty, out_console, warn
from histolib_cli.options import (
    allow_many_workers_option,
    field_option,
    options_from,
    scheduler_option,
    workers_option,
)
from histolib_train.transfer.options import TransferOptions

T = TransferOptions


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
    direction: str = field_option(T, "direction"),
    mpp: float | None = field_option(T, "mpp"),
    overlap: int | None = field_option(T, "overlap"),
    tile_size: int | None = field_option(T, "tile_size"),
    batch_size: int = field_option(T, "batch_size"),
    device: str = field_option(T, "device"),
    workers: int | None = workers_option("Reader threads (default: the usable CPUs, at most 8)."),
    allow_many_workers: bool = allow_many_workers_option(),
    slide_mpp: float | None = field_option(T, "slide_mpp"),
    tissue: bool = field_option(T, "tissue"),
    glass: str = field_option(T, "glass"),
    amp: bool = field_option(T, "amp"),
    amp_dtype: str = field_option(T, "amp_dtype"),
    overwrite: bool = field_option(T, "overwrite"),
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
    with cli_errors():
        options = options_from(TransferOptions, locals())
    restarts = None if slide is None else "interrupted; a re-run restains the slide from the start"
    with cli_errors(interrupted=restarts), contextlib.ExitStack() as stack:
        from histolib.core.lock import output_lock, remove_stale_temporaries
        from histolib.errors import ConfigError
        from histolib.slide.pyramid import thumbnail_path_for
        from histolib_train.transfer.restaining import restain

        if (slide is None) == (images is None):
            raise ConfigError("give either a SLIDE or --images DIR (not both)")
        side = [] if slide is None else [thumbnail_path_for(out)]
        reads = dict(inputs=[checkpoint, slide, images], side=side)
        stack.enter_context(
            output_lock(out, command="transfer", folder=images is not None, **reads)
        )
        if slide is not None:  # what a killed run left beside the slide's output
            remove_stale_temporaries(thumbnail_path_for(out))
        done = restain(
            checkpoint,
            slide if slide is not None else images,  # type: ignore[arg-type]
            out=out,
            options=options,
            images=images is not None,
            workers=workers,
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
