"""``histolib tile``: labelled tiles on a grid over the tissue of whole-slide images."""

from __future__ import annotations

from histolib.tiling.options import TilingOptions
from histolib.tiling.tiler import tile_slides

__all__ = ["TilingOptions", "tile_slides"]
