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

DEFAULT_MPP = 0.5
DEFAULT_OVERLAP = 64


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
        from histolib_train.transfer.generator import load_transfer_generator
        from histolib_train.transfer.glass import check_glass
        from histolib_train.transfer.images import transfer_images
        from histolib_train.transfer.slide import transfer_slide

        if (slide is None) == (images is None):
            raise ConfigError("give either a SLIDE or --images DIR (not both)")
        check_glass(glass)
        stack.enter_context(output_lock(out, command="transfer", folder=images is not None))
        if slide is not None:  # what a killed run left beside the slide's output
            remove_stale_temporaries(thumbnail_path_for(out))
        if scheduler is not None:
            settings = dict(direction=direction, device=device, amp=amp, mpp=mpp)
            settings.update(amp_dtype=amp_dtype)
            settings.update(tile_size=tile_size, overlap=overlap)
            options = dict(batch_size=batch_size, workers=workers, slide_mpp=slide_mpp)
            options.update(tissue=tissue, overwrite=overwrite, glass=glass)
            result = _restain_on_cluster(
                checkpoint,
                slide,
                images,
                out=out,
                scheduler=scheduler,
                slide_options=options,
                **settings,
            )
            _report(result)
            return
        generator, config = load_transfer_generator(
            checkpoint, direction=direction, device=device, amp=amp, amp_dtype=amp_dtype
        )
        size = tile_size if tile_size is not None else int(config.get("tile_size") or 256)
        if overlap is None:
            overlap = min(DEFAULT_OVERLAP, size // 4)
        console = out_console()
        common: dict[str, Any] = dict(out=out, tile_size=size, overlap=overlap)
        common.update(batch_size=batch_size, overwrite=overwrite, progress=is_tty())
        if images is not None:
            counts = transfer_images(images, generator, **common)
            console.print(
                f"restained {counts['written']} tile(s) into {out}"
                + (f" ({counts['skipped']} already done)" if counts["skipped"] else ""),
                markup=False,
            )
            return
        run_mpp = mpp if mpp is not None else config.get("mpp")
        if run_mpp is None:
            run_mpp = DEFAULT_MPP
            warn(f"the checkpoint records no mpp; running at {DEFAULT_MPP} um/px (set --mpp)")
        result = transfer_slide(
            slide,  # type: ignore[arg-type]
            generator,
            mpp=float(run_mpp),
            slide_mpp=slide_mpp,
            workers=workers,
            tissue=tissue,
            glass=glass,
            **common,
        )
        _report(result)


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


def _restain_on_cluster(
    checkpoint: Path,
    slide: Path | None,
    images: Path | None,
    *,
    out: Path,
    scheduler: str,
    slide_options: dict[str, Any],
    **settings: Any,
) -> Any:
    """Restain SLIDE as one task of the Dask cluster ``scheduler``; its TransferResult."""
    from histolib.errors import ConfigError
    from histolib_train.transfer.cluster import RestainSettings, transfer_slides

    if slide is None or images is not None:
        raise ConfigError("--scheduler restains a SLIDE; --images runs on this machine only")
    restain = RestainSettings(checkpoint=str(checkpoint), slide_options=slide_options, **settings)
    results, failures = transfer_slides(
        [(slide, out)], scheduler=scheduler, settings=restain, progress=is_tty()
    )
    if failures:
        raise failures[0]
    result, notes = results[0]
    for note in notes:
        warn(note)
    return result


def register(app: typer.Typer) -> None:
    """Add ``histolib transfer`` to ``app``."""
    app.command("transfer")(transfer)
