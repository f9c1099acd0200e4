"""One entry point for restaining: a slide, a folder of tiles, or slides on a Dask cluster.

:func:`restain` is what ``histolib transfer`` runs and what a notebook calls: it loads the
checkpoint's generator (here, or on a cluster worker), fills in the window size, overlap and
mpp the checkpoint does not fix from :class:`RestainSettings` (the one place that holds
those defaults), and hands over to :func:`~histolib_train.transfer.slide.transfer_slide`,
:func:`~histolib_train.transfer.images.transfer_images` or
:func:`~histolib_train.transfer.cluster.transfer_slides`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError

DEFAULT_MPP = 0.5
"""Microns per pixel when neither the caller nor the checkpoint gives one."""
DEFAULT_TILE_SIZE = 256
"""Window side (px) when neither the caller nor the checkpoint gives one."""
DEFAULT_OVERLAP = 64
"""Overlap (px) of neighbouring windows, at most a quarter of the window."""


@dataclass(frozen=True)
class RestainSettings:
    """How to restain, besides the input and the output (picklable: sent to cluster workers).

    ``mpp``, ``tile_size`` and ``overlap`` None: the checkpoint's mpp and tile size (else
    :data:`DEFAULT_MPP` and :data:`DEFAULT_TILE_SIZE`) and ``min(DEFAULT_OVERLAP,
    tile_size // 4)``. ``slide_options`` are further keywords of
    :func:`~histolib_train.transfer.slide.transfer_slide` (``batch_size``, ``workers``,
    ``slide_mpp``, ``tissue``, ``glass``, ``overwrite``...).
    """

    checkpoint: str
    direction: str = "he2ihc"
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "auto"
    mpp: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    slide_options: dict[str, Any] = field(default_factory=dict)


def window_settings(
    config: dict[str, Any], settings: RestainSettings
) -> tuple[float, int, int, list[str]]:
    """``(mpp, tile_size, overlap, notes)`` of a run: the settings', else the checkpoint's,
    else the defaults (``notes`` says when the mpp is a default)."""
    notes: list[str] = []
    size = settings.tile_size
    if size is None:
        size = int(config.get("tile_size") or DEFAULT_TILE_SIZE)
    overlap = settings.overlap if settings.overlap is not None else min(DEFAULT_OVERLAP, size // 4)
    mpp = settings.mpp if settings.mpp is not None else config.get("mpp")
    if mpp is None:
        mpp = DEFAULT_MPP
        notes.append(f"the checkpoint records no mpp; running at {DEFAULT_MPP} um/px (set --mpp)")
    return float(mpp), int(size), int(overlap), notes


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
    settings: RestainSettings | None = None,
    images: bool | None = None,
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
    settings
        Generator, device and window settings (:class:`RestainSettings`; its ``checkpoint``
        is replaced by ``checkpoint``); None: all defaults.
    images
        ``source`` is a folder of tiles (True) or a slide (False); None: a folder of tiles
        when ``source`` is a directory.
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
        For a folder of tiles with a scheduler, or bad settings.
    CheckpointError, SlideError, InputError, OutputError
        From the stages (see the functions above).
    """
    import dataclasses

    settings = dataclasses.replace(
        settings or RestainSettings(checkpoint=str(checkpoint)), checkpoint=str(checkpoint)
    )
    source, out = Path(source), Path(out)
    images = source.is_dir() if images is None else images
    if scheduler is not None:
        if images:
            raise ConfigError("--scheduler restains a SLIDE; --images runs on this machine only")
        return _on_cluster(source, out, settings=settings, scheduler=scheduler, progress=progress)
    from histolib_train.transfer.generator import load_transfer_generator

    generator, config = load_transfer_generator(
        settings.checkpoint,
        direction=settings.direction,
        device=settings.device,
        amp=settings.amp,
        amp_dtype=settings.amp_dtype,
    )
    mpp, size, overlap, notes = window_settings(config, settings)
    options = dict(settings.slide_options)
    if images:
        from histolib_train.transfer.images import transfer_images

        keep = {key: options[key] for key in ("batch_size", "overwrite") if key in options}
        tiles = transfer_images(
            source, generator, out=out, tile_size=size, overlap=overlap, progress=progress, **keep
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
        **options,
    )
    return Restained(slide=result, notes=notes)


def _on_cluster(
    source: Path, out: Path, *, settings: RestainSettings, scheduler: str | Path, progress: bool
) -> Restained:
    """Restain the slide ``source`` as one task of the cluster ``scheduler``."""
    from histolib_train.transfer.cluster import transfer_slides

    results, failures = transfer_slides(
        [(source, out)], scheduler=scheduler, settings=settings, progress=progress
    )
    if failures:
        raise failures[0]
    result, notes = results[0]
    return Restained(slide=result, notes=list(notes))
