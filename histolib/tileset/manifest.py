"""The tile manifest: one row a tile, geometry the tile square in level-0 px.

Columns (docs/formats.md): ``tile_id, slide_id, slide_path, x0, y0, size_px, mpp,
downsample, stain, label, tissue_fraction, annotation_fraction, path``. ``x0, y0`` are the
level-0 origin of the tile; ``size_px`` its side at the target ``mpp``; ``downsample`` the
factor from level-0 px to tile px (``mpp / slide_mpp``), so a tile-local point ``(u, v)`` is at
level-0 ``(x0 + u * downsample, y0 + v * downsample)``. ``path`` is the image file relative to the
manifest's folder (empty when tiles were not written, ``--format none``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histolib.core.tables import read_table, write_table

MANIFEST_COLUMNS = (
    "tile_id",
    "slide_id",
    "slide_path",
    "x0",
    "y0",
    "size_px",
    "mpp",
    "downsample",
    "stain",
    "label",
    "tissue_fraction",
    "annotation_fraction",
    "path",
)


def tile_id(slide_id: str, x0: int, y0: int, size: int) -> str:
    """Return the stable tile id ``<slide_id>_x<x0>_y<y0>_s<size>`` (level-0 origin)."""
    return f"{slide_id}_x{int(x0)}_y{int(y0)}_s{int(size)}"


def write_manifest(gdf: Any, path: str | Path, *, params: dict[str, Any]) -> Path:
    """Write a tile manifest (GeoParquet) atomically, with its parameters in the metadata."""
    return write_table(gdf, path, kind="tiles", params=params)


def read_manifest(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a tile manifest; returns ``(GeoDataFrame, metadata)``.

    Raises
    ------
    ManifestError
        When the file is missing, not a histolib manifest, or lacks columns.
    """
    from histolib.errors import ManifestError

    gdf, meta = read_table(path, kind="tiles")
    missing = [c for c in MANIFEST_COLUMNS if c not in gdf.columns]
    if missing:
        raise ManifestError(f"manifest lacks columns {missing}", path=path)
    return gdf, meta


def tile_image_path(manifest_path: str | Path, row: Any) -> Path:
    """Absolute path of a manifest row's image (``path`` is relative to the manifest)."""
    return Path(manifest_path).resolve().parent / str(row["path"])


def recorded_annotations(meta: dict[str, Any]) -> dict[str, str] | str | None:
    """The contour source ``histolib tile`` recorded in a manifest's metadata.

    Returns ``{slide_id: annotation_path}`` from ``params.slides.<slide_id>.annotation_path``,
    else a global ``params.annotations`` entry (a file or folder), else None.
    """
    params = meta.get("params") if isinstance(meta, dict) else None
    if not isinstance(params, dict):
        return None
    slides = params.get("slides") if isinstance(params.get("slides"), dict) else {}
    recorded = {
        str(sid): str(info["annotation_path"])
        for sid, info in slides.items()
        if isinstance(info, dict) and info.get("annotation_path")
    }
    if recorded:
        return recorded
    value = params.get("annotations")
    if isinstance(value, list | tuple):
        value = value[0] if len(value) == 1 else None
    return str(value) if value else None


def slide_annotation_file(
    source: dict[str, str] | str | Path | None, slide_id: str, *, base: str | Path
) -> Path | None:
    """The contour file of ``slide_id`` from a source as :func:`recorded_annotations` gives it.

    ``source`` is a file or a folder of ``<slide_id>.geojson`` (relative paths are taken from
    ``base``, the manifest's folder, when they do not exist as given) or a mapping of slide id
    to file. Returns None when the slide has no contour file.
    """
    from histolib.annotations.reading import find_annotation_file

    if source is None:
        return None
    if isinstance(source, dict):
        source = source.get(slide_id)
        if source is None:
            return None
    path = Path(str(source))
    if not path.is_absolute() and not path.exists():
        path = Path(base) / path
    return find_annotation_file(path, slide_id)
