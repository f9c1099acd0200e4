"""Virtual restaining of a whole slide with a trained generator, into a pyramidal TIFF.

A slide is read at the model's resolution in overlapping windows (``tile_size`` px, ``overlap``
px shared with each neighbour). Each window goes through the generator and is blended into a
stripe-high buffer (:class:`histolib.slide.blend.StripeBlender`), so hard window edges, where
the generator's instance-norm statistics jump from one window to the next, never show. Windows
without tissue are not run and stay white; within the windows that run, glass stays white too
(``glass="white"``, :mod:`histolib_train.transfer.glass`: a fine tissue mask computed from each
window's pixels fades the generator's output into white over a few microns past the tissue
edge).

Memory stays flat in slide size: only one stripe of window rows is held, and finished rows
stream into :class:`histolib.slide.pyramid.StreamingTiffWriter` (pyramidal, JPEG tiles, mpp in
xres/yres: docs/formats.md).

Reading (a thread with a pool of ``workers`` readers and a bounded queue), inference (this
thread) and JPEG/pyramid writing (the writer thread) overlap. The result is written under a
temporary name and renamed, so a killed run never leaves a partial file at the output path.
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
from histolib.slide.blend import StripeBlender, window_starts
from histolib.slide.pyramid import (
    StreamingTiffWriter,
    check_finished_tiff,
    thumbnail_path_for,
    write_thumbnail,
)
from histolib_train.transfer.generator import GeneratorFn, check_window_options
from histolib_train.transfer.glass import GlassMask, check_glass, lowres_tissue

QUEUE_DEPTH = 4
"""Batches of windows read ahead of the generator."""


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
    tiles: np.ndarray | None  # None marks the end of a window row
    alphas: np.ndarray | None = None  # tissue alpha of each window (glass="white")


class _Readers:
    """One slide reader per reading thread, all closed at the end."""

    def __init__(self, open_reader: Callable[[], Any]) -> None:
        self._open = open_reader
        self._local = threading.local()
        self._all: list[Any] = []
        self.lock = threading.Lock()

    def get(self) -> Any:
        if not hasattr(self._local, "slide"):
            self._local.slide = self._open()
            with self.lock:
                self._all.append(self._local.slide)
        return self._local.slide

    def close(self) -> None:
        for slide in self._all:
            with contextlib.suppress(Exception):
                slide.close()


def _read_batches(
    open_reader: Callable[[], Any],
    *,
    windows: _Windows,
    grid: np.ndarray,
    batch_size: int,
    workers: int,
    stop: threading.Event,
    timings: dict[str, float],
    glass: GlassMask | None = None,
) -> Iterator[_Batch]:
    """Read the tissue windows row by row, ``batch_size`` at a time, ``workers`` in parallel.

    With ``glass``, each window's tissue alpha is computed in the reading thread too.
    """
    readers = _Readers(open_reader)
    size, down = windows.tile_size, windows.downsample

    def read(origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        x, y = origin
        start = time.perf_counter()
        width, height = min(size, windows.width - x), min(size, windows.height - y)
        window = np.full((size, size, 3), 255, np.uint8)
        region = readers.get().read_region(
            round(x * down), round(y * down), size=(width, height), mpp=windows.mpp
        )
        window[:height, :width] = np.asarray(region)[:height, :width, :3]
        alpha = None if glass is None else glass.alpha(window, x=x, y=y)
        with readers.lock:
            timings["read"] += time.perf_counter() - start
        return window, alpha

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for row, y in enumerate(windows.ys):
                cols = [int(c) for c in np.flatnonzero(grid[row])]
                for start in range(0, len(cols), batch_size):
                    if stop.is_set():
                        return
                    chunk = cols[start : start + batch_size]
                    read_ = list(pool.map(read, [(windows.xs[c], y) for c in chunk]))
                    tiles = np.stack([window for window, _ in read_])
                    alphas = None if glass is None else np.stack([a for _, a in read_])
                    yield _Batch(row, chunk, tiles, alphas)
                yield _Batch(row, [], None)
    finally:
        readers.close()


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


def _restain(
    batches: Iterator[_Batch],
    generator: GeneratorFn,
    *,
    windows: _Windows,
    grid: np.ndarray,
    writer: StreamingTiffWriter,
    timings: dict[str, float],
    advance: Callable[[int], None],
    glass: str = "white",
) -> None:
    """Run the generator on each batch, blend, and write each finished stripe of rows.

    ``glass="keep"``: background windows beside tissue ones are blended in as white (not run),
    which fades the output into white at window scale; ``glass="white"`` needs no such fringe
    (each window carries its own tissue alpha).
    """
    from scipy import ndimage

    fringe = ndimage.binary_dilation(grid, structure=np.ones((3, 3), bool)) & ~grid
    if glass != "keep":
        fringe[:] = False
    stripe = StripeBlender(
        width=windows.width, tile_size=windows.tile_size, overlap=windows.overlap
    )
    for batch in batches:
        t0 = time.perf_counter()
        if batch.tiles is not None:
            translated = np.asarray(generator(batch.tiles))
            if translated.shape != batch.tiles.shape:
                raise ValueError(f"generator returned {translated.shape} for {batch.tiles.shape}")
            t1 = time.perf_counter()
            alphas = batch.alphas if batch.alphas is not None else [None] * len(batch.cols)
            for col, tile, alpha in zip(batch.cols, translated, alphas, strict=True):
                stripe.add(windows.xs[col], tile, alpha)
            timings["inference"] += t1 - t0
            timings["blend"] += time.perf_counter() - t1
            advance(len(batch.cols))
            continue
        # End of a window row: rows [y0, y0 + stride) are final (last row: all).
        for col in np.flatnonzero(fringe[batch.row]):
            stripe.add_white(windows.xs[col])
        y0 = windows.ys[batch.row]
        last = batch.row == len(windows.ys) - 1
        rows = stripe.pop(min(windows.tile_size if last else windows.stride, windows.height - y0))
        timings["blend"] += time.perf_counter() - t0
        writer.write_rows(rows)


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
    timings = dict.fromkeys(("read", "inference", "blend", "write", "wall"), 0.0)
    started = time.perf_counter()
    stop = threading.Event()
    with atomic_path(out, suffix=".tif") as tmp, make_progress(disable=not progress) as bar:
        task = bar.add_task(f"transfer {Path(slide_path).name}", total=n_tissue)
        with StreamingTiffWriter(
            tmp, width=windows.width, height=windows.height, mpp=mpp
        ) as writer:
            reading = _read_batches(
                open_reader,
                windows=windows,
                grid=grid,
                batch_size=batch_size,
                workers=resolve_workers(workers),
                stop=stop,
                timings=timings,
                glass=glass_mask,
            )
            with contextlib.closing(prefetch(reading, depth=QUEUE_DEPTH, stop=stop)) as batches:
                _restain(
                    batches,
                    generator,
                    windows=windows,
                    grid=grid,
                    writer=writer,
                    timings=timings,
                    advance=lambda n: bar.advance(task, n),
                    glass=glass,
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
