"""Expert contours: reading them (QuPath GeoJSON, ASAP XML, Aperio ImageScope XML), tumour
regions and rasterised masks.

- :mod:`~histolib.annotations.reading`: :func:`read_annotations`, the one entry point for
  every annotation file format, and :func:`~histolib.annotations.reading.find_annotation_file`;
- :mod:`~histolib.annotations.geojson`: the QuPath GeoJSON reader;
- :mod:`~histolib.annotations.model`: :class:`Annotation`, what every reader returns;
- :mod:`~histolib.annotations.regions`: tumour regions, tile masks, checks and summaries.
"""

from __future__ import annotations

from histolib.annotations.model import Annotation
from histolib.annotations.reading import read_annotations
from histolib.annotations.regions import rasterize, tumour_region

__all__ = ["Annotation", "rasterize", "read_annotations", "tumour_region"]
