"""Deprecated location of :func:`histolib.qupath.export_qupath` (kept for one release)."""

from __future__ import annotations

from histolib.qupath.export import export_qupath

__all__ = ["export_qupath"]
