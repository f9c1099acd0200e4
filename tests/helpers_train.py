"""Tiny training data for the trainer tests: 64 px tiles, manifests and cell libraries.

Built directly with histolib.tileset.manifest / histolib.library.cellio so the tests need no other
helper's
code: each domain gets a few tiles with cancer and normal boxes, a few with normal boxes only
and one with no cell at all (optionally tiles with cancer boxes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TILE = 64
BOX = 16


@dataclass
class TinyDomain:
    manifest: Path
    library: Path
    folder: Path
    n_tiles: int
    kinds: dict[str, str]  # tile_id -> "mixed" | "cancer" | "normal" | "empty"


def _tile_image(rng: np.random.Generator, stain: str) -> np.ndarray:
    base = np.array([200, 150, 200] if stain == "he" else [220, 200, 180], dtype=np.float32)
    img = base + rng.normal(0, 12, size=(TILE, TILE, 3))
    for _ in range(6):
        cy, cx = rng.integers(6, TILE - 6, size=2)
        yy, xx = np.ogrid[:TILE, :TILE]
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < 20
        img[disk] = [90, 40, 110] if stain == "he" else [120, 80, 40]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_tiny_domain(
    root: Path,
    *,
    stain: str,
    n_mixed: int = 3,
    n_normal: int = 2,
    n_empty: int = 1,
    n_cancer: int = 0,
    seed: int = 0,
    library_format: str = "parquet",
) -> TinyDomain:
    """Write ``root/<stain>/`` tiles (PNG), ``tiles.parquet`` and a cell library.

    Tile kinds: ``mixed`` (2 cancer + 2 normal boxes), ``normal`` (3 normal boxes), ``empty``
    (no cell), ``cancer`` (3 cancer boxes; after the others). Boxes are 16 px squares inside
    the 64 px tiles; the slide mpp is 0.5.
    """
    import geopandas as gpd
    from PIL import Image
    from shapely.geometry import box

    from histolib.library.cellio import write_library
    from histolib.tileset.manifest import tile_id, write_manifest

    rng = np.random.default_rng(seed)
    out = root / stain
    tiles_dir = out / "tiles" / f"slide_{stain}"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    kind_list = (
        ["mixed"] * n_mixed + ["normal"] * n_normal + ["empty"] * n_empty + ["cancer"] * n_cancer
    )
    for i, kind in enumerate(kind_list):
        x0, y0 = i * TILE, 0
        tid = tile_id(f"slide_{stain}", x0, y0, TILE)
        kinds[tid] = kind
        Image.fromarray(_tile_image(rng, stain)).save(tiles_dir / f"{tid}.png")
        rows.append(
            {
                "tile_id": tid,
                "slide_id": f"slide_{stain}",
                "slide_path": f"slide_{stain}.tif",
                "x0": x0,
                "y0": y0,
                "size_px": TILE,
                "mpp": 0.5,
                "downsample": 1.0,
                "stain": stain,
                "label": "positive" if kind in ("mixed", "cancer") else "negative",
                "tissue_fraction": 1.0,
                "annotation_fraction": 0.5 if kind in ("mixed", "cancer") else 0.0,
                "path": f"tiles/slide_{stain}/{tid}.png",
                "geometry": box(x0, y0, x0 + TILE, y0 + TILE),
            }
        )
        labels = {
            "mixed": ["cancer", "cancer", "normal", "normal"],
            "normal": ["normal"] * 3,
            "cancer": ["cancer"] * 3,
        }
        for label in labels.get(kind, []):
            bx, by = (int(v) for v in rng.integers(0, TILE - BOX, size=2))
            cells.append(
                {
                    "tile_id": tid,
                    "slide_id": f"slide_{stain}",
                    "label": label,
                    "x": float(x0 + bx + BOX / 2),
                    "y": float(y0 + by + BOX / 2),
                    "tile_x": float(bx + BOX / 2),
                    "tile_y": float(by + BOX / 2),
                    "box_x0": bx,
                    "box_y0": by,
                    "box_x1": bx + BOX,
                    "box_y1": by + BOX,
                    "sigma": 2.0,
                    "pass": f"{stain}_{label}",
                    "tile_x0": x0,
                    "tile_y0": y0,
                    "downsample": 1.0,
                    "geometry": box(x0 + bx, y0 + by, x0 + bx + BOX, y0 + by + BOX),
                }
            )
    manifest = write_manifest(
        gpd.GeoDataFrame(rows, geometry="geometry"), out / "tiles.parquet", params={}
    )
    library = write_library(
        gpd.GeoDataFrame(cells, geometry="geometry"),
        out / f"library.{library_format}",
        params={},
    )
    return TinyDomain(
        manifest=manifest,
        library=library,
        folder=out / "tiles",
        n_tiles=len(kind_list),
        kinds=kinds,
    )


def make_tiny_pair(root: Path, **kwargs: Any) -> tuple[TinyDomain, TinyDomain]:
    """An H&E and an IHC tiny domain under ``root``."""
    return (
        make_tiny_domain(root, stain="he", seed=1, **kwargs),
        make_tiny_domain(root, stain="ihc", seed=2, **kwargs),
    )


def tiny_options(he: TinyDomain, ihc: TinyDomain, out: Path, **overrides: Any) -> dict:
    """Trainer options of the tiny configuration (ngf/ndf 8, 2 blocks, batch 4, 4 boxes)."""
    options: dict[str, Any] = {
        "he": str(he.manifest),
        "ihc": str(ihc.manifest),
        "he_library": str(he.library),
        "ihc_library": str(ihc.library),
        "out": str(out),
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 4,
        "n_blocks": 2,
        "ngf": 8,
        "ndf": 8,
        "boxes_per_tile": 4,
        "workers": 0,
        "device": "cpu",
        "log_every": 1,
        "sample_every": 1000,
        "seed": 3,
    }
    options.update(overrides)
    return options


def quiet(_message: str) -> None:
    """A ``log`` callback for :func:`histolib_train.training.loop.train` that prints nothing."""


def read_metrics(run: Path) -> list[dict[str, str]]:
    """The rows of a run folder's ``metrics.csv``."""
    import csv

    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def train_inputs(pair: tuple[TinyDomain, TinyDomain]) -> list[str]:
    """The ``histolib train`` options naming a tiny pair's manifests and libraries."""
    he, ihc = pair
    return [
        "--he",
        str(he.manifest),
        "--ihc",
        str(ihc.manifest),
        "--he-library",
        str(he.library),
        "--ihc-library",
        str(ihc.library),
    ]
