"""Deep-zoom tiles of a slide, from OpenSlide's ``DeepZoomGenerator``, with a bounded cache.

:class:`DeepZoomSlide` opens a slide through :func:`histolib.slide.reader.open_slide` (so the
formats, the checks and the mpp are histolib's) and serves Deep Zoom (DZI) tiles as JPEG bytes
from ``openslide.deepzoom.DeepZoomGenerator`` over an ``openslide.OpenSlide`` (an
``openslide.ImageSlide`` for plain images). :class:`TileCache` keeps encoded tiles in least-
recently-used order under a byte budget shared by every slide of a viewer.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError

#: Deep Zoom tile side and overlap (OpenSeadragon's and ``dzsave``'s usual 254 + 1 + 1).
TILE_SIZE = 254
OVERLAP = 1
TILE_FORMAT = "jpeg"
JPEG_QUALITY = 80
#: Default byte budget of the tile cache (``--cache-mb``).
DEFAULT_CACHE_MB = 256


class TileCache:
    """Encoded tiles in least-recently-used order, at most ``max_bytes`` in all (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ConfigError(f"the tile cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any) -> bytes | None:
        """The tile stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Any, data: bytes) -> None:
        """Store ``data`` under ``key``, dropping the least recently used tiles over budget (a
        tile larger than the whole budget is not kept)."""
        size = len(data)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = data
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def clear(self) -> None:
        """Drop every tile."""
        with self._lock:
            self._items.clear()
            self.bytes = 0


def _deepzoom_handle(slide: Any) -> tuple[Any, bool]:
    """The OpenSlide object a DeepZoomGenerator reads (and whether it needs a lock): the
    slide's own format reader, or an ``ImageSlide`` for a plain image."""
    import openslide

    if slide.vendor == "image":
        return openslide.ImageSlide(str(slide.path)), True
    return openslide.OpenSlide(str(slide.path)), False


class DeepZoomSlide:
    """One slide as Deep Zoom tiles (a context manager; :meth:`close` releases it).

    Parameters
    ----------
    path
        Any slide histolib reads (:func:`histolib.slide.reader.open_slide`).
    mpp
        Level-0 microns per pixel, overriding the metadata (needed by plain images to show a
        scale bar; without one the slide opens and has no scale bar).
    cache
        Where encoded tiles are kept (shared by the slides of a viewer); None keeps none.
    key
        This slide's part of the cache keys.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mpp: float | None = None,
        cache: TileCache | None = None,
        key: str = "",
    ) -> None:
        from openslide.deepzoom import DeepZoomGenerator

        from histolib.slide.reader import open_slide

        with open_slide(path, mpp=mpp, require_mpp=False) as slide:
            self.path = slide.path
            self.slide_id = slide.slide_id
            self.mpp = slide.mpp
            self.dimensions = slide.dimensions
            self.vendor = slide.vendor
            self._handle, locked = _deepzoom_handle(slide)
        self._lock = threading.Lock() if locked else None
        self.generator = DeepZoomGenerator(
            self._handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False
        )
        self.cache = cache
        self.key = key

    def __enter__(self) -> DeepZoomSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the slide file."""
        self._handle.close()

    def descriptor(self, url: str) -> dict[str, Any]:
        """The DZI descriptor as OpenSeadragon takes it inline (``url``: the ``_files/``
        folder), so that no XML need be fetched (``fetch`` fails under ``file://``)."""
        width, height = self.dimensions
        return {
            "Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Url": url,
                "Format": TILE_FORMAT,
                "Overlap": str(OVERLAP),
                "TileSize": str(TILE_SIZE),
                "Size": {"Width": str(width), "Height": str(height)},
            }
        }

    def has_tile(self, level: int, col: int, row: int) -> bool:
        """Whether ``(level, col, row)`` is a tile of the pyramid."""
        if not 0 <= level < self.generator.level_count:
            return False
        cols, rows = self.generator.level_tiles[level]
        return 0 <= col < cols and 0 <= row < rows

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of one tile (from the cache when there).

        Raises
        ------
        KeyError
            When the tile is not in the pyramid.
        """
        if not self.has_tile(level, col, row):
            raise KeyError((level, col, row))
        key = (self.key, level, col, row)
        if self.cache is not None:
            data = self.cache.get(key)
            if data is not None:
                return data
        if self._lock is None:
            image = self.generator.get_tile(level, (col, row))
        else:
            with self._lock:
                image = self.generator.get_tile(level, (col, row))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        data = buffer.getvalue()
        if self.cache is not None:
            self.cache.put(key, data)
        return data
