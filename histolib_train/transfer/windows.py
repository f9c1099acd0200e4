"""Reading a slide's windows for restaining: the window grid, stripe reads (each row of
windows decoded once), reader threads, and batches decoded straight into host buffers."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from histolib.slide.blend import window_starts
from histolib_train.transfer.device import HostBuffer, HostBuffers
from histolib_train.transfer.glass import GlassMask


@dataclass
class Windows:
    """Where the windows of one slide lie, in output px at the run's mpp."""

    mpp: float
    downsample: float  # level-0 px per output px
    width: int
    height: int
    tile_size: int
    overlap: int
    xs: list[int]
    ys: list[int]

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)


def plan_windows(slide: Any, *, mpp: float, tile_size: int, overlap: int) -> Windows:
    downsample = mpp / slide.mpp
    width0, height0 = slide.dimensions
    width = max(1, round(width0 / downsample))
    height = max(1, round(height0 / downsample))
    return Windows(
        mpp=mpp,
        downsample=downsample,
        width=width,
        height=height,
        tile_size=tile_size,
        overlap=overlap,
        xs=window_starts(width, tile_size=tile_size, overlap=overlap),
        ys=window_starts(height, tile_size=tile_size, overlap=overlap),
    )


@dataclass
class Batch:
    row: int
    cols: list[int]
    buffer: HostBuffer | None  # None marks the end of a window row
    # With glass masking: per window, glass.ALL_TISSUE / ALL_GLASS / MIXED, and the buffer's
    # second tensor holds each window's tissue alpha.
    kinds: list[int] | None = None


class Readers:
    """One slide reader per reading thread, all closed at the end, sharing one tile cache
    (:func:`histolib.slide.cache.cache_bytes`): a slide tile under two stripes, or two
    windows, is decoded once whichever threads read them."""

    def __init__(self, open_reader: Callable[[], Any]) -> None:
        self._open = open_reader
        self._local = threading.local()
        self._all: list[Any] = []
        self._cache: Any = None
        self.lock = threading.Lock()

    def get(self) -> Any:
        if not hasattr(self._local, "slide"):
            from histolib.slide.cache import cache_bytes

            slide = self._open()
            with self.lock:
                self._all.append(slide)
                if self._cache is None and cache_bytes():
                    import openslide

                    self._cache = openslide.OpenSlideCache(cache_bytes())
            if self._cache is not None:
                slide.use_cache(self._cache)
            self._local.slide = slide
        return self._local.slide

    def close(self) -> None:
        for slide in self._all:
            with contextlib.suppress(Exception):
                slide.close()


STRIPE_CHUNK = 1024
"""Columns of a stripe one reader thread decodes at a time (a multiple of usual slide tiles)."""


def stripe_level(slide: Any, windows: Windows) -> Any | None:
    """The level to read whole window rows from, as one region each (a :class:`LevelChoice
    <histolib.slide.reader.LevelChoice>`), or None to read window by window.

    A stripe is read only where cutting windows out of it gives each the pixels its own read
    would: an unresampled level whose downsample is the run's and a whole number, so output
    px map one to one onto level px at whole level-0 coordinates.
    """
    from histolib.errors import HistolibError

    try:
        choice = slide.choose_level(windows.mpp)
    except HistolibError:
        return None
    ds = float(choice.level_downsample)
    if choice.resample or ds != windows.downsample or not ds.is_integer():
        return None
    return choice


class Stripe:
    """The slide under one window row, decoded once (windows overlap: read one by one, each
    slide pixel would be decoded up to four times), for the row's windows to be cut from.

    Holds ``tile_size`` rows of the padded output width (white past the output's edges).
    :meth:`load` moves the band shared with the previous window row to the top and reads
    only what is missing, in column chunks spread over the reader threads.
    """

    def __init__(self, windows: Windows, choice: Any, readers: Readers) -> None:
        self.windows, self.choice, self.readers = windows, choice, readers
        full_w = windows.xs[-1] + windows.tile_size
        self.pixels = np.full((windows.tile_size, full_w, 3), 255, np.uint8)
        self.band = np.zeros(full_w, bool)  # columns whose band rows hold the row above's
        self.row = -2

    def load(
        self, row: int, cols: list[int], pool: ThreadPoolExecutor, spent: list[tuple[float, float]]
    ) -> None:
        """Hold window row ``row`` over the span of its windows ``cols``; ``spent`` gets each
        read's wall and CPU seconds."""
        w = self.windows
        size, overlap = w.tile_size, w.overlap
        x0, x1 = w.xs[cols[0]], w.xs[cols[-1]] + size
        y = w.ys[row]
        valid = np.zeros_like(self.band)
        if row == self.row + 1 and overlap:
            self.pixels[:overlap] = self.pixels[w.stride :]
            valid[x0:x1] = self.band[x0:x1]
        jobs = [(x0, x1, overlap, size)]  # (from column, to column, from row, to row)
        missing = np.flatnonzero(np.diff(np.r_[False, ~valid[x0:x1], False]))
        jobs += [(x0 + int(a), x0 + int(b), 0, overlap) for a, b in missing.reshape(-1, 2)]
        chunks = [
            (max(a, left), min(b, left + STRIPE_CHUNK), top, bottom, y)
            for a, b, top, bottom in jobs
            if bottom > top
            for left in range(a - a % STRIPE_CHUNK, b, STRIPE_CHUNK)
        ]
        spent.extend(pool.map(self._read_chunk, chunks))
        self.band[:] = False
        self.band[x0:x1] = True
        self.row = row

    def _read_chunk(self, job: tuple[int, int, int, int, int]) -> tuple[float, float]:
        """Decode output columns ``[a, b)``, stripe rows ``[top, bottom)`` (white past the
        output's edges); its wall and CPU seconds."""
        a, b, top, bottom, y = job
        start, cpu = time.perf_counter(), time.thread_time()
        w, ds = self.windows, self.choice.level_downsample
        out = self.pixels[top:bottom, a:b]
        width, height = min(b, w.width) - a, min(bottom, w.height - y) - top
        if width > 0 and height > 0:
            region = self.readers.get().read_pil(a * ds, (y + top) * ds, width, height, self.choice)
            out[:height, :width] = np.asarray(region)
        out[max(0, height) :] = 255
        out[:, max(0, width) :] = 255
        return time.perf_counter() - start, time.thread_time() - cpu


def acquire_buffer(buffers: HostBuffers, stop: threading.Event) -> HostBuffer | None:
    """A free host buffer, or None once ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(queue.Empty):
            return buffers.acquire(timeout=0.2)
    return None


def read_batches(
    open_reader: Callable[[], Any],
    *,
    windows: Windows,
    grid: np.ndarray,
    batch_size: int,
    workers: int,
    stop: threading.Event,
    timings: dict[str, float],
    buffers: HostBuffers,
    glass: GlassMask | None = None,
    stripe_choice: Any | None = None,
) -> Iterator[Batch]:
    """Read the tissue windows row by row, ``batch_size`` at a time, ``workers`` in parallel,
    straight into host buffers of ``buffers`` (with ``glass``: each window's tissue alpha too,
    computed in the reading thread). With ``stripe_choice`` (:func:`stripe_level`) each
    window row is decoded once as a :class:`Stripe` and its windows cut from it."""
    readers = Readers(open_reader)
    size = windows.tile_size
    stripe = None if stripe_choice is None else Stripe(windows, stripe_choice, readers)

    def read(job: tuple[np.ndarray, np.ndarray | None, int, int]) -> int | None:
        """Decode one window (and fill its alpha); the alpha's kind."""
        window, alpha, x, y = job
        start, cpu = time.perf_counter(), time.thread_time()
        if stripe is not None:
            window[...] = stripe.pixels[:, x : x + size]
        else:
            read_window(readers.get(), window, x=x, y=y, windows=windows)
        decoded = time.thread_time()
        kind = None
        if alpha is not None and glass is not None:
            kind = glass.fill_alpha(window, x=x, y=y, out=alpha)
        with readers.lock:
            timings["read"] += time.perf_counter() - start
            timings["read_cpu"] += decoded - cpu
            timings["alpha_cpu"] += time.thread_time() - decoded
        return kind

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for row, y in enumerate(windows.ys):
                cols = [int(c) for c in np.flatnonzero(grid[row])]
                if stripe is not None and cols:
                    spent: list[tuple[float, float]] = []
                    stripe.load(row, cols, pool, spent)
                    timings["read"] += sum(wall for wall, _ in spent)
                    timings["read_cpu"] += sum(cpu for _, cpu in spent)
                for start in range(0, len(cols), batch_size):
                    chunk = cols[start : start + batch_size]
                    buffer = acquire_buffer(buffers, stop)
                    if buffer is None:
                        return
                    tiles = buffer.tensors[0].numpy()
                    alphas = buffer.tensors[1].numpy() if glass is not None else None
                    jobs = [
                        (tiles[i], None if alphas is None else alphas[i], windows.xs[c], y)
                        for i, c in enumerate(chunk)
                    ]
                    kinds = list(pool.map(read, jobs))
                    yield Batch(row, chunk, buffer, kinds=kinds if glass is not None else None)
                yield Batch(row, [], None)
    finally:
        readers.close()


def read_window(slide: Any, window: np.ndarray, *, x: int, y: int, windows: Windows) -> None:
    """Decode the window at output ``(x, y)`` into ``window`` (white past the output's edges)."""
    size, down = windows.tile_size, windows.downsample
    width, height = min(size, windows.width - x), min(size, windows.height - y)
    region = slide.read_region(
        round(x * down), round(y * down), size=(width, height), mpp=windows.mpp
    )
    window[:height, :width] = np.asarray(region)[:height, :width, :3]
    if height < size or width < size:
        window[height:] = 255
        window[:, width:] = 255
