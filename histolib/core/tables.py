"""GeoParquet tables with histolib metadata: the tile manifest and the cell library.

Both are GeoDataFrames whose geometry is in level-0 slide pixels. The Parquet schema metadata
carries a ``histolib`` key (JSON) with the histolib version, the table kind (``tiles`` or
``library``) and the full parameter set that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from histolib.core.atomic import atomic_path
from histolib.errors import ManifestError

META_KEY = b"histolib"
TABLE_KINDS = ("tiles", "library")


def write_table(gdf: Any, path: str | Path, *, kind: str, params: dict[str, Any]) -> Path:
    """Write a GeoDataFrame as GeoParquet with histolib metadata, atomically.

    Parameters
    ----------
    gdf
        The ``geopandas.GeoDataFrame`` to write (geometry in level-0 px).
    path
        Target ``.parquet`` path.
    kind
        ``"tiles"`` for a tile manifest, ``"library"`` for a cell library.
    params
        The parameters that produced the table (JSON-serialisable).

    Returns
    -------
    Path
        The written path.
    """
    import pyarrow.parquet as pq
    from geopandas.io.arrow import _geopandas_to_arrow

    from histolib import __version__

    if kind not in TABLE_KINDS:
        raise ValueError(f"unknown table kind {kind!r}")
    table = _geopandas_to_arrow(gdf.reset_index(drop=True), index=False)
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(
        {"version": __version__, "kind": kind, "params": params}, default=str
    ).encode()
    table = table.replace_schema_metadata(meta)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table_meta(path: str | Path) -> dict[str, Any]:
    """Read the histolib metadata of a GeoParquet table without loading its rows.

    Raises
    ------
    ManifestError
        When the file is missing, not Parquet, or not written by histolib.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError("no such file", path=path)
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for non-Parquet input
        raise ManifestError(f"not a Parquet file ({exc.__class__.__name__})", path=path) from exc
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ManifestError("not a histolib table (no histolib metadata)", path=path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError("corrupt histolib metadata", path=path) from exc
    return meta


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_version(meta: dict[str, Any], path: str | Path) -> None:
    """Refuse a table written by an incompatible histolib version.

    Versions are compatible when their major numbers match and, before 1.0, their minor numbers
    too (formats may change between 0.x releases).

    Raises
    ------
    ManifestError
        When the metadata has no version or an incompatible one.
    """
    from histolib import __version__

    written = meta.get("version")
    if not written:
        raise ManifestError("no histolib version in its metadata: not a histolib table", path=path)
    mine, theirs = _version_tuple(__version__), _version_tuple(written)
    same = mine[0] == theirs[0] and (mine[0] > 0 or mine[:2] == theirs[:2])
    if not same:
        raise ManifestError(
            f"written by histolib {written}, this is histolib {__version__}: the formats differ; "
            "rebuild it with this version",
            path=path,
        )


def read_table(path: str | Path, *, kind: str) -> tuple[Any, dict[str, Any]]:
    """Read a histolib GeoParquet table and check its kind.

    Returns
    -------
    tuple
        ``(GeoDataFrame, metadata)`` where metadata has ``version``, ``kind`` and ``params``.

    Raises
    ------
    ManifestError
        When the file is missing, foreign, or of another kind.
    """
    import geopandas as gpd

    meta = read_table_meta(path)
    check_version(meta, Path(path))
    if meta.get("kind") != kind:
        raise ManifestError(
            f"expected a histolib {kind} table, found {meta.get('kind')!r}", path=path
        )
    try:
        gdf = gpd.read_parquet(path)
    except Exception as exc:
        raise ManifestError(f"cannot read table ({exc})", path=path) from exc
    return gdf, meta
