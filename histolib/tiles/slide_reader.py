"""A tile's pixels: its image file, or read straight from its slide when none was written.

A manifest written with ``histolib tile --format none`` records where every tile is (its slide,
level-0 origin, size, mpp and downsample) but holds no image. :func:`read_tile` gives the pixels
of any :class:`~histolib.tiles.sources.TileRecord`: its image through
:func:`histolib.tiles.images.read_rgb` when it has one, else the region of its slide read the
way ``histolib tile`` read it (the same pyramid level, the same resampling), so the pixels equal
those of a PNG written by ``--format png`` bit for bit.

Slide handles are per process: a slide is opened on its first read in a process (lazily) and
kept open for the next tiles, so each DataLoader worker or pool process holds one handle per
slide it reads, and a process forked from one that had slides open opens its own (a handle is
never shared across processes). At most :data:`MAX_OPEN_SLIDES` stay open in a process (the
least recently used is closed first); a slide file replaced on disk is reopened. The handles
close when the process exits (multiprocessing's exit finalisers, which also run in DataLoader
workers and pool processes) or on :func:`close_slides`.

The slides a process holds share one tile cache of :func:`cache_bytes` (``HISTOLIB_SLIDE_CACHE_MB``,
default :data:`DEFAULT_CACHE_MB` MiB a process) instead of OpenSlide's 32 MiB per slide: the
memory of a DataLoader worker stays bounded however many slides it holds, and a tile that
straddles TIFF tiles (one resampled from a 0.499 um/px scan, say) finds the neighbours an
earlier draw decoded while they are still in the cache. ``HISTOLIB_SLIDE_CACHE_MB=0`` caches
nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ImageError, ManifestError, SlideError
from histolib.tiles.sources import TileRecord

#: Slides kept open at once in one process.
MAX_OPEN_SLIDES = 16

#: MiB of decoded slide tiles a process keeps (shared by its slides), unless
#: ``HISTOLIB_SLIDE_CACHE_MB`` says otherwise.
DEFAULT_CACHE_MB = 256

#: The environment variable that sets the cache (MiB a process; read when a process opens its
#: first slide, so DataLoader workers and pool processes inherit it).
CACHE_ENV = "HISTOLIB_SLIDE_CACHE_MB"


@dataclasses.dataclass
class _Handle:
    """One open slide, the file identity it was opened for, its level choices by downsample."""

    slide: Any
    stamp: tuple[int, int, int]
    choices: dict[float, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Handles:
    """The slides this process keeps open (``pid`` tells a forked child from its parent)."""

    pid: int | None = None
    open: OrderedDict[str, _Handle] = dataclasses.field(default_factory=OrderedDict)
    opened: Counter[str] = dataclasses.field(default_factory=Counter)
    cache: Any = None  # the openslide.OpenSlideCache this process's slides share


_HANDLES = _Handles()


def _process_handles() -> _Handles:
    """This process's handles; a forked child starts with none (its parent's stay its parent's)."""
    pid = os.getpid()
    if _HANDLES.pid != pid:
        from multiprocessing import util

        _HANDLES.open = OrderedDict()
        _HANDLES.opened = Counter()
        _HANDLES.cache = None
        _HANDLES.pid = pid
        util.Finalize(None, close_slides, exitpriority=10)
    return _HANDLES


def _file_stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SlideError("no such slide file (the manifest's slide_path)", path=path) from None
    except OSError as exc:
        raise SlideError(f"cannot read slide ({exc.strerror})", path=path) from None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def cache_bytes() -> int:
    """The bytes of decoded tiles a process's slides share: ``HISTOLIB_SLIDE_CACHE_MB`` MiB,
    else :data:`DEFAULT_CACHE_MB`.

    Raises
    ------
    ConfigError
        When the variable is not a whole number of MiB >= 0.
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    if not value:
        return DEFAULT_CACHE_MB << 20
    try:
        mib = int(value)
    except ValueError:
        mib = -1
    if mib < 0:
        raise ConfigError(f"{CACHE_ENV} must be a whole number of MiB >= 0, got {value!r}")
    return mib << 20


def _shared_cache(handles: _Handles) -> Any:
    """This process's tile cache, made on first use."""
    if handles.cache is None:
        import openslide

        handles.cache = openslide.OpenSlideCache(cache_bytes())
    return handles.cache


def _handle(slide_path: str, slide_mpp: float) -> _Handle:
    """The open slide of ``slide_path`` in this process (opened now when it is not)."""
    from histolib.slide.reader import open_slide

    handles = _process_handles()
    stamp = _file_stamp(slide_path)
    handle = handles.open.get(slide_path)
    if handle is not None and handle.stamp != stamp:  # the file was replaced: reopen it
        handles.open.pop(slide_path).slide.close()
        handle = None
    if handle is None:
        while len(handles.open) >= MAX_OPEN_SLIDES:
            handles.open.popitem(last=False)[1].slide.close()
        handle = _Handle(open_slide(slide_path, mpp=slide_mpp), stamp)
        handle.slide.use_cache(_shared_cache(handles))
        handles.open[slide_path] = handle
        handles.opened[slide_path] += 1
    handles.open.move_to_end(slide_path)
    return handle


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
    slide_path = str(slide_path)
    handle = _handle(slide_path, float(mpp) / float(downsample))
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
        A tile of a manifest or folder (:mod:`histolib.tiles.sources`).
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
    from histolib.tiles.images import read_rgb

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


def open_slide_paths() -> dict[str, int]:
    """The slides open in this process, each with how many times this process opened it
    since :func:`close_slides` (more than once: it was closed to make room, or replaced)."""
    handles = _process_handles()
    return {path: handles.opened[path] for path in handles.open}


def close_slides() -> None:
    """Close every slide this process holds open (the next read opens it again)."""
    if _HANDLES.pid != os.getpid():
        return  # a forked child never closes its parent's handles
    while _HANDLES.open:
        _HANDLES.open.popitem()[1].slide.close()
    _HANDLES.opened.clear()
    _HANDLES.cache = None  # freed with the last slide that used it
