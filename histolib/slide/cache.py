"""The one cache of open slides: a slide is opened on first use and kept open for the next read.

Handles belong to a process and a thread: a process forked from one that had slides open opens
its own (a handle is never shared across processes), and each thread of a process (a Dask worker
runs tiling chunks in several threads) holds its own, so closing a slide to make room never
closes one another thread is reading. At most :data:`MAX_OPEN_SLIDES` stay open per thread (the
least recently used is closed first); a slide file replaced on disk is reopened. The handles
close when the process exits (multiprocessing's exit finalisers, which also run in DataLoader
workers and pool processes) or on :func:`close_slides` (the calling thread's).

The slides a process holds share one tile cache of :func:`cache_bytes` (``HISTOLIB_SLIDE_CACHE_MB``,
default :data:`DEFAULT_CACHE_MB` MiB a process) instead of OpenSlide's 32 MiB per slide: the
memory of a worker stays bounded however many slides it holds, and a tile that straddles TIFF
tiles (one resampled from a 0.499 um/px scan, say) finds the neighbours an earlier read decoded
while they are still in the cache. ``HISTOLIB_SLIDE_CACHE_MB=0`` caches nothing.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import Counter, OrderedDict
from typing import Any

from histolib.errors import ConfigError, SlideError

#: Slides kept open at once in one thread of a process.
MAX_OPEN_SLIDES = 16

#: MiB of decoded slide tiles a process keeps (shared by its slides), unless
#: ``HISTOLIB_SLIDE_CACHE_MB`` says otherwise.
DEFAULT_CACHE_MB = 256

#: The environment variable that sets the cache (MiB a process; read when a process opens its
#: first slide, so DataLoader workers and pool processes inherit it).
CACHE_ENV = "HISTOLIB_SLIDE_CACHE_MB"

_Key = tuple[str, "float | None"]


@dataclasses.dataclass
class CachedSlide:
    """One open slide, the file identity it was opened for, and what its readers memoise
    (``choices``: level choices by downsample)."""

    slide: Any
    stamp: tuple[int, int, int]
    choices: dict[float, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Handles:
    """The slides this process keeps open, by thread (``pid`` tells a forked child from its
    parent)."""

    pid: int | None = None
    by_thread: dict[int, OrderedDict[_Key, CachedSlide]] = dataclasses.field(default_factory=dict)
    opened: dict[int, Counter[str]] = dataclasses.field(default_factory=dict)
    cache: Any = None  # the openslide.OpenSlideCache this process's slides share
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_HANDLES = _Handles()


def _process_handles() -> _Handles:
    """This process's handles; a forked child starts with none (its parent's stay its parent's)."""
    pid = os.getpid()
    if _HANDLES.pid != pid:
        from multiprocessing import util

        _HANDLES.by_thread = {}
        _HANDLES.opened = {}
        _HANDLES.cache = None
        _HANDLES.lock = threading.Lock()
        _HANDLES.pid = pid
        util.Finalize(None, _close_all, exitpriority=10)
    return _HANDLES


def _file_stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SlideError("no such slide file", path=path) from None
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


def cached_slide(slide_path: str, *, mpp: float | None = None) -> CachedSlide:
    """The open slide of ``slide_path`` in this process and thread (opened now when it is not,
    or when the file changed since it was opened).

    Parameters
    ----------
    slide_path
        The slide file.
    mpp
        Level-0 um/px overriding the metadata's (None: the metadata's), as
        :func:`histolib.slide.reader.open_slide` takes it.

    Returns
    -------
    CachedSlide
        Its ``slide`` is a :class:`~histolib.slide.reader.Slide`; do not close it.

    Raises
    ------
    SlideError
        When the file is missing or cannot be opened.
    """
    from histolib.slide.reader import open_slide

    handles = _process_handles()
    stamp = _file_stamp(slide_path)
    key: _Key = (slide_path, mpp)
    thread = threading.get_ident()
    with handles.lock:
        held = handles.by_thread.setdefault(thread, OrderedDict())
        opened = handles.opened.setdefault(thread, Counter())
    handle = held.get(key)
    if handle is not None and handle.stamp != stamp:  # the file was replaced: reopen it
        held.pop(key).slide.close()
        handle = None
    if handle is None:
        while len(held) >= MAX_OPEN_SLIDES:
            held.popitem(last=False)[1].slide.close()
        handle = CachedSlide(open_slide(slide_path, mpp=mpp), stamp)
        with handles.lock:
            shared = _shared_cache(handles)
        handle.slide.use_cache(shared)
        held[key] = handle
        opened[slide_path] += 1
    held.move_to_end(key)
    return handle


def open_slide_paths() -> dict[str, int]:
    """The slides open in this process and thread, each with how many times it was opened
    since :func:`close_slides` (more than once: it was closed to make room, or replaced)."""
    handles = _process_handles()
    thread = threading.get_ident()
    held = handles.by_thread.get(thread, OrderedDict())
    opened = handles.opened.get(thread, Counter())
    return {path: opened[path] for path, _ in held}


def close_slides() -> None:
    """Close every slide this thread holds open (the next read opens it again)."""
    if _HANDLES.pid != os.getpid():
        return  # a forked child never closes its parent's handles
    thread = threading.get_ident()
    with _HANDLES.lock:
        held = _HANDLES.by_thread.pop(thread, None)
        _HANDLES.opened.pop(thread, None)
        if not _HANDLES.by_thread:
            _HANDLES.cache = None  # freed with the last slide that used it
    while held:
        held.popitem()[1].slide.close()


def _close_all() -> None:
    """Close every slide of this process (at exit)."""
    if _HANDLES.pid != os.getpid():
        return
    with _HANDLES.lock:
        threads, _HANDLES.by_thread, _HANDLES.opened = _HANDLES.by_thread, {}, {}
        _HANDLES.cache = None
    for held in threads.values():
        while held:
            held.popitem()[1].slide.close()
