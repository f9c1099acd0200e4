"""QuPath interchange: GeoJSON features QuPath imports, export of tiles / cells / contours,
and import of curated QuPath exports back into a library."""

from __future__ import annotations

from histolib.qupath.export import export_qupath
from histolib.qupath.importer import import_qupath

__all__ = ["export_qupath", "import_qupath"]
