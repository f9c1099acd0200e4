"""``histolib build-library``: cancer and normal cell boxes from H&E and IHC tiles."""

from __future__ import annotations

from typing import Any

__all__ = ["build_library", "tile_cells"]


def __getattr__(name: str) -> Any:
    """Import the pipeline (numpy and co.) on first use, so that ``histolib.library.params``
    stays light for the command line."""
    if name in __all__:
        from histolib.library import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
