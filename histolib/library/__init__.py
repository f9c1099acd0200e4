"""``histolib build-library``: cancer and normal cell boxes from H&E and IHC tiles.

Modules: ``params`` (LibraryParams, presets), ``cells`` (LoG blob detection), ``clusters``
(healthy-cell graph and hulls), ``detect`` (one tile -> cells), ``jobs`` (tiles -> jobs, the
per-tile cache), ``build`` (build_library), ``cellio`` (reading and writing libraries),
``overlays`` (QC pictures).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_library", "tile_cells"]

_HOMES = {"build_library": "histolib.library.build", "tile_cells": "histolib.library.detect"}


def __getattr__(name: str) -> Any:
    """Import the pipeline (numpy and co.) on first use, so that ``histolib.library.params``
    stays light for the command line."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
