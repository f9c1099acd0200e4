"""Virtual restaining of a whole slide with a trained generator, into a pyramidal TIFF.

A slide is read at the model's resolution in overlapping windows (``tile_size`` px, ``overlap``
px shared with each neighbour). Each window goes through the generator and is blended into a
stripe-high accumulator (:class:`~histolib_train.transfer.device.DeviceBlender`), so hard
window edges, where the generator's instance-norm statistics jump from one window to the next,
never show. Windows without tissue are not run and stay white; within the windows that run,
glass stays white too (``glass="white"``, :mod:`histolib_train.transfer.glass`: a fine tissue
mask computed from each window's pixels fades the generator's output into white over a few
microns past the tissue edge).

Memory stays flat in slide size: only one stripe of window rows is held, and finished rows
stream into :class:`histolib.slide.pyramid.StreamingTiffWriter` (pyramidal, JPEG tiles, mpp in
xres/yres).

The stages overlap, each in its own threads (docs/transfer.md):

1. reading: a pool of ``workers`` threads decodes the windows (and their tissue alpha)
   straight into host buffers (:class:`~histolib_train.transfer.device.HostBuffers`, pinned
   on CUDA), a bounded number of batches ahead;
2. the device (this thread): non-blocking upload, generator, glass composite and blending as
   torch ops on the model's device, a finished stripe of rows copied back into a host buffer
   without waiting, an event recorded;
3. rows: a thread waits for each stripe's event and streams it to the TIFF writer, whose own
   thread encodes the JPEG pyramid.

On the CPU the same code runs (no pinning; events complete at once). The result is written
under a temporary name and renamed, so a killed run never leaves a partial file at the output
path.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import atomic_path
from histolib.errors import ConfigError, OutputError
from histolib.slide.blend import window_starts
from histolib.slide.pyramid import (
    StreamingTiffWriter,
    check_finished_tiff,
    thumbnail_path_for,
    write_thumbnail,
)
from histolib_train.transfer.device import (
    DeviceBlender,
    HostBuffer,
    HostBuffers,
    cpu_threads,
    tensor_generator,
)
from histolib_train.transfer.generator import GeneratorFn, check_window_options
from histolib_train.transfer.glass import GlassMask, check_glass, lowres_tissue

QUEUE_DEPTH = 4
"""Batches of windows read ahead of the generator."""
ROW_BUFFERS = 3
"""Host buffers for finished stripes of rows on their way to the TIFF writer."""
TIMING_KEYS = (
    "read",
    "inference",
    "blend",
    "write",
    "wall",
    "wait_input",
    "wait_output",
    "read_cpu",
    "alpha_cpu",
    "device_cpu",
    "rows_cpu",
)
"""What :attr:`TransferResult.timings` holds (seconds): wall time of each stage (``read``
summed over the reader threads, ``write`` the TIFF writer thread's busy time); the device
thread's waits for input (``wait_input``) and for room for its output (``wait_output``); CPU
seconds of the reader threads (decoding ``read_cpu``, tissue alpha ``alpha_cpu``), the device
thread and the row thread (``*_cpu``)."""


@dataclass
class TransferResult:
    """What :func:`transfer_slide` wrote and how long each stage took."""

    path: Path
    thumbnail: Path
    width: int
    height: int
    mpp: float
    windows: int
    tissue_windows: int
    skipped: bool = False
    glass: str = "white"
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "path": str(self.path),
            "thumbnail": str(self.thumbnail),
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "windows": self.windows,
            "tissue_windows": self.tissue_windows,
            "skipped": self.skipped,
            "glass": self.glass,
            "timings": dict(self.timings),
        }


def tissue_lowres(slide: Any) -> tuple[np.ndarray, float, float]:
    """A low-resolution tissue mask of ``slide`` and its scale (level-0 px per mask px, x/y)."""
    low = lowres_tissue(slide)
    return low.mask, low.scale_x, low.scale_y


def tissue_window_grid(
    tissue: np.ndarray | None,
    *,
    scale_x: float,
    scale_y: float,
    xs: list[int],
    ys: list[int],
    tile_size: int,
    downsample: float,
) -> np.ndarray:
    """Boolean ``(len(ys), len(xs))``: which windows hold any tissue (``tissue=None``: all).

    ``tissue`` is a low-resolution mask whose pixel covers ``scale_x`` x ``scale_y`` level-0 px;
    a window at output px ``(x, y)`` covers level-0 ``[x * downsample, (x + tile_size) *
    downsample)`` and likewise in y.
    """
    if tissue is None:
        return np.ones((len(ys), len(xs)), bool)
    # Summed-area table: tissue pixel count over any rectangle in O(1).
    sat = np.zeros((tissue.shape[0] + 1, tissue.shape[1] + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(tissue, axis=0), axis=1)

    def span(start: int, scale: float, limit: int) -> tuple[int, int]:
        lo = math.floor(start * downsample / scale)
        hi = math.ceil((start + tile_size) * downsample / scale)
        return max(0, min(lo, limit)), max(0, min(hi, limit))

    grid = np.zeros((len(ys), len(xs)), bool)
    col_spans = [span(x, scale_x, tissue.shape[1]) for x in xs]
    for row, y in enumerate(ys):
        r0, r1 = span(y, scale_y, tissue.shape[0])
        for col, (c0, c1) in enumerate(col_spans):
            count = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
            grid[row, col] = count > 0
    return grid


@dataclass
class _Windows:
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


def _windows(slide: Any, *, mpp: float, tile_size: int, overlap: int) -> _Windows:
    downsample = mpp / slide.mpp
    width0, height0 = slide.dimensions
    width = max(1, round(width0 / downsample))
    height = max(1, round(height0 / downsample))
    return _Windows(
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
class _Batch:
    row: int
    cols: list[int]
    buffer: HostBuffer | None  # None marks the end of a window row
    alphas: bool = False  # the buffer's second tensor holds each window's tissue alpha


class _Readers:
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


def stripe_level(slide: Any, windows: _Windows) -> Any | None:
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


class _Stripe:
    """The slide under one window row, decoded once (windows overlap: read one by one, each
    slide pixel would be decoded up to four times), for the row's windows to be cut from.

    Holds ``tile_size`` rows of the padded output width (white past the output's edges).
    :meth:`load` moves the band shared with the previous window row to the top and reads
    only what is missing, in column chunks spread over the reader threads.
    """

    def __init__(self, windows: _Windows, choice: Any, readers: _Readers) -> None:
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
        spent.extend(pool.map(self._read, chunks))
        self.band[:] = False
        self.band[x0:x1] = True
        self.row = row

    def _read(self, job: tuple[int, int, int, int, int]) -> tuple[float, float]:
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


def _acquire(buffers: HostBuffers, stop: threading.Event) -> HostBuffer | None:
    """A free host buffer, or None once ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(queue.Empty):
            return buffers.acquire(timeout=0.2)
    return None


def _read_batches(
    open_reader: Callable[[], Any],
    *,
    windows: _Windows,
    grid: np.ndarray,
    batch_size: int,
    workers: int,
    stop: threading.Event,
    timings: dict[str, float],
    buffers: HostBuffers,
    glass: GlassMask | None = None,
    stripe_choice: Any | None = None,
) -> Iterator[_Batch]:
    """Read the tissue windows row by row, ``batch_size`` at a time, ``workers`` in parallel,
    straight into host buffers of ``buffers`` (with ``glass``: each window's tissue alpha too,
    computed in the reading thread). With ``stripe_choice`` (:func:`stripe_level`) each
    window row is decoded once as a :class:`_Stripe` and its windows cut from it."""
    readers = _Readers(open_reader)
    size = windows.tile_size
    stripe = None if stripe_choice is None else _Stripe(windows, stripe_choice, readers)

    def read(job: tuple[np.ndarray, np.ndarray | None, int, int]) -> None:
        window, alpha, x, y = job
        start, cpu = time.perf_counter(), time.thread_time()
        if stripe is not None:
            window[...] = stripe.pixels[:, x : x + size]
        else:
            _read_window(readers.get(), window, x=x, y=y, windows=windows)
        decoded = time.thread_time()
        if alpha is not None and glass is not None:
            alpha[...] = glass.alpha(window, x=x, y=y)
        with readers.lock:
            timings["read"] += time.perf_counter() - start
            timings["read_cpu"] += decoded - cpu
            timings["alpha_cpu"] += time.thread_time() - decoded

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
                    buffer = _acquire(buffers, stop)
                    if buffer is None:
                        return
                    tiles = buffer.tensors[0].numpy()
                    alphas = buffer.tensors[1].numpy() if glass is not None else None
                    jobs = [
                        (tiles[i], None if alphas is None else alphas[i], windows.xs[c], y)
                        for i, c in enumerate(chunk)
                    ]
                    for _ in pool.map(read, jobs):
                        pass
                    yield _Batch(row, chunk, buffer, alphas=glass is not None)
                yield _Batch(row, [], None)
    finally:
        readers.close()


def _read_window(slide: Any, window: np.ndarray, *, x: int, y: int, windows: _Windows) -> None:
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


def prefetch(iterator: Iterator[Any], *, depth: int, stop: threading.Event) -> Iterator[Any]:
    """Run ``iterator`` in a thread, ``depth`` items ahead; its exceptions re-raise here."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:
            items.put(("__error__", exc))
            return
        items.put(done)

    thread = threading.Thread(target=work, name="histolib-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                raise item[1]
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                items.get_nowait()
        thread.join(timeout=30)


def _check_slide_options(out: Path, *, mpp: float, workers: int | None) -> None:
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError("the virtual slide must end in .tif or .tiff", path=out)
    if out.is_dir():
        raise OutputError("is a folder; give the path of the .tif to write", path=out)
    from histolib.slide.reader import check_mpp

    check_mpp(mpp, what="--mpp")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")


def _keep_finished(out: Path, thumbnail: Path, windows: _Windows) -> TransferResult:
    """The result of a run whose output already exists (checked to be this run's)."""
    check_finished_tiff(out, width=windows.width, height=windows.height)
    if not thumbnail.exists():
        write_thumbnail(out, thumbnail)
    return TransferResult(
        out,
        thumbnail,
        windows.width,
        windows.height,
        windows.mpp,
        windows.count,
        0,
        skipped=True,
    )


class _RowWriter:
    """The thread that takes finished rows off the device and streams them into the TIFF.

    The device thread copies each stripe of rows into a host buffer (asynchronously on CUDA)
    and records an event; this thread waits for the event, hands the rows to the
    :class:`~histolib.slide.pyramid.StreamingTiffWriter` (whose own thread encodes the JPEG
    pyramid) and gives the buffer back.
    """

    def __init__(self, writer: StreamingTiffWriter, buffers: HostBuffers) -> None:
        self.writer, self.buffers = writer, buffers
        self.items: queue.Queue[tuple[HostBuffer, int] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.cpu = 0.0
        self._thread = threading.Thread(target=self._run, name="histolib-rows", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.thread_time()
        while (item := self.items.get()) is not None:
            buffer, n_rows = item
            try:
                if self.error is None:
                    buffer.sync.wait()
                    self.writer.write_rows(buffer.tensors[0][:n_rows].numpy())
            except BaseException as exc:  # reported to the device thread
                self.error = exc
            finally:
                self.buffers.release(buffer, record=False)
        self.cpu = time.thread_time() - start

    def put(self, rows: Any, timings: dict[str, float]) -> None:
        """Copy ``rows`` (a device tensor) into a free host buffer and queue it for writing."""
        if self.error is not None:
            raise self.error
        start = time.perf_counter()
        buffer = self.buffers.acquire()
        timings["wait_output"] += time.perf_counter() - start
        n_rows = rows.shape[0]
        buffer.tensors[0][:n_rows].copy_(rows, non_blocking=True)
        buffer.sync.record()
        self.items.put((buffer, n_rows))

    def close(self) -> None:
        """Write what is queued and end the thread; re-raise its error."""
        self.items.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def _restain(
    batches: Iterator[_Batch],
    run: Callable[[Any], Any],
    *,
    device: Any,
    windows: _Windows,
    grid: np.ndarray,
    buffers: HostBuffers,
    rows_out: _RowWriter,
    timings: dict[str, float],
    advance: Callable[[int], None],
    glass: str = "white",
    model_threads: int = 1,
) -> None:
    """Upload each batch, run the generator and blend on ``device``; queue each finished
    stripe of rows to ``rows_out``.

    ``glass="keep"``: background windows beside tissue ones are blended in as white (not run),
    which fades the output into white at window scale; ``glass="white"`` needs no such fringe
    (each window carries its own tissue alpha). On the CPU the generator runs with
    ``model_threads`` torch threads, the rest with one (:func:`cpu_threads`).
    """
    from scipy import ndimage

    fringe = ndimage.binary_dilation(grid, structure=np.ones((3, 3), bool)) & ~grid
    if glass != "keep":
        fringe[:] = False
    blender = DeviceBlender(
        width=windows.width, tile_size=windows.tile_size, overlap=windows.overlap, device=device
    )
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        t1 = time.perf_counter()
        timings["wait_input"] += t1 - t0
        if batch is None:
            return
        if batch.buffer is not None:
            n = len(batch.cols)
            host = batch.buffer.tensors
            tiles = host[0][:n].to(device, non_blocking=True)
            alphas = host[1][:n].to(device, non_blocking=True) if batch.alphas else None
            with cpu_threads(device, model_threads):
                translated = run(tiles)
            if tuple(translated.shape) != tuple(tiles.shape):
                raise ValueError(f"generator returned {tuple(translated.shape)} for {n} windows")
            t2 = time.perf_counter()
            blender.add([windows.xs[col] for col in batch.cols], translated, alphas)
            buffers.release(batch.buffer)  # reused once the work reading it is done
            timings["inference"] += t2 - t1
            timings["blend"] += time.perf_counter() - t2
            advance(n)
            continue
        # End of a window row: rows [y0, y0 + stride) are final (last row: all).
        y0 = windows.ys[batch.row]
        last = batch.row == len(windows.ys) - 1
        n_rows = min(windows.tile_size if last else windows.stride, windows.height - y0)
        for col in np.flatnonzero(fringe[batch.row]):
            blender.add_white(windows.xs[col])
        rows = blender.pop(n_rows)
        timings["blend"] += time.perf_counter() - t1
        rows_out.put(rows, timings)


def _run_pipeline(
    open_reader: Callable[[], Any],
    generator: Any,
    *,
    windows: _Windows,
    grid: np.ndarray,
    writer: StreamingTiffWriter,
    batch_size: int,
    workers: int,
    glass: str,
    glass_mask: GlassMask | None,
    timings: dict[str, float],
    advance: Callable[[int], None],
    stripe_choice: Any | None = None,
) -> None:
    """Wire the stages: reader threads -> host buffers -> device thread (this one) -> row
    thread -> TIFF writer thread; CPU seconds of each stage into ``timings``."""
    import torch

    run, device = tensor_generator(generator)
    size = windows.tile_size
    buffers = HostBuffers(
        device,
        count=QUEUE_DEPTH + 2,
        specs=[
            ((batch_size, size, size, 3), torch.uint8),
            ((batch_size, size, size), torch.float32),
        ],
    )
    row_buffers = HostBuffers(
        device, count=ROW_BUFFERS, specs=[((size, windows.width, 3), torch.uint8)]
    )
    stop = threading.Event()
    reading = _read_batches(
        open_reader,
        windows=windows,
        grid=grid,
        batch_size=batch_size,
        workers=workers,
        stop=stop,
        timings=timings,
        buffers=buffers,
        glass=glass_mask,
        stripe_choice=stripe_choice,
    )
    rows_out = _RowWriter(writer, row_buffers)
    model_threads = torch.get_num_threads()
    cpu = time.thread_time()
    try:
        with (
            contextlib.closing(prefetch(reading, depth=QUEUE_DEPTH, stop=stop)) as batches,
            torch.inference_mode(),
            cpu_threads(device, 1),
        ):
            _restain(
                batches,
                run,
                device=device,
                windows=windows,
                grid=grid,
                buffers=buffers,
                rows_out=rows_out,
                timings=timings,
                advance=advance,
                glass=glass,
                model_threads=model_threads,
            )
    finally:
        timings["device_cpu"] += time.thread_time() - cpu
        try:
            rows_out.close()
        finally:
            timings["rows_cpu"] += rows_out.cpu


def transfer_slide(
    slide_path: str | Path,
    generator: GeneratorFn,
    *,
    out: str | Path,
    mpp: float = 0.5,
    slide_mpp: float | None = None,
    tile_size: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    workers: int | None = None,
    tissue: bool = True,
    glass: str = "white",
    overwrite: bool = False,
    progress: bool = False,
) -> TransferResult:
    """Restain a whole slide into a pyramidal TIFF at ``mpp``, blending overlapping windows.

    Parameters
    ----------
    slide_path
        Any slide :func:`histolib.slide.reader.open_slide` reads.
    generator
        ``(N, H, W, 3)`` uint8 -> same (e.g. :class:`~histolib_train.transfer.generator.
        TorchGenerator`).
    out
        Output ``.tif``; a PNG thumbnail is written beside it (``<stem>.thumbnail.png``).
    mpp
        Resolution of the model (and of the output), microns per pixel.
    slide_mpp
        The slide's level-0 mpp where its metadata lacks it (or to override it).
    tile_size, overlap
        Window side and the band shared with each neighbour (output px).
    batch_size
        Windows per generator call.
    workers
        Reader threads (default: :func:`histolib.core.parallel.default_workers`).
    tissue
        Run only windows touching tissue (``histolib.slide.tissue``); the rest stays white.
    glass
        ``white`` (default): within the windows that run, glass is white too, the output
        fading from the generator's to white over a few microns past the tissue edge
        (:mod:`histolib_train.transfer.glass`); ``keep``: the generator's output everywhere a
        window ran (faded into white at window scale beside windows that did not run).
    overwrite
        Redo an existing output; otherwise an existing ``out`` is kept (a finished run).
    progress
        Show a Rich progress bar.

    Returns
    -------
    TransferResult

    Raises
    ------
    SlideError
        When the slide cannot be read.
    OutputError
        When the output cannot be written.
    """
    from histolib.core.names import check_not_input
    from histolib.core.parallel import resolve_workers
    from histolib.core.progress import make_progress
    from histolib.slide.mpp import check_upsampling
    from histolib.slide.reader import open_slide

    out = Path(out)
    _check_slide_options(out, mpp=mpp, workers=workers)
    check_glass(glass)
    check_window_options(tile_size=tile_size, overlap=overlap, batch_size=batch_size)
    thumb_path = thumbnail_path_for(out)
    check_not_input([out, thumb_path], [slide_path], hint="give another --out")

    def open_reader() -> Any:
        return open_slide(slide_path, mpp=slide_mpp)

    with open_reader() as slide:
        check_upsampling(mpp / slide.mpp, target_mpp=mpp, slide_mpp=slide.mpp, path=slide_path)
        windows = _windows(slide, mpp=mpp, tile_size=tile_size, overlap=overlap)
        if out.exists() and not overwrite:
            return _keep_finished(out, thumb_path, windows)
        low = lowres_tissue(slide) if tissue or glass == "white" else None
        stripes = stripe_level(slide, windows)
    glass_mask = (
        GlassMask(low, mpp=mpp, downsample=windows.downsample)
        if low is not None and glass == "white"
        else None
    )
    grid = tissue_window_grid(
        low.mask if low is not None and tissue else None,
        scale_x=low.scale_x if low is not None else 1.0,
        scale_y=low.scale_y if low is not None else 1.0,
        xs=windows.xs,
        ys=windows.ys,
        tile_size=tile_size,
        downsample=windows.downsample,
    )
    n_tissue = int(grid.sum())
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    started = time.perf_counter()
    with atomic_path(out, suffix=".tif") as tmp, make_progress(disable=not progress) as bar:
        task = bar.add_task(f"transfer {Path(slide_path).name}", total=n_tissue)
        with StreamingTiffWriter(
            tmp, width=windows.width, height=windows.height, mpp=mpp
        ) as writer:
            _run_pipeline(
                open_reader,
                generator,
                windows=windows,
                grid=grid,
                writer=writer,
                batch_size=batch_size,
                workers=resolve_workers(workers),
                glass=glass,
                glass_mask=glass_mask,
                stripe_choice=stripes,
                timings=timings,
                advance=lambda n: bar.advance(task, n),
            )
        timings["write"] = writer.busy_seconds
        write_thumbnail(tmp, thumb_path)
    timings["wall"] = time.perf_counter() - started
    return TransferResult(
        out,
        thumb_path,
        windows.width,
        windows.height,
        mpp,
        windows.count,
        n_tissue,
        timings=timings,
        glass=glass,
    )
