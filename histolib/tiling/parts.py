"""Per-slide rows: ``parts/<slide_id>.parquet``, written last, marks a slide done.

A part holds the slide's manifest rows and, in its schema metadata, the parameters it was made
with (:meth:`histolib.tiling.slides.SlideJob.params`), the slide's info and notes. A re-run
skips a slide whose part exists with the same parameters; the manifest is assembled from the
parts of the slides given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PART_META_KEY = b"histolib-part"


def part_path(out: str | Path, slide_id: str) -> Path:
    """Where the part of ``slide_id`` lives in the output folder ``out``."""
    return Path(out) / "parts" / f"{slide_id}.parquet"


def part_schema() -> Any:
    """The Arrow schema of a part (the manifest columns, without the geometry)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("tile_id", pa.string()),
            ("slide_id", pa.string()),
            ("slide_path", pa.string()),
            ("x0", pa.int64()),
            ("y0", pa.int64()),
            ("size_px", pa.int64()),
            ("mpp", pa.float64()),
            ("downsample", pa.float64()),
            ("stain", pa.string()),
            ("label", pa.string()),
            ("tissue_fraction", pa.float64()),
            ("annotation_fraction", pa.float64()),
            ("path", pa.string()),
        ]
    )


def read_part(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The rows and info of a finished slide, or None when absent or made otherwise."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(PART_META_KEY, b"{}"))
    except Exception:  # a foreign or damaged part is simply redone
        return None
    if meta.get("params") != json.loads(json.dumps(params, default=str)):
        return None
    return {"table": table, "info": meta.get("info", {}), "notes": meta.get("notes", [])}


def write_part(
    path: Path, rows: dict[str, Any], params: dict[str, Any], info: Any, notes: Any
) -> Any:
    """Write a slide's rows with its parameters, info and notes, atomically; returns the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from histolib.core.atomic import atomic_path

    table = pa.Table.from_pydict(rows, schema=part_schema())
    meta = {
        PART_META_KEY: json.dumps(
            {"params": params, "info": info, "notes": notes}, default=str
        ).encode()
    }
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table


def assemble(parts: list[dict[str, Any]]) -> Any:
    """The manifest GeoDataFrame from per-slide parts (geometry = tile squares, level-0 px)."""
    import geopandas as gpd
    import pyarrow as pa
    import shapely

    from histolib.tileset.manifest import MANIFEST_COLUMNS

    tables = [part["table"].replace_schema_metadata(None) for part in parts]
    table = pa.concat_tables(tables) if tables else part_schema().empty_table()
    frame = table.to_pandas()
    side = frame["size_px"].to_numpy(dtype=float) * frame["downsample"].to_numpy(dtype=float)
    x0 = frame["x0"].to_numpy(dtype=float)
    y0 = frame["y0"].to_numpy(dtype=float)
    geometry = shapely.box(x0, y0, x0 + side, y0 + side)
    return gpd.GeoDataFrame(frame[list(MANIFEST_COLUMNS)], geometry=geometry, crs=None)


#: Entries of a part's parameters that belong to its slide, not to the run's options.
SLIDE_PARAMS = ("slide_path", "slide_size_bytes", "annotation_path", "annotation_size_bytes")


def _options_of(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in SLIDE_PARAMS}


def _manifest_order(out: Path) -> list[str]:
    """The slide ids of the manifest already in ``out``, in its order (empty when none)."""
    from histolib.core.tables import read_table_meta

    path = out / "tiles.parquet"
    if not path.is_file():
        return []
    try:
        slides = read_table_meta(path).get("params", {}).get("slides", {})
    except Exception:  # a damaged manifest is rewritten from the parts
        return []
    return [str(sid) for sid in slides] if isinstance(slides, dict) else []


def cohort_parts(
    out: str | Path, slide_ids: list[str], params: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The finished slides of ``out`` other than ``slide_ids``, to list in the manifest beside
    them (the cohort grows slide by slide), in the order of the manifest already there.

    Parameters
    ----------
    out
        The output folder.
    slide_ids
        The slides of this run.
    params
        The strict options of this run (:func:`histolib.core.options.strict_values`).

    Raises
    ------
    ConfigError
        When a finished slide was tiled with other options: one manifest cannot list both.
    """
    import pyarrow.parquet as pq

    from histolib.errors import ConfigError

    out = Path(out)
    folder = out / "parts"
    if not folder.is_dir():
        return {}
    wanted = json.loads(json.dumps(params, default=str))
    given = set(slide_ids)
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.parquet")):
        slide_id = path.name[: -len(".parquet")]
        if slide_id in given:
            continue
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(PART_META_KEY, b"{}"))
        except Exception:  # a foreign or damaged part is no finished slide
            continue
        there = _options_of(meta.get("params", {}))
        differ = [k for k in sorted(wanted) if there.get(k) != wanted[k]]
        if differ:
            key = differ[0]
            raise ConfigError(
                f"{out} already holds the slide {slide_id!r}, tiled with other options "
                f"({key} {there.get(key)!r} there, {wanted[key]!r} now): one manifest cannot "
                "list both; give that slide too (it is tiled again with these options) or use "
                "another --out",
            )
        found[slide_id] = {
            "table": table,
            "info": meta.get("info", {}),
            "notes": meta.get("notes", []),
        }
    order = [sid for sid in _manifest_order(out) if sid in found]
    order += sorted(sid for sid in found if sid not in order)
    return {sid: found[sid] for sid in order}


def manifest_slides(
    out: str | Path, others: dict[str, dict[str, Any]], done: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every slide of the manifest in its order: those already listed keep their place, then
    the other finished slides, then this run's in the order given."""
    order = [sid for sid in _manifest_order(Path(out)) if sid in others or sid in done]
    order += [sid for sid in others if sid not in order]
    order += [sid for sid in done if sid not in order]
    return {sid: others.get(sid) or done[sid] for sid in order}
