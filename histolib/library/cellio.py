"""Reading and writing cell libraries (GeoParquet or GeoJSON).

One row a cell; geometry = the box (48x48 tile px by default) in level-0 slide px. Columns:

``tile_id, slide_id, label`` (``cancer`` | ``normal``), ``x, y`` (centre, level-0 px),
``tile_x, tile_y`` (centre, tile-local px), ``box_x0, box_y0, box_x1, box_y1`` (the box in
tile-local px, half-open, x = column), ``sigma`` (LoG scale, tile px), ``pass`` (the detector
pass that found it: ``he_normal``, ``he_cancer``, ``ihc_normal``, ``ihc_cancer``),
``tile_x0, tile_y0, downsample`` (the tile's level-0 origin and tile-px-to-level-0 factor).

GeoJSON output is a FeatureCollection with an extra top-level member ``histolib`` holding the
same metadata as the Parquet schema (version, kind, params); geopandas reads it as usual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from histolib.core.atomic import atomic_path
from histolib.core.jsonable import jsonable
from histolib.core.tables import check_version, read_table, write_table
from histolib.errors import ManifestError

LIBRARY_COLUMNS = (
    "tile_id",
    "slide_id",
    "label",
    "x",
    "y",
    "tile_x",
    "tile_y",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "sigma",
    "pass",
    "tile_x0",
    "tile_y0",
    "downsample",
)
CELL_LABELS = ("cancer", "normal")
LIBRARY_SUFFIXES = (".parquet", ".geojson")


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in LIBRARY_SUFFIXES:
        raise ManifestError(
            f"a cell library must end in {' or '.join(LIBRARY_SUFFIXES)}", path=path
        )
    return suffix


def empty_library() -> Any:
    """An empty cell library GeoDataFrame with the right columns."""
    import geopandas as gpd

    return gpd.GeoDataFrame({c: [] for c in LIBRARY_COLUMNS}, geometry=[], crs=None)


def write_library(gdf: Any, path: str | Path, *, params: dict[str, Any]) -> Path:
    """Write a cell library atomically; the format follows the extension.

    Parameters
    ----------
    gdf
        GeoDataFrame with :data:`LIBRARY_COLUMNS` and box geometry in level-0 px.
    path
        ``.parquet`` (GeoParquet, for large libraries) or ``.geojson`` (FeatureCollection).
    params
        Parameters that produced the library; stored in the metadata.
    """
    from histolib import __version__

    path = Path(path)
    if _check_suffix(path) == ".parquet":
        return write_table(gdf, path, kind="library", params=params)
    meta = {"version": __version__, "kind": "library", "params": params}
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "histolib": ')
        fh.write(json.dumps(jsonable(meta), default=str))
        fh.write(', "features": [')
        records = gdf[cols].to_dict(orient="records")
        for i, (rec, geom) in enumerate(zip(records, gdf.geometry, strict=True)):
            feature = {
                "type": "Feature",
                "geometry": geom.__geo_interface__,
                "properties": jsonable(rec),
            }
            fh.write(("," if i else "") + "\n" + json.dumps(feature))
        fh.write("\n]}\n")
    return path


def read_library(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a cell library written by :func:`write_library`.

    Returns
    -------
    tuple
        ``(GeoDataFrame, metadata)``.

    Raises
    ------
    ManifestError
        When the file is missing, not a histolib library, or lacks columns.
    """
    import geopandas as gpd

    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise ManifestError("no such file", path=path)
    if suffix == ".parquet":
        gdf, meta = read_table(path, kind="library")
    else:
        try:
            with path.open(encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"not valid GeoJSON ({exc})", path=path) from exc
        meta = doc.get("histolib") if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or meta.get("kind") != "library":
            raise ManifestError("not a histolib cell library (no histolib metadata)", path=path)
        check_version(meta, path)
        features = doc.get("features") or []
        if features:
            gdf = gpd.GeoDataFrame.from_features(features)
        else:
            gdf = empty_library()
    missing = [c for c in LIBRARY_COLUMNS if c not in gdf.columns]
    if missing:
        raise ManifestError(f"library lacks columns {missing}", path=path)
    return gdf, meta
