"""Benchmark ``histolib export qupath`` / ``import qupath`` on a large cell library.

Builds a synthetic cell library of ``--cells`` rows (one slide, 80 cells a tile), then measures:

- histolib's streaming export (``export_qupath``: one feature at a time to disk);
- a baseline that builds the whole FeatureCollection in memory and ``json.dump``s it (what a
  naive exporter does, the same features);
- ``geopandas.GeoDataFrame.to_file(driver="GeoJSON")`` (pyogrio) of the library, a second
  baseline (plain GeoJSON, not QuPath's object model);
- the import of the exported file back into a library (``import_qupath``).

Wall time is measured in a run without tracing; peak Python memory (``tracemalloc``) in a
second run of each, in a fresh process so earlier runs do not pollute it. Prints the figures and
the ratios histolib / baseline.

    python benchmarks/qupath_export.py                # 200,000 cells
    python benchmarks/qupath_export.py --cells 20000  # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(work: Path, n_cells: int, per_tile: int = 80, seed: int = 0) -> tuple[Path, Path]:
    """Write a manifest and a library of ``n_cells`` cells; returns their paths."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from histolib.library.cellio import write_library
    from histolib.tileset.manifest import tile_id, write_manifest

    rng = np.random.default_rng(seed)
    n_tiles = -(-n_cells // per_tile)
    side = int(np.ceil(np.sqrt(n_tiles)))
    size, ds = 256, 1.0
    idx = np.arange(n_tiles)
    x0 = (idx % side) * size
    y0 = (idx // side) * size
    slide = "bench_slide"
    tile_ids = np.array([tile_id(slide, a, b, size) for a, b in zip(x0, y0, strict=True)])
    manifest = gpd.GeoDataFrame(
        {
            "tile_id": tile_ids,
            "slide_id": slide,
            "slide_path": "/data/bench_slide.svs",
            "x0": x0,
            "y0": y0,
            "size_px": size,
            "mpp": 0.5,
            "downsample": ds,
            "stain": "he",
            "label": rng.choice(["positive", "negative", "boundary"], n_tiles),
            "tissue_fraction": rng.uniform(0.5, 1, n_tiles),
            "annotation_fraction": rng.uniform(0, 1, n_tiles),
            "path": "",
        },
        geometry=shapely.box(x0, y0, x0 + size, y0 + size),
    )
    manifest_path = write_manifest(manifest, work / "tiles.parquet", params={})
    tile_of = np.repeat(idx, per_tile)[:n_cells]
    cx = rng.integers(24, size - 24, n_cells)
    cy = rng.integers(24, size - 24, n_cells)
    cancer = rng.random(n_cells) < 0.3
    bx0, by0 = cx - 24, cy - 24
    gx0, gy0 = x0[tile_of], y0[tile_of]
    library = gpd.GeoDataFrame(
        {
            "tile_id": tile_ids[tile_of],
            "slide_id": slide,
            "label": np.where(cancer, "cancer", "normal"),
            "x": gx0 + cx * ds,
            "y": gy0 + cy * ds,
            "tile_x": cx.astype(float),
            "tile_y": cy.astype(float),
            "box_x0": bx0,
            "box_y0": by0,
            "box_x1": bx0 + 48,
            "box_y1": by0 + 48,
            "sigma": np.where(cancer, rng.uniform(10, 12, n_cells), rng.uniform(1, 2, n_cells)),
            "pass": np.where(cancer, "he_cancer", "he_normal"),
            "tile_x0": gx0,
            "tile_y0": gy0,
            "downsample": ds,
        },
        geometry=shapely.box(gx0 + bx0, gy0 + by0, gx0 + bx0 + 48, gy0 + by0 + 48),
    )
    library_path = write_library(library, work / "library.parquet", params={})
    return manifest_path, library_path


def run_histolib(library: Path, out: Path, cells: str) -> None:
    from histolib.qupath.export import export_qupath

    export_qupath([library], out=out, cells=cells, class_names={"cancer": "Tumor"})


def run_in_memory(library: Path, out: Path, cells: str) -> None:
    """Baseline: the same features, collected in a list and dumped in one piece."""
    from histolib.library.cellio import read_library
    from histolib.qupath.export import _cell_features

    gdf, _ = read_library(library)
    features = list(_cell_features(gdf, range(len(gdf)), {"cancer": "Tumor"}, cells))
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"type": "FeatureCollection", "features": features})
    (out / "bench_slide.geojson").write_text(text)


def run_geopandas(library: Path, out: Path, cells: str) -> None:
    """Baseline: geopandas/pyogrio GeoJSON writer (plain GeoJSON, no QuPath object model)."""
    import warnings

    from histolib.library.cellio import read_library

    gdf, _ = read_library(library)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "crs was not provided": px, not a CRS
        gdf.to_file(out / "plain.geojson", driver="GeoJSON")


def run_import(geojson: Path, manifest: Path, out: Path) -> None:
    from histolib.qupath.importer import import_qupath

    import_qupath([geojson], tiles=manifest, out=out, class_names={"cancer": "Tumor"})


RUNNERS = {
    "histolib": run_histolib,
    "in_memory": run_in_memory,
    "geopandas": run_geopandas,
}


def _measure(kind: str, args: tuple[Any, ...], trace: bool, queue: Any) -> None:
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    if kind == "import":
        run_import(*args)
    else:
        RUNNERS[kind](*args)
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    queue.put((wall, peak))


def measure(kind: str, *args: Any) -> tuple[float, float]:
    """(wall seconds untraced, peak traced MiB), each in a fresh process."""
    ctx = mp.get_context("spawn")
    results = []
    for trace in (False, True):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(kind, args, trace, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    return results[0][0], results[1][1] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000, help="library size (cells)")
    parser.add_argument("--mode", choices=("detection", "cell"), default="detection")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="histolib-bench-qupath-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest, library = build(work, args.cells)
    print(f"library: {args.cells} cells, {library.stat().st_size / 2**20:.1f} MiB parquet")
    figures: dict[str, Any] = {"cells": args.cells, "mode": args.mode}
    for kind in RUNNERS:
        out = work / f"out_{kind}"
        wall, peak = measure(kind, library, out, args.mode)
        size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
        figures[kind] = {"seconds": wall, "peak_mib": peak, "output_mib": size}
        print(
            f"{kind:>10}: {wall:6.2f} s  {args.cells / wall:9.0f} cells/s  "
            f"peak {peak:7.1f} MiB  output {size:6.1f} MiB"
        )
    exported = work / "out_histolib" / "bench_slide.geojson"
    wall, peak = measure("import", exported, manifest, work / "imported.parquet")
    figures["import"] = {"seconds": wall, "peak_mib": peak}
    print(f"{'import':>10}: {wall:6.2f} s  {args.cells / wall:9.0f} cells/s  peak {peak:7.1f} MiB")
    h = figures["histolib"]
    for base in ("in_memory", "geopandas"):
        b = figures[base]
        print(
            f"histolib / {base}: time x{h['seconds'] / b['seconds']:.2f}, "
            f"peak memory x{h['peak_mib'] / b['peak_mib']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
