"""Shared helpers of the QuPath / annotation tests: GeoJSON documents, manifests, libraries."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """A closed rectangular ring (x0, y0) - (x1, y1)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def polygon(x0: float, y0: float, x1: float, y1: float, *holes: list) -> dict[str, Any]:
    """A GeoJSON Polygon rectangle with optional hole rings."""
    return {"type": "Polygon", "coordinates": [ring(x0, y0, x1, y1), *holes]}


def feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """A GeoJSON Feature with the given properties."""
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write_json(path: Path, doc: Any, *, gz: bool = False) -> Path:
    """Write ``doc`` as JSON (gzip-compressed when ``gz``)."""
    text = json.dumps(doc)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_manifest_for(
    out_dir: Path,
    *,
    slide_id: str = "slide1",
    cols: int = 3,
    rows: int = 2,
    size: int = 256,
    downsample: float = 2.0,
    x_origin: int = 1000,
    y_origin: int = 500,
    labels: tuple[str, ...] = ("positive", "negative", "boundary"),
) -> Path:
    """Write a small tile manifest (no images) of ``cols x rows`` tiles; returns its path."""
    import geopandas as gpd
    from shapely.geometry import box

    from histolib.tileset.manifest import tile_id, write_manifest

    step = size * downsample
    records = []
    geoms = []
    for r in range(rows):
        for c in range(cols):
            x0 = int(x_origin + c * step)
            y0 = int(y_origin + r * step)
            records.append(
                {
                    "tile_id": tile_id(slide_id, x0, y0, size),
                    "slide_id": slide_id,
                    "slide_path": f"/data/{slide_id}.svs",
                    "x0": x0,
                    "y0": y0,
                    "size_px": size,
                    "mpp": 0.5,
                    "downsample": downsample,
                    "stain": "he",
                    "label": labels[(r * cols + c) % len(labels)],
                    "tissue_fraction": 0.5 + 0.05 * c,
                    "annotation_fraction": 0.1 * r,
                    "path": "",
                }
            )
            geoms.append(box(x0, y0, x0 + step, y0 + step))
    gdf = gpd.GeoDataFrame(records, geometry=geoms)
    path = out_dir / "tiles.parquet"
    write_manifest(gdf, path, params={"mpp": 0.5, "size": size})
    return path


def _tile_rows(tile: Any, cells: list[tuple[str, Any, Any, float, str]]) -> list[dict[str, Any]]:
    """The cell-library rows of one manifest tile, as ``histolib library`` writes them: one
    ``(label, centre, box, sigma, pass)`` a cell, centre and box in tile px."""
    import numpy as np

    from histolib.library.detect import TileCells, library_rows

    found = TileCells(
        boxes=np.asarray([c[2] for c in cells], dtype=int).reshape(-1, 4),
        centres=np.asarray([c[1] for c in cells], dtype=float).reshape(-1, 2),
        labels=[c[0] for c in cells],
        sigma=np.asarray([c[3] for c in cells], dtype=float),
        passes=[c[4] for c in cells],
        info={},
    )
    return library_rows(found, tile)


def library_from_manifest(
    manifest_path: Path, *, per_tile: int = 4, box: int = 48, seed: int = 0
) -> Any:
    """A cell library GeoDataFrame with ``per_tile`` cells in every tile of a manifest."""
    import numpy as np

    from histolib.library.detect import rows_to_frame
    from histolib.tileset.manifest import read_manifest

    tiles, _ = read_manifest(manifest_path)
    rng = np.random.default_rng(seed)
    records = []
    half = box / 2
    for tile in tiles.itertuples(index=False):
        cells = []
        for k in range(per_tile):
            # integer centres and boxes [c - 24, c + 24), as the authors' library has them
            tx = float(rng.integers(half, tile.size_px - half))
            ty = float(rng.integers(half, tile.size_px - half))
            label = "cancer" if k % 2 == 0 else "normal"
            bx0, by0 = round(tx - half), round(ty - half)
            sigma = 10.5 if label == "cancer" else 1.5
            cells.append((label, (tx, ty), (bx0, by0, bx0 + box, by0 + box), sigma, f"he_{label}"))
        records += _tile_rows(tile, cells)
    return rows_to_frame(records)


def _reference_cells(shared_data: Path, name: str) -> list[dict[str, Any]]:
    """The authors' boxes of a real reference tile, with the LoG sigma of each box's blob."""
    doc = json.loads((shared_data / "reference" / f"{name}.json").read_text())
    radius: dict[tuple[int, int], float] = {}
    for key, blobs in doc["blobs"].items():
        if key.endswith("_rc_radius"):
            for r, c, rad in blobs:
                radius[(int(r), int(c))] = float(rad)
    cells = []
    for b in doc["boxes"]:
        centre = (int(b["center_row"]), int(b["center_col"]))
        cells.append({**b, "sigma": radius.get(centre, float("nan")) / 2**0.5})
    return cells


def reference_library(
    shared_data: Path, out_dir: Path, *, cols: int = 3, rows: int = 2
) -> tuple[Path, Any]:
    """A manifest over the real CMU-1-Small-Region slide and a library of real detections.

    Tiles are 256 px at 0.5 um/px on the 0.499 um/px Aperio slide (downsample 1.002..., not an
    integer); each tile carries the boxes the authors' logic found on the real H&E or IHC
    reference tile (alternating), with their real sigmas. Returns ``(manifest_path, library)``.
    """
    from histolib.library.detect import rows_to_frame

    slide_mpp = 0.499
    path = write_manifest_for(
        out_dir,
        slide_id="CMU-1-Small-Region",
        cols=cols,
        rows=rows,
        downsample=0.5 / slide_mpp,
        x_origin=300,
        y_origin=400,
    )
    from histolib.tileset.manifest import read_manifest

    tiles, _ = read_manifest(path)
    he, ihc = _reference_cells(shared_data, "he_000"), _reference_cells(shared_data, "ihc_000")
    records = []
    for k, tile in enumerate(tiles.itertuples(index=False)):
        stain = "he" if k % 2 == 0 else "ihc"
        cells = []
        for b in he if stain == "he" else ihc:
            label = "cancer" if b["label"] == 1 else "normal"
            tx, ty = float(b["center_col"]), float(b["center_row"])
            box = (b["xmin"], b["ymin"], b["xmax"], b["ymax"])
            cells.append((label, (tx, ty), box, b["sigma"], f"{stain}_{label}"))
        records += _tile_rows(tile, cells)
    return path, rows_to_frame(records)
