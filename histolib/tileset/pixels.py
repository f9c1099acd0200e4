"""A tile's pixels: its image file, or read straight from its slide when none was written.

A manifest written with ``histolib tile --format none`` records where every tile is (its slide,
level-0 origin, size, mpp and downsample) but holds no image. :func:`read_tile` gives the pixels
of any :class:`~histolib.tileset.sources.TileRecord`: its image through
:func:`histolib.tileset.images.read_rgb` when it has one, else the region of its slide read the
way ``histolib tile`` read it (the same pyramid level, the same resampling), so the pixels equal
those of a PNG written by ``--format png`` bit for bit.

Slides are opened through the one cache of open slides, :mod:`histolib.slide.cache` (lazily,
per process and thread, bounded, reopened when the file changes, one shared tile cache).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ImageError, ManifestError, SlideError
from histolib.tileset.sources import TileRecord


def level_choice(slide: Any, downsample: float) -> Any:
    """The :class:`~histolib.slide.reader.LevelChoice` ``histolib tile`` used for tiles of
    ``downsample`` level-0 px per tile px: the level that is read without resampling when
    ``downsample`` is a level's own (the recorded downsample is then that level's), else the
    coarsest finer level, resampled to exactly ``downsample``."""
    choice = slide.choose_level(slide.mpp * downsample, mpp_tolerance=0.0)
    return dataclasses.replace(choice, downsample=downsample) if choice.resample else choice


def read_slide_tile(
    slide_path: str | Path,
    *,
    x0: float,
    y0: float,
    size: int,
    mpp: float,
    downsample: float,
) -> np.ndarray:
    """The ``size`` px tile at level-0 ``(x0, y0)`` of a slide, as ``histolib tile`` cut it.

    Parameters
    ----------
    slide_path
        The slide file.
    x0, y0
        Level-0 origin of the tile.
    size
        Side of the tile in px.
    mpp, downsample
        The tile's um/px and level-0 px per tile px, as the manifest records them (the slide's
        own mpp is ``mpp / downsample``, so a slide without mpp in its metadata reads too).

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 RGB.

    Raises
    ------
    SlideError
        When the slide is missing, unreadable or corrupt where the tile lies.
    """
    from histolib.slide.cache import cached_slide

    slide_path = str(slide_path)
    handle = cached_slide(slide_path, mpp=float(mpp) / float(downsample))
    choice = handle.choices.get(float(downsample))
    if choice is None:
        choice = handle.choices[float(downsample)] = level_choice(handle.slide, float(downsample))
    image = handle.slide.read_pil(float(x0), float(y0), int(size), int(size), choice)
    return np.asarray(image)


def read_tile(record: TileRecord, *, expected_size: int | None = None) -> np.ndarray:
    """The pixels of a tile: its image file, else its region of its slide.

    Parameters
    ----------
    record
        A tile of a manifest or folder (:mod:`histolib.tileset.sources`).
    expected_size
        When given, an image file must be ``expected_size`` px square (a tile read from its
        slide is the manifest's size).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.

    Raises
    ------
    ImageError
        For an image file that is missing, unreadable or of another size.
    SlideError
        For a slide that is missing or unreadable.
    ManifestError
        For a record with neither an image nor a slide and its geometry.
    """
    from histolib.tileset.images import read_rgb

    if record.image_path is not None:
        return read_rgb(record.image_path, expected_size=expected_size)
    if record.slide_path is None or record.size is None or record.mpp is None:
        raise ManifestError(f"tile {record.tile_id} has neither an image nor a slide to read")
    return read_slide_tile(
        record.slide_path,
        x0=record.x0,
        y0=record.y0,
        size=record.size,
        mpp=record.mpp,
        downsample=record.downsample,
    )


def check_readable(records: Iterable[TileRecord], *, source: str | Path) -> None:
    """Make sure every tile can be read: its image file, or else its slide file, exists.

    Raises
    ------
    ImageError
        For a missing image file.
    ManifestError
        For a tile without an image whose slide is unknown (``source`` is the manifest).
    SlideError
        For a missing slide file.
    """
    seen: set[str] = set()
    for record in records:
        if record.image_path is not None:
            if not record.image_path.is_file():
                raise ImageError(
                    "tile image listed in the manifest is missing", path=record.image_path
                )
            continue
        if record.slide_path is None:
            raise ManifestError(
                f"tile {record.tile_id} has no image and no slide_path to read it from",
                path=source,
            )
        if record.slide_path not in seen:
            seen.add(record.slide_path)
            if not Path(record.slide_path).is_file():
                raise SlideError(
                    f"slide of tile {record.tile_id} is missing (tiles written with "
                    "--format none are read from their slides)",
                    path=record.slide_path,
                )
