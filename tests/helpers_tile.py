"""Test helpers for slides, tissue and tiling: tiny pyramidal TIFF slides and contours.

The slides are drawn with numpy and written with pyvips the way docs/formats.md says
(tiled, pyramid, JPEG, mpp in xres/yres), so OpenSlide opens them as generic TIFFs with the
right mpp. They render in milliseconds, so every test can make its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GLASS = (243, 243, 241)
TISSUE = (226, 150, 190)  # eosin pink
NUCLEUS = (90, 60, 140)  # hematoxylin purple


def tissue_image(
    width: int,
    height: int,
    *,
    discs: Sequence[tuple[float, float, float]] = (),
    rects: Sequence[tuple[int, int, int, int]] = (),
    seed: int = 0,
) -> np.ndarray:
    """An RGB uint8 image: grey-white glass with pink tissue discs / rectangles and nuclei.

    ``discs`` are ``(cx, cy, r)`` and ``rects`` ``(x0, y0, x1, y1)`` in px (x = column).
    """
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GLASS
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    tissue = np.zeros((height, width), dtype=bool)
    for cx, cy, r in discs:
        tissue |= (cols - cx) ** 2 + (rows - cy) ** 2 <= r * r
    for x0, y0, x1, y1 in rects:
        tissue[y0:y1, x0:x1] = True
    image[tissue] = TISSUE
    count = int(tissue.sum() * 0.004)
    if count:
        where = np.flatnonzero(tissue)
        picks = rng.choice(where, size=count, replace=False)
        image.reshape(-1, 3)[picks] = NUCLEUS
    return image


def write_slide(
    path: Path, rgb: np.ndarray, *, mpp: float | None = 0.5, compression: str = "jpeg"
) -> Path:
    """Write ``rgb`` as a pyramidal tiled TIFF that OpenSlide opens (generic-tiff)."""
    import pyvips

    image = pyvips.Image.new_from_array(np.ascontiguousarray(rgb)).copy(interpretation="srgb")
    options: dict[str, Any] = {
        "tile": True,
        "pyramid": True,
        "compression": compression,
        "tile_width": 256,
        "tile_height": 256,
        "bigtiff": True,
    }
    if compression == "jpeg":
        options["Q"] = 90
    if mpp is not None:
        options["xres"] = options["yres"] = 1000.0 / mpp
        options["resunit"] = "cm"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.tiffsave(str(path), **options)
    return path


def disc_slide(path: Path, *, width: int = 2048, height: int = 1536, mpp: float = 0.5) -> Path:
    """A slide with two tissue discs and a rectangle of tissue (left half glass at the top)."""
    rgb = tissue_image(
        width,
        height,
        discs=[(0.3 * width, 0.55 * height, 0.28 * height), (0.72 * width, 0.5 * height, 300)],
        rects=[(int(0.55 * width), 64, int(0.95 * width), 320)],
    )
    return write_slide(path, rgb, mpp=mpp)


def write_contours(
    path: Path, polygons: Sequence[Any], *, class_name: str | None = "Tumor"
) -> Path:
    """Write shapely polygons as a QuPath GeoJSON FeatureCollection of annotations."""
    import shapely.geometry

    from histolib.qupath.features import qupath_feature, write_feature_collection

    features = [
        qupath_feature(
            shapely.geometry.mapping(polygon), object_type="annotation", class_name=class_name
        )
        for polygon in polygons
    ]
    write_feature_collection(path, features)
    return Path(path)


def manifest_frame(path: Path) -> Any:
    """The manifest as a plain DataFrame sorted by tile id (geometry as WKT), for comparing."""
    from histolib.tileset.manifest import read_manifest

    gdf, _meta = read_manifest(path)
    frame = gdf.drop(columns="geometry").copy()
    frame["wkt"] = gdf.geometry.to_wkt()
    return frame.sort_values("tile_id").reset_index(drop=True)


def tile_files(out: Path) -> dict[str, int]:
    """Every file under ``out/tiles`` (relative name -> modification time in ns)."""
    root = Path(out) / "tiles"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


def placeholder_tiff(path: Path, *, dpi: float = 72.0) -> Path:
    """A pyramidal TIFF whose resolution tags are an image editor's dpi, not a microscope's."""
    import pyvips

    rgb = tissue_image(512, 384, discs=[(256, 192, 150)])
    image = pyvips.Image.new_from_array(rgb).copy(interpretation="srgb")
    image.tiffsave(
        str(path), tile=True, pyramid=True, xres=dpi / 25.4, yres=dpi / 25.4, resunit="inch"
    )
    return path
