"""The one module that writes pyramidal TIFF slides (docs/formats.md).

Every slide histolib writes (synthetic slides, virtual stains, benchmark inputs) has the same
layout, from :func:`pyramid_tiff_options`: 256 px JPEG tiles (Q 90), BigTIFF, one page per
level (no SubIFDs, so that OpenSlide sees every level), resolution ``1000 / mpp`` px per mm
written in px per cm, so that OpenSlide reports ``openslide.mpp-x == mpp`` (which QuPath reads).

Two writers produce it:

- :func:`save_pyramidal_tiff` saves a whole ``pyvips.Image`` (one that fits libvips'
  demand-driven pipeline, e.g. a synthetic slide);
- :class:`StreamingTiffWriter` takes an image row-stripe by row-stripe, in constant memory:
  rows go out as an uncompressed PNG byte stream into a ``pyvips.SourceCustom`` that a writer
  thread saves with ``tiffsave``. libvips builds every pyramid level in one top-to-bottom pass,
  so neither the full image nor a temporary raw copy ever exists.

Beside them: :func:`write_thumbnail` (a PNG thumbnail of a written TIFF) and
:func:`check_finished_tiff` (is an existing output this run's?).
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import atomic_path
from histolib.errors import OutputError

TILE_PX = 256
JPEG_QUALITY = 90
THUMBNAIL_SIZE = 1024
_QUEUE_DEPTH = 12
"""Pieces of the PNG stream (three a stripe of rows) queued ahead of the writer thread."""


def pyramid_tiff_options(*, mpp: float, quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Keyword arguments of ``pyvips.Image.tiffsave`` for a slide at ``mpp`` um/px."""
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    return {
        "tile": True,
        "pyramid": True,
        "compression": "jpeg",
        "Q": int(quality),
        "tile_width": TILE_PX,
        "tile_height": TILE_PX,
        "bigtiff": True,
        "subifd": False,
        "resunit": "cm",
        "xres": 1000.0 / mpp,
        "yres": 1000.0 / mpp,
    }


def save_pyramidal_tiff(
    image: Any, path: str | Path, *, mpp: float, description: str | None = None
) -> Path:
    """Save a pyvips image as a pyramidal TIFF at ``mpp``, atomically.

    Parameters
    ----------
    image
        A ``pyvips.Image`` (RGB, uchar).
    path
        Target ``.tif``; written under a temporary name, then renamed.
    mpp
        Microns per pixel of ``image``.
    description
        Optional ImageDescription (replaces any description the image carries, e.g. an Aperio
        header copied from a source slide, which would make OpenSlide misread the file).

    Raises
    ------
    OutputError
        When libvips cannot write the file.
    """
    import pyvips

    path = Path(path)
    image = image.copy(interpretation="srgb")
    if description is not None:
        image.set_type(pyvips.GValue.gstr_type, "image-description", description)
    with atomic_path(path) as tmp:
        try:
            image.tiffsave(str(tmp), **pyramid_tiff_options(mpp=mpp))
        except pyvips.Error as exc:
            raise OutputError(f"cannot write TIFF ({exc})", path=path) from exc
    return path


# ---------------------------------------------------------------------------------------
# Streaming writer


def _png_chunk(tag: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """A PNG chunk as its three pieces (length and tag, data, CRC): the data is not copied."""
    crc = zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag, data, struct.pack(">I", crc)


class StreamingTiffWriter:
    """Write an RGB image row-stripe by row-stripe into a pyramidal TIFF, in constant memory.

    Rows go out as an uncompressed PNG stream (stored deflate blocks: no compression cost)
    through a bounded queue to a ``pyvips.SourceCustom``; a thread runs ``tiffsave`` on the
    sequential image it loads. Each stripe is copied once into the stream (with the PNG
    filter byte of each row) and handed to libvips' reads as views, without further copies.
    Use as a context manager; call :meth:`write_rows` with the rows top to bottom, exactly
    ``height`` in all.
    """

    def __init__(
        self, path: Path, *, width: int, height: int, mpp: float, quality: int = JPEG_QUALITY
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.mpp, self.quality = width, height, mpp, quality
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._current = memoryview(b"")  # what is left of the piece being read
        self._eof = False
        self._rows_written = 0
        self._error: BaseException | None = None
        self._compressor = zlib.compressobj(0)
        self._aborting = False
        self.busy_seconds = 0.0  # writer-thread time not spent waiting for rows
        self._waiting = 0.0
        self._thread = threading.Thread(target=self._run, name="histolib-tiff-writer", daemon=True)

    # -- writer thread ---------------------------------------------------------------------
    def _on_read(self, size: int) -> memoryview:
        """Up to ``size`` bytes of the stream (fewer at the end of a piece; none at its end)."""
        start = time.perf_counter()
        while not len(self._current) and not self._eof:
            item = self._queue.get()
            if item is None:
                self._eof = True
                break
            self._current = memoryview(item).cast("B")
        self._waiting += time.perf_counter() - start
        data, self._current = self._current[:size], self._current[size:]
        return data

    def _run(self) -> None:
        import pyvips

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
    def _put(self, *items: bytes | None) -> None:
        for item in items:
            self._put_one(item)

    def _put_one(self, item: bytes | None) -> None:
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
        self._put(b"\x89PNG\r\n\x1a\n", *_png_chunk(b"IHDR", header))
        return self

    def write_rows(self, rows: np.ndarray) -> None:
        """Append ``rows`` (``(n, width, 3)`` uint8) below what was written so far."""
        if rows.shape[1:] != (self.width, 3) or rows.dtype != np.uint8:
            raise ValueError(f"rows must be (n, {self.width}, 3) uint8, got {rows.shape}")
        if self._rows_written + rows.shape[0] > self.height:
            raise ValueError("more rows than the image height")
        filtered = np.empty((rows.shape[0], self.width * 3 + 1), np.uint8)
        filtered[:, 0] = 0  # PNG filter type None
        filtered[:, 1:] = rows.reshape(rows.shape[0], -1)
        self._put(*_png_chunk(b"IDAT", self._compressor.compress(filtered)))
        self._rows_written += rows.shape[0]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self._rows_written == self.height:
            self._put(*_png_chunk(b"IDAT", self._compressor.flush()), *_png_chunk(b"IEND", b""))
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


def check_finished_tiff(out: Path, *, width: int, height: int) -> None:
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
