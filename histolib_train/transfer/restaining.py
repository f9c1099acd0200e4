"""One entry point for restaining: a slide, a folder of tiles, or slides on a Dask cluster.

:func:`restain` is what ``histolib transfer`` runs and what a notebook calls: it loads the
checkpoint's generator (here, or on a cluster worker), fills in the window size, overlap and
mpp that neither its :class:`~histolib_train.transfer.options.TransferOptions` nor the
checkpoint fix (:func:`window_settings`), and hands over to
:func:`~histolib_train.transfer.slide.transfer_slide`,
:func:`~histolib_train.transfer.images.transfer_images` or
:func:`~histolib_train.transfer.cluster.transfer_slides`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError
from histolib_train.transfer.options import (
    DEFAULT_MPP,
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    TransferOptions,
)


def window_settings(
    config: dict[str, Any], options: TransferOptions
) -> tuple[float, int, int, list[str]]:
    """``(mpp, tile_size, overlap, notes)`` of a run: the options', else the checkpoint's,
    else the defaults (``notes`` says when the mpp is a default)."""
    notes: list[str] = []
    size = options.tile_size
    if size is None:
        size = int(config.get("tile_size") or DEFAULT_TILE_SIZE)
    overlap = options.overlap if options.overlap is not None else min(DEFAULT_OVERLAP, size // 4)
    mpp = options.mpp if options.mpp is not None else config.get("mpp")
    if mpp is None:
        mpp = DEFAULT_MPP
        notes.append(f"the checkpoint records no mpp; running at {DEFAULT_MPP} um/px (set --mpp)")
    return float(mpp), int(size), int(overlap), notes


def slide_keywords(options: TransferOptions, *, workers: int | None) -> dict[str, Any]:
    """The keywords of :func:`~histolib_train.transfer.slide.transfer_slide` that ``options``
    (and the reader threads ``workers``) set, besides the window."""
    return dict(
        batch_size=options.batch_size,
        overwrite=options.overwrite,
        workers=workers,
        slide_mpp=options.slide_mpp,
        tissue=options.tissue,
        glass=options.glass,
    )


@dataclass
class Restained:
    """What :func:`restain` did: ``slide`` (a TransferResult) or ``tiles`` (``{"written": n,
    "skipped": n}``), and ``notes`` worth telling the user (defaults taken)."""

    slide: Any | None = None
    tiles: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)


def restain(
    checkpoint: str | Path,
    source: str | Path,
    *,
    out: str | Path,
    options: TransferOptions = TransferOptions(),
    images: bool | None = None,
    workers: int | None = None,
    scheduler: str | Path | None = None,
    progress: bool = False,
) -> Restained:
    """Restain a slide or a folder of tiles with a checkpoint's generator.

    Parameters
    ----------
    checkpoint
        A checkpoint file or a run folder (its ``checkpoints/latest.pt``).
    source
        A slide (any format :func:`histolib.slide.reader.open_slide` reads) or a folder of
        tiles (a directory: :func:`~histolib_train.transfer.images.transfer_images`).
    out
        The output ``.tif`` of a slide (a thumbnail PNG is written beside it), or the output
        folder of tiles.
    options
        Generator, device, window and slide options (:class:`TransferOptions`; the
        slide-only ones are ignored for a folder of tiles).
    images
        ``source`` is a folder of tiles (True) or a slide (False); None: a folder of tiles
        when ``source`` is a directory.
    workers
        Reader threads of a slide (None: the usable CPUs, at most 8).
    scheduler
        A Dask scheduler (``tcp://`` address or scheduler file): the slide is restained by a
        worker of that cluster, which loads the generator itself and must see the
        checkpoint, the slide and ``out`` at the same paths. Slides only.
    progress
        Show a Rich progress bar.

    Returns
    -------
    Restained

    Raises
    ------
    ConfigError
        For a folder of tiles with a scheduler, or bad options.
    CheckpointError, SlideError, InputError, OutputError
        From the stages (see the functions above).
    """
    source, out = Path(source), Path(out)
    images = source.is_dir() if images is None else images
    if scheduler is not None:
        if images:
            raise ConfigError("--scheduler restains a SLIDE; --images runs on this machine only")
        return _on_cluster(
            checkpoint,
            source,
            out,
            options=options,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
        )
    from histolib_train.transfer.generator import load_transfer_generator

    generator, config = load_transfer_generator(
        checkpoint,
        direction=options.direction,
        device=options.device,
        amp=options.amp,
        amp_dtype=options.amp_dtype,
    )
    mpp, size, overlap, notes = window_settings(config, options)
    window = dict(tile_size=size, overlap=overlap, batch_size=options.batch_size)
    if images:
        from histolib_train.transfer.images import transfer_images

        tiles = transfer_images(
            source, generator, out=out, overwrite=options.overwrite, progress=progress, **window
        )
        return Restained(tiles=tiles)
    from histolib_train.transfer.slide import transfer_slide

    result = transfer_slide(
        source,
        generator,
        out=out,
        mpp=mpp,
        tile_size=size,
        overlap=overlap,
        progress=progress,
        **slide_keywords(options, workers=workers),
    )
    return Restained(slide=result, notes=notes)


def _on_cluster(
    checkpoint: str | Path,
    source: Path,
    out: Path,
    *,
    options: TransferOptions,
    workers: int | None,
    scheduler: str | Path,
    progress: bool,
) -> Restained:
    """Restain the slide ``source`` as one task of the cluster ``scheduler``."""
    from histolib_train.transfer.cluster import transfer_slides

    results, failures = transfer_slides(
        [(source, out)],
        checkpoint=checkpoint,
        scheduler=scheduler,
        options=options,
        workers=workers,
        progress=progress,
    )
    if failures:
        raise failures[0]
    result, notes = results[0]
    return Restained(slide=result, notes=list(notes))
