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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import atomic_path
from histolib.errors import ConfigError, OutputError
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
from histolib_train.transfer.windows import (
    Batch,
    Windows,
    plan_windows,
    read_batches,
    stripe_level,
)

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


def _keep_finished(out: Path, thumbnail: Path, windows: Windows) -> TransferResult:
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
    batches: Iterator[Batch],
    run: Callable[[Any], Any],
    *,
    device: Any,
    windows: Windows,
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
            alphas = host[1][:n].to(device, non_blocking=True) if batch.kinds is not None else None
            with cpu_threads(device, model_threads):
                translated = run(tiles)
            if tuple(translated.shape) != tuple(tiles.shape):
                raise ValueError(f"generator returned {tuple(translated.shape)} for {n} windows")
            t2 = time.perf_counter()
            blender.add([windows.xs[col] for col in batch.cols], translated, alphas, batch.kinds)
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
    windows: Windows,
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
    reading = read_batches(
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
    from histolib.core.overwrite import check_output
    from histolib.core.parallel import resolve_workers
    from histolib.core.progress import make_progress
    from histolib.slide.mpp import check_upsampling
    from histolib.slide.reader import open_slide

    out = Path(out)
    _check_slide_options(out, mpp=mpp, workers=workers)
    check_glass(glass)
    check_window_options(tile_size=tile_size, overlap=overlap, batch_size=batch_size)
    thumb_path = thumbnail_path_for(out)
    check_output(out, inputs=[slide_path], folder=False, side=[thumb_path])

    def open_reader() -> Any:
        return open_slide(slide_path, mpp=slide_mpp)

    with open_reader() as slide:
        check_upsampling(mpp / slide.mpp, target_mpp=mpp, slide_mpp=slide.mpp, path=slide_path)
        windows = plan_windows(slide, mpp=mpp, tile_size=tile_size, overlap=overlap)
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
