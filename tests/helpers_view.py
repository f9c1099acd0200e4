"""Test helpers for ``histolib view``: a small H&E slide, its "virtual IHC" and every product
(contours, manifest, cell library, evaluation tiles.csv) with known counts, plus a browser
driver that reads the page's state back.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers_tile import tissue_image, write_contours, write_slide

SLIDE_W, SLIDE_H = 1536, 1024
TILE = 256
N_CONTOURS = 2
#: Cells per tile of the library (only the tiles of the first row have cells).
CELLS_PER_TILE = 3
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@dataclass
class ViewInputs:
    """The files of a view and how many shapes each overlay must draw."""

    slide: Path
    virtual: Path
    annotations: Path
    tiles: Path
    library: Path
    evaluation: Path
    counts: dict[str, int]

    def options(self) -> dict[str, Any]:
        return {
            "annotations": self.annotations,
            "tiles": self.tiles,
            "library": self.library,
            "evaluation": self.evaluation,
        }

    def view_options(self, *, virtual: bool = True) -> Any:
        """The :class:`histolib.view.ViewOptions` of these inputs (with or without the virtual
        slide)."""
        from histolib.view import ViewOptions

        return ViewOptions(
            slide=self.slide, virtual=self.virtual if virtual else None, **self.options()
        )


def _grid() -> list[tuple[int, int]]:
    return [(x, y) for y in range(0, SLIDE_H, TILE) for x in range(0, SLIDE_W, TILE)]


def _manifest(path: Path, slide: Path) -> list[str]:
    import geopandas as gpd
    from shapely.geometry import box

    from histolib.tileset.manifest import tile_id, write_manifest

    rows = []
    for i, (x, y) in enumerate(_grid()):
        rows.append(
            {
                "tile_id": tile_id("he", x, y, TILE),
                "slide_id": "he",
                "slide_path": str(slide),
                "x0": x,
                "y0": y,
                "size_px": TILE,
                "mpp": 0.5,
                "downsample": 1.0,
                "stain": "he",
                "label": ("tumour", "normal", "boundary")[i % 3],
                "tissue_fraction": 1.0,
                "annotation_fraction": 0.0,
                "path": "",
                "geometry": box(x, y, x + TILE, y + TILE),
            }
        )
    rows.append({**rows[0], "tile_id": "other_x0_y0_s256", "slide_id": "other"})
    write_manifest(gpd.GeoDataFrame(rows, geometry="geometry"), path, params={})
    return [row["tile_id"] for row in rows[:-1]]


def _library(path: Path, ids: list[str]) -> int:
    import geopandas as gpd
    from shapely.geometry import box

    from histolib.library.cellio import write_library

    rows = []
    for tid, (x, y) in zip(ids, _grid(), strict=True):
        if y:
            continue
        for k in range(CELLS_PER_TILE):
            cx, cy = x + 40 + 60 * k, y + 100
            rows.append(
                {
                    "tile_id": tid,
                    "slide_id": "he",
                    "label": ("cancer", "normal")[k % 2],
                    "x": cx,
                    "y": cy,
                    "tile_x": cx - x,
                    "tile_y": cy - y,
                    "box_x0": cx - x - 24,
                    "box_y0": 76,
                    "box_x1": cx - x + 24,
                    "box_y1": 124,
                    "sigma": 3.0,
                    "pass": "he_normal",
                    "tile_x0": x,
                    "tile_y0": y,
                    "downsample": 1.0,
                    "geometry": box(cx - 24, cy - 24, cx + 24, cy + 24),
                }
            )
    write_library(gpd.GeoDataFrame(rows, geometry="geometry"), path, params={})
    return len(rows)


def _evaluation(folder: Path, ids: list[str]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    scored = ids[::2]
    with (folder / "tiles.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["checkpoint", "tile_id", "slide_id", "dice"])
        writer.writeheader()
        for i, tid in enumerate(scored):
            writer.writerow(
                {
                    "checkpoint": "m",
                    "tile_id": tid,
                    "slide_id": "he",
                    "dice": "" if i == 0 else f"{i / len(scored):.3f}",
                }
            )
    return len(scored)


def make_view_inputs(folder: Path) -> ViewInputs:
    """A 1536 x 1024 px H&E slide ``he.tif`` (0.5 um/px), a brownish twin ``virtual.tif`` at
    1 um/px (768 x 512 px) and the products of the H&E."""
    from shapely.geometry import Polygon

    folder.mkdir(parents=True, exist_ok=True)
    rgb = tissue_image(SLIDE_W, SLIDE_H, discs=[(400, 500, 300), (1100, 500, 280)])
    slide = write_slide(folder / "he.tif", rgb)
    # The "virtual IHC" at half the resolution (1 um/px): the viewers and overlays must scale.
    brown = (rgb[::2, ::2].astype(np.int16) - np.array([0, 40, 90], dtype=np.int16)).clip(0, 255)
    virtual = write_slide(folder / "virtual.tif", brown.astype(np.uint8), mpp=1.0)
    annotations = write_contours(
        folder / "he.geojson",
        [
            Polygon([(200, 300), (600, 300), (600, 700), (200, 700)]),
            Polygon([(900, 300), (1300, 320), (1250, 700)]),
        ],
    )
    tiles = folder / "tiles.parquet"
    ids = _manifest(tiles, slide)
    n_cells = _library(folder / "cells.geojson", ids)
    n_dice = _evaluation(folder / "evaluation", ids)
    counts = {"contours": N_CONTOURS, "tiles": len(ids), "cells": n_cells, "dice0": n_dice}
    return ViewInputs(
        slide, virtual, annotations, tiles, folder / "cells.geojson", folder / "evaluation", counts
    )


@contextlib.contextmanager
def serving(inputs: ViewInputs) -> Iterator[str]:
    """``histolib.view.serve`` of ``inputs`` on a free loopback port, in a thread; yields the
    page's URL and stops the server (checking its thread ends) on exit."""
    import histolib.view as hv

    urls: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=hv.serve,
        args=(inputs.view_options(),),
        kwargs={"port": 0, "ready": urls.append, "stop": stop},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not urls and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert urls, "the server did not start"
        yield urls[0]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def report_check() -> Any:
    """benchmarks/report_check.py (its headless-Chromium driver), imported."""
    return importlib.import_module("benchmarks.report_check")


def evaluate(browser: Any, session: str, expression: str) -> Any:
    """The value of a JavaScript expression in the page."""
    reply = browser.send(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
    )
    return reply["result"].get("value")


def wait_for(browser: Any, session: str, expression: str, *, timeout: float = 30.0) -> Any:
    """Poll ``expression`` until it is truthy; returns its value (the last one on timeout)."""
    deadline = time.monotonic() + timeout
    value = evaluate(browser, session, expression)
    while not value and time.monotonic() < deadline:
        time.sleep(0.1)
        value = evaluate(browser, session, expression)
    return value


def failed_requests(events: list[dict[str, Any]]) -> list[str]:
    """The URLs of requests that failed or answered >= 400 (from Network events)."""
    failed = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.loadingFailed":
            failed.append(f"{params.get('requestId')}: {params.get('errorText')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']}: {params['response']['status']}")
    return failed
