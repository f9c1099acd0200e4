"""Virtual restaining of whole slides and tile folders with a trained generator.

A slide is read at the model's resolution in overlapping windows (``tile_size`` px, ``overlap``
px shared with each neighbour). Each window goes through the generator and is added into a
stripe-high accumulation buffer with a smooth weight window (separable raised cosine: the
weights of two neighbours sum to one across their shared band), then divided by the summed
weights. Hard window edges, where the generator's instance-norm statistics jump from one
window to the next, therefore never show. Windows without tissue are not run and stay white.

Memory stays flat in slide size: only one stripe of window rows (``tile_size`` x slide width
floats) is held, and finished rows stream as an uncompressed PNG byte stream into a
``pyvips.SourceCustom`` that a writer thread saves with ``tiffsave`` (pyramidal, JPEG tiles,
no SubIFDs, mpp in xres/yres: DESIGN.md section 3). libvips builds every pyramid level in one
top-to-bottom pass, so neither the full image nor a temporary raw copy ever exists.

Reading (a thread with a pool of ``workers`` readers and a bounded queue), inference (this
thread) and JPEG/pyramid writing (the writer thread) overlap. The result is written under a
temporary name and renamed, so a killed run never leaves a partial file at the output path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import atomic_path
from histolib.errors import ConfigError, ImageError, InputError, OutputError

GeneratorFn = Callable[[np.ndarray], np.ndarray]
"""A generator as the pipeline sees it: ``(N, H, W, 3)`` uint8 RGB in, same shape out."""

IMAGE_SUFFIXES = (".png",)
THUMBNAIL_SIZE = 1024
_QUEUE_DEPTH = 4


# --------------------------------------------------------------------------------------------
# The generator as a numpy callable


class TorchGenerator:
    """Wrap a torch image-to-image network as a numpy ``uint8`` batch -> ``uint8`` batch callable.

    Input RGB is scaled to [-1, 1] (the training convention), sides are reflect-padded to a
    multiple of 4 and cropped back, inference runs under ``torch.inference_mode`` (and bf16
    autocast on CUDA when ``amp``), and the tanh output is mapped back to [0, 255].

    Parameters
    ----------
    module
        The generator (``histolib_train.models.networks.ResnetGenerator``), already on ``device``.
    device
        Where the module lives.
    amp
        bf16 autocast on CUDA (ignored on the CPU).
    """

    def __init__(self, module: Any, *, device: Any = "cpu", amp: bool = True) -> None:
        import torch

        self.module = module
        self.device = torch.device(device)
        self.amp = bool(amp) and self.device.type == "cuda"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected an (N, H, W, 3) uint8 batch, got {batch.shape}")
        _, height, width, _ = batch.shape
        pad_h, pad_w = (-height) % 4, (-width) % 4
        with torch.inference_mode():
            x = torch.from_numpy(np.require(batch, requirements=["C", "W"])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if pad_h or pad_w:
                mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
                x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp):
                y = self.module(x)
            y = y[:, :, :height, :width].float()
            y = y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
            return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other values are checked and kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


def load_transfer_generator(
    checkpoint: str | Path, *, direction: str = "he2ihc", device: str = "auto", amp: bool = True
) -> tuple[TorchGenerator, dict[str, Any]]:
    """Load a checkpoint's generator as a :class:`TorchGenerator` and return its config.

    Raises
    ------
    CheckpointError
        For a corrupt checkpoint or one of another kind (from ``load_generator``).
    """
    from histolib_train.checkpoint import load_generator

    device = resolve_device(device)
    module, config = load_generator(checkpoint, direction=direction, device=device)
    return TorchGenerator(module, device=device, amp=amp), config


# --------------------------------------------------------------------------------------------
# Blending


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a window of ``size`` px sharing ``overlap`` px with neighbours.

    A raised-cosine ramp (``sin^2``) over the first and last ``overlap`` px and 1 between, so
    that with a stride of ``size - overlap`` the ramps of two neighbours sum to exactly 1.
    Weights are never 0 (pixel centres), so a slide edge reached by one window still works
    after normalisation. ``overlap = 0`` gives flat weights (hard seams).
    """
    if not 0 <= overlap < size:
        raise ConfigError(f"overlap must be in [0, tile size), got {overlap} for {size}")
    weights = np.ones(size, dtype=np.float32)
    if overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        weights[:overlap] = np.minimum(weights[:overlap], ramp)
        weights[size - overlap :] = np.minimum(weights[size - overlap :], ramp[::-1])
    return weights


def window_starts(length: int, *, tile_size: int, overlap: int) -> list[int]:
    """Origins of the windows covering ``[0, length)`` with the given overlap (regular grid).

    The last window may run past ``length``; that part is read as white and cropped away.
    """
    if not 0 <= overlap < tile_size:
        raise ConfigError(f"overlap must be in [0, tile size), got {overlap} for {tile_size}")
    stride = tile_size - overlap
    count = max(1, math.ceil(max(length - overlap, 1) / stride))
    return [k * stride for k in range(count)]


class StripeBlender:
    """Accumulate one row of overlapping windows and hand out the finished image rows.

    Holds ``tile_size`` rows of the padded output width as float sums of ``weight * value``
    and of weights. :meth:`pop` returns the top rows normalised (white where no window
    wrote) and shifts the band shared with the next window row to the top.
    """

    def __init__(self, *, width: int, tile_size: int, overlap: int) -> None:
        self.width, self.tile_size, self.overlap = width, tile_size, overlap
        self.stride = tile_size - overlap
        full_w = window_starts(width, tile_size=tile_size, overlap=overlap)[-1] + tile_size
        weights_1d = blend_weights(tile_size, overlap)
        self.weights = np.outer(weights_1d, weights_1d)
        self.acc = np.zeros((tile_size, full_w, 3), np.float32)
        self.wsum = np.zeros((tile_size, full_w), np.float32)
        self.has_data = False

    def add(self, x: int, tile: np.ndarray) -> None:
        """Add a translated window whose left edge is output column ``x``."""
        size = self.tile_size
        self.acc[:, x : x + size] += tile * self.weights[..., None]
        self.wsum[:, x : x + size] += self.weights
        self.has_data = True

    def add_white(self, x: int) -> None:
        """Add a background window (not run: white) whose left edge is output column ``x``.

        Blending white windows beside the tissue ones fades the generator's output into the
        white background smoothly instead of at a hard window edge.
        """
        size = self.tile_size
        self.acc[:, x : x + size] += 255.0 * self.weights[..., None]
        self.wsum[:, x : x + size] += self.weights
        self.has_data = True

    def pop(self, n_rows: int) -> np.ndarray:
        """The top ``n_rows`` finished rows ``(n_rows, width, 3)`` uint8; shift the rest up."""
        rows = np.full((n_rows, self.width, 3), 255, np.uint8)
        if self.has_data:
            top = self.wsum[:n_rows, : self.width]
            covered = top > 0
            values = self.acc[:n_rows, : self.width][covered] / top[covered][:, None]
            rows[covered] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            overlap, stride = self.overlap, self.stride
            self.acc[:overlap] = self.acc[stride:]
            self.acc[overlap:] = 0.0
            self.wsum[:overlap] = self.wsum[stride:]
            self.wsum[overlap:] = 0.0
            self.has_data = bool(overlap) and bool(self.wsum[:overlap].any())
        return rows


def transfer_image(
    rgb: np.ndarray,
    generator: GeneratorFn,
    *,
    tile_size: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
) -> np.ndarray:
    """Restain one in-memory RGB image of any size.

    Images no larger than ``tile_size`` go through the generator whole; larger ones in
    overlapping windows blended as on slides.
    """
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    if height <= tile_size and width <= tile_size:
        return generator(rgb[None])[0]
    xs = window_starts(width, tile_size=tile_size, overlap=overlap)
    ys = window_starts(height, tile_size=tile_size, overlap=overlap)
    full_h, full_w = ys[-1] + tile_size, xs[-1] + tile_size
    padded = np.full((full_h, full_w, 3), 255, np.uint8)
    padded[:height, :width] = rgb
    weights_1d = blend_weights(tile_size, overlap)
    weights = np.outer(weights_1d, weights_1d)
    acc = np.zeros((full_h, full_w, 3), np.float32)
    wsum = np.zeros((full_h, full_w), np.float32)
    origins = [(x, y) for y in ys for x in xs]
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = np.stack([padded[y : y + tile_size, x : x + tile_size] for x, y in chunk])
        out = generator(batch)
        for (x, y), tile in zip(chunk, out, strict=True):
            acc[y : y + tile_size, x : x + tile_size] += tile * weights[..., None]
            wsum[y : y + tile_size, x : x + tile_size] += weights
    result = acc / wsum[..., None]
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)[:height, :width]


# --------------------------------------------------------------------------------------------
# Streaming PNG -> pyvips writer


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + tag
        + data
        + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    )


class _Aborted(Exception):
    """Raised inside the writer when the producer gives up (its error is the real one)."""


class StreamingTiffWriter:
    """Write an RGB image row-stripe by row-stripe into a pyramidal TIFF, in constant memory.

    Rows go out as an uncompressed PNG stream (stored deflate blocks: no compression cost)
    through a bounded queue to a ``pyvips.SourceCustom``; a thread runs ``tiffsave`` on the
    sequential image it loads. Use as a context manager; call :meth:`write_rows` with the
    rows top to bottom, exactly ``height`` in all.
    """

    def __init__(self, path: Path, *, width: int, height: int, mpp: float, quality: int = 90):
        self.path = Path(path)
        self.width, self.height, self.mpp, self.quality = width, height, mpp, quality
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._buffer = bytearray()
        self._eof = False
        self._rows_written = 0
        self._error: BaseException | None = None
        self._compressor = zlib.compressobj(0)
        self._aborting = False
        self.busy_seconds = 0.0  # writer-thread time not spent waiting for rows
        self._waiting = 0.0
        self._thread = threading.Thread(target=self._run, name="histolib-tiff-writer", daemon=True)

    # -- writer thread ---------------------------------------------------------------------
    def _on_read(self, size: int) -> bytes:
        start = time.perf_counter()
        while len(self._buffer) < size and not self._eof:
            item = self._queue.get()
            if item is None:
                self._eof = True
                break
            self._buffer += item
        self._waiting += time.perf_counter() - start
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _run(self) -> None:
        import pyvips

        from histolib.slide.pyramid import pyramid_tiff_options

        start = time.perf_counter()
        try:
            source = pyvips.SourceCustom()
            source.on_read(self._on_read)
            image = pyvips.Image.new_from_source(source, "", access="sequential")
            image.tiffsave(
                str(self.path), **pyramid_tiff_options(mpp=self.mpp, quality=self.quality)
            )
        except BaseException as exc:  # reported to the producer in close()
            self._error = exc
        finally:
            # Drain whatever the producer still pushes so that it never blocks on a dead writer.
            self._eof = True
            self.busy_seconds = time.perf_counter() - start - self._waiting

    # -- producer side ---------------------------------------------------------------------
    def _put(self, item: bytes | None) -> None:
        while True:
            if self._error is not None or not self._thread.is_alive():
                if item is None:
                    return
                raise OutputError(f"writing failed ({self._error})", path=self.path)
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _quiet_when_aborted(self, record: logging.LogRecord) -> bool:
        # libvips complains about the truncated stream an abort causes; the real error is ours.
        return not self._aborting

    def __enter__(self) -> StreamingTiffWriter:
        logging.getLogger("pyvips").addFilter(self._quiet_when_aborted)
        self._thread.start()
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        self._put(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        return self

    def write_rows(self, rows: np.ndarray) -> None:
        """Append ``rows`` (``(n, width, 3)`` uint8) below what was written so far."""
        if rows.shape[1:] != (self.width, 3) or rows.dtype != np.uint8:
            raise ValueError(f"rows must be (n, {self.width}, 3) uint8, got {rows.shape}")
        if self._rows_written + rows.shape[0] > self.height:
            raise ValueError("more rows than the image height")
        filtered = np.zeros((rows.shape[0], self.width * 3 + 1), np.uint8)  # filter byte 0
        filtered[:, 1:] = rows.reshape(rows.shape[0], -1)
        self._put(_png_chunk(b"IDAT", self._compressor.compress(filtered.tobytes())))
        self._rows_written += rows.shape[0]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self._rows_written == self.height:
            tail = _png_chunk(b"IDAT", self._compressor.flush()) + _png_chunk(b"IEND", b"")
            self._put(tail)
        self._aborting = exc_type is not None or self._rows_written != self.height
        # None = end of stream; an early end makes libvips fail on a truncated image.
        try:
            self._put(None)
            self._thread.join()
        finally:
            logging.getLogger("pyvips").removeFilter(self._quiet_when_aborted)
        if exc_type is not None:
            return
        if self._rows_written != self.height:
            raise OutputError(
                f"only {self._rows_written} of {self.height} rows were written", path=self.path
            )
        if self._error is not None:
            raise OutputError(f"writing the TIFF failed ({self._error})", path=self.path)


def write_thumbnail(tiff_path: Path, thumbnail_path: Path, *, size: int = THUMBNAIL_SIZE) -> Path:
    """Save a PNG thumbnail (longest side ``size``) of a pyramidal TIFF, atomically."""
    import pyvips

    image = pyvips.Image.thumbnail(str(tiff_path), size)
    with atomic_path(thumbnail_path) as tmp:
        image.pngsave(str(tmp))
    return thumbnail_path


def _check_finished(out: Path, *, width: int, height: int) -> None:
    """An existing output is kept only when it is a TIFF of this run's size.

    Outputs appear only when complete, so anything else at ``out`` is a foreign file or the
    output of another slide or mpp: refuse it rather than report it as done.
    """
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(out))
        size = (image.width, image.height)
    except pyvips.Error as exc:
        raise OutputError(
            "exists and is not a readable TIFF; use --overwrite to replace it", path=out
        ) from exc
    if size != (width, height):
        raise OutputError(
            f"exists with another size ({size[0]} x {size[1]} px; this run makes {width} x "
            f"{height}): another slide or mpp? use --overwrite or another --out",
            path=out,
        )


def thumbnail_path_for(out: Path) -> Path:
    """``virtual.tif`` -> ``virtual.thumbnail.png`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.thumbnail.png")


# --------------------------------------------------------------------------------------------
# Slides


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
            "timings": dict(self.timings),
        }


def tissue_lowres(slide: Any) -> tuple[np.ndarray, float, float]:
    """A low-resolution tissue mask of ``slide`` and its scale (level-0 px per mask px, x/y)."""
    from histolib.slide.tissue import tissue_mask

    thumb = slide.thumbnail(max_size=2048)
    mask = np.asarray(tissue_mask(thumb, mpp=slide.mpp * slide.dimensions[0] / thumb.shape[1]))
    width0, height0 = slide.dimensions
    return mask.astype(bool), width0 / mask.shape[1], height0 / mask.shape[0]


def tissue_window_grid(
    tissue: np.ndarray | None,
    *,
    scale_x: float,
    scale_y: float,
    xs: Sequence[int],
    ys: Sequence[int],
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
class _Batch:
    row: int
    cols: list[int]
    tiles: np.ndarray | None  # None marks the end of a window row


def _read_batches(
    open_reader: Callable[[], Any],
    *,
    grid: np.ndarray,
    xs: Sequence[int],
    ys: Sequence[int],
    tile_size: int,
    out_w: int,
    out_h: int,
    downsample: float,
    mpp: float,
    batch_size: int,
    workers: int,
    stop: threading.Event,
    timings: dict[str, float],
) -> Iterator[_Batch]:
    """Read the tissue windows row by row, ``batch_size`` at a time, ``workers`` in parallel."""
    local = threading.local()
    readers: list[Any] = []
    lock = threading.Lock()

    def reader() -> Any:
        if not hasattr(local, "slide"):
            local.slide = open_reader()
            with lock:
                readers.append(local.slide)
        return local.slide

    def read(origin: tuple[int, int]) -> np.ndarray:
        x, y = origin
        start = time.perf_counter()
        width, height = min(tile_size, out_w - x), min(tile_size, out_h - y)
        window = np.full((tile_size, tile_size, 3), 255, np.uint8)
        region = reader().read_region(
            round(x * downsample), round(y * downsample), size=(width, height), mpp=mpp
        )
        window[:height, :width] = np.asarray(region)[:height, :width, :3]
        with lock:
            timings["read"] += time.perf_counter() - start
        return window

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for row, y in enumerate(ys):
                cols = [int(c) for c in np.flatnonzero(grid[row])]
                for start in range(0, len(cols), batch_size):
                    if stop.is_set():
                        return
                    chunk = cols[start : start + batch_size]
                    tiles = list(pool.map(read, [(xs[c], y) for c in chunk]))
                    yield _Batch(row, chunk, np.stack(tiles))
                yield _Batch(row, [], None)
    finally:
        for slide in readers:
            with contextlib.suppress(Exception):
                slide.close()


def _prefetch(iterator: Iterator[Any], *, depth: int, stop: threading.Event) -> Iterator[Any]:
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
    workers: int = 2,
    tissue: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> TransferResult:
    """Restain a whole slide into a pyramidal TIFF at ``mpp``, blending overlapping windows.

    Parameters
    ----------
    slide_path
        Any slide :func:`histolib.slide.reader.open_slide` reads.
    generator
        ``(N, H, W, 3)`` uint8 -> same (e.g. :class:`TorchGenerator`).
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
        Reader threads.
    tissue
        Run only windows touching tissue (``histolib.slide.tissue``); the rest stays white.
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
    from scipy import ndimage

    from histolib.slide.reader import open_slide

    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError("the virtual slide must end in .tif or .tiff", path=out)
    if out.is_dir():
        raise OutputError("is a folder; give the path of the .tif to write", path=out)
    thumb_path = thumbnail_path_for(out)
    if mpp <= 0:
        raise ConfigError(f"--mpp must be positive, got {mpp}")
    if tile_size % 4 or tile_size < 16:
        raise ConfigError(f"--tile-size must be a multiple of 4 and >= 16, got {tile_size}")
    blend_weights(tile_size, overlap)  # validates overlap
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")

    def open_reader() -> Any:
        return open_slide(slide_path, mpp=slide_mpp)

    with open_reader() as slide:
        downsample = mpp / slide.mpp
        width0, height0 = slide.dimensions
        out_w = max(1, round(width0 / downsample))
        out_h = max(1, round(height0 / downsample))
        xs = window_starts(out_w, tile_size=tile_size, overlap=overlap)
        ys = window_starts(out_h, tile_size=tile_size, overlap=overlap)
        if out.exists() and not overwrite:
            _check_finished(out, width=out_w, height=out_h)
            if not thumb_path.exists():
                write_thumbnail(out, thumb_path)
            n = len(xs) * len(ys)
            return TransferResult(out, thumb_path, out_w, out_h, mpp, n, 0, skipped=True)
        if tissue:
            mask, scale_x, scale_y = tissue_lowres(slide)
        else:
            mask, scale_x, scale_y = None, 1.0, 1.0
    grid = tissue_window_grid(
        mask,
        scale_x=scale_x,
        scale_y=scale_y,
        xs=xs,
        ys=ys,
        tile_size=tile_size,
        downsample=downsample,
    )
    n_tissue = int(grid.sum())
    # Background windows that overlap a tissue window: blended in as white, not run.
    fringe = ndimage.binary_dilation(grid, structure=np.ones((3, 3), bool)) & ~grid
    timings = {"read": 0.0, "inference": 0.0, "blend": 0.0, "write": 0.0, "wall": 0.0}
    stride = tile_size - overlap
    stripe = StripeBlender(width=out_w, tile_size=tile_size, overlap=overlap)
    started = time.perf_counter()
    stop = threading.Event()

    from histolib.core.progress import make_progress

    with (
        atomic_path(out, suffix=".tif") as tmp,
        make_progress(disable=not progress) as bar,
    ):
        task = bar.add_task(f"transfer {Path(slide_path).name}", total=n_tissue)
        with StreamingTiffWriter(tmp, width=out_w, height=out_h, mpp=mpp) as writer:
            batches = _prefetch(
                _read_batches(
                    open_reader,
                    grid=grid,
                    xs=xs,
                    ys=ys,
                    tile_size=tile_size,
                    out_w=out_w,
                    out_h=out_h,
                    downsample=downsample,
                    mpp=mpp,
                    batch_size=batch_size,
                    workers=workers,
                    stop=stop,
                    timings=timings,
                ),
                depth=_QUEUE_DEPTH,
                stop=stop,
            )
            with contextlib.closing(batches):
                for batch in batches:
                    if batch.tiles is not None:
                        t0 = time.perf_counter()
                        translated = np.asarray(generator(batch.tiles))
                        if translated.shape != batch.tiles.shape:
                            raise ValueError(
                                f"generator returned {translated.shape} for {batch.tiles.shape}"
                            )
                        t1 = time.perf_counter()
                        for col, tile in zip(batch.cols, translated, strict=True):
                            stripe.add(xs[col], tile)
                        timings["inference"] += t1 - t0
                        timings["blend"] += time.perf_counter() - t1
                        bar.advance(task, len(batch.cols))
                        continue
                    # End of a window row: rows [y0, y0 + stride) are final (last row: all).
                    t0 = time.perf_counter()
                    for col in np.flatnonzero(fringe[batch.row]):
                        stripe.add_white(xs[col])
                    y0 = ys[batch.row]
                    last = batch.row == len(ys) - 1
                    rows = stripe.pop(min(tile_size if last else stride, out_h - y0))
                    timings["blend"] += time.perf_counter() - t0
                    writer.write_rows(rows)
        timings["write"] = writer.busy_seconds
        write_thumbnail(tmp, thumb_path)
    timings["wall"] = time.perf_counter() - started
    return TransferResult(
        out, thumb_path, out_w, out_h, mpp, len(xs) * len(ys), n_tissue, timings=timings
    )


# --------------------------------------------------------------------------------------------
# Folders of tiles


def list_images(images: str | Path) -> list[Path]:
    """The PNG tiles of a folder, sorted by name.

    Raises
    ------
    InputError
        When the folder does not exist or holds no PNG.
    """
    images = Path(images)
    if not images.is_dir():
        raise InputError("no such folder of tiles", path=images)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError("folder holds no .png tiles", path=images)
    return files


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (alpha composited on white).

    Raises
    ------
    ImageError
        For an unreadable file or one that is not 8-bit colour (grayscale, 16-bit, CMYK...).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "P"):
                raise ImageError(
                    f"expected an 8-bit RGB image, got {len(image.getbands())} channel(s) "
                    f"(mode {image.mode})",
                    path=path,
                )
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ImageError("no such image file", path=path) from None
    except UnidentifiedImageError:
        raise ImageError(
            "cannot read image (not an image format Pillow reads)", path=path
        ) from None
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"cannot read image ({exc})", path=path) from exc


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` as a PNG atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def transfer_images(
    images: str | Path,
    generator: GeneratorFn,
    *,
    out: str | Path,
    tile_size: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, int]:
    """Restain every PNG tile of ``images`` into ``out`` under the same file names.

    Tiles are read a batch ahead in a thread and written by a small thread pool. Existing
    outputs are skipped (a re-run resumes) unless ``overwrite``. Tiles larger than
    ``tile_size`` go through overlapping blended windows.

    Returns
    -------
    dict
        ``{"written": n, "skipped": n}``.
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib.core.progress import make_progress

    if tile_size % 4 or tile_size < 16:
        raise ConfigError(f"--tile-size must be a multiple of 4 and >= 16, got {tile_size}")
    blend_weights(tile_size, overlap)  # validates the overlap
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    files = list_images(images)
    out = ensure_writable_dir(out)
    if Path(images).resolve() == out.resolve():
        raise OutputError("output folder must differ from the input folder", path=out)
    todo = [p for p in files if overwrite or not (out / p.name).exists()]
    stop = threading.Event()

    def batches() -> Iterator[list[tuple[Path, np.ndarray]]]:
        group: list[tuple[Path, np.ndarray]] = []
        for path in todo:
            rgb = read_rgb(path)
            if group and (rgb.shape != group[0][1].shape or len(group) >= batch_size):
                yield group
                group = []
            group.append((path, rgb))
        if group:
            yield group

    written = 0
    with (
        make_progress(disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=2) as writers,
    ):
        task = bar.add_task("transfer tiles", total=len(todo))
        pending = []
        for group in _prefetch(batches(), depth=2, stop=stop):
            shape = group[0][1].shape
            if shape[0] <= tile_size and shape[1] <= tile_size:
                results = list(generator(np.stack([rgb for _, rgb in group])))
            else:
                results = [
                    transfer_image(
                        rgb, generator, tile_size=tile_size, overlap=overlap, batch_size=batch_size
                    )
                    for _, rgb in group
                ]
            for (path, _), result in zip(group, results, strict=True):
                pending.append(writers.submit(write_png, out / path.name, result))
            written += len(group)
            bar.advance(task, len(group))
        for fut in pending:
            fut.result()
    return {"written": written, "skipped": len(files) - len(todo)}
