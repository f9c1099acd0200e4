"""``histolib build-library``: cancer and normal cell boxes from H&E and IHC tiles."""

from __future__ import annotations

from histolib.library.build import build_library
from histolib.library.detect import tile_cells

__all__ = ["build_library", "tile_cells"]
