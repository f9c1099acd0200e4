"""Expert contours: reading them (QuPath GeoJSON), tumour regions and rasterised masks."""

from __future__ import annotations

from histolib.annotations.reading import (
    Annotation,
    rasterize,
    read_annotations,
    tumour_region,
)

__all__ = ["Annotation", "rasterize", "read_annotations", "tumour_region"]
