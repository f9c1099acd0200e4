"""``histolib view``: deep-zoom tiles served a second against OpenSlide's own, and the export.

A synthetic slide (``--size`` px square, default 30,000: a 1024 px tissue texture repeated,
pyramidal JPEG TIFF, Q 90, 256 px TIFF tiles, 0.5 um/px) is built once in ``--work``. Then, in
one process and interleaved over ``--repeat`` rounds:

* ``direct``: ``DeepZoomGenerator.get_tile`` called in a loop on ``--tiles`` tiles of the
  full-resolution level never read before (and ``direct+jpeg``: the same, each tile encoded as
  the server encodes it, JPEG Q 80);
* ``served cold``: the same number of other unread tiles fetched from ``histolib.view``'s
  server over one keep-alive HTTP/1.1 connection to 127.0.0.1 (tile cache empty for them);
* ``served warm``: the tiles of ``served cold`` fetched again (from the tile cache).

The server's overhead is the ratio of ``direct+jpeg`` tiles/s to ``served cold`` tiles/s (the
same work plus HTTP). Each configuration reads tiles no other one has read, so OpenSlide's own
tile cache does not favour one.

The export: ``histolib.view.export`` of a ``--export-size`` px slide (default 8192, built the
same way) against pyvips ``dzsave`` alone with the same options, interleaved, best of
``--repeat``.

Usage: ``python benchmarks/view.py [--size 30000] [--tiles 300] [--export-size 8192]
[--repeat 3] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "histolib-bench" / "view"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK, help=f"cache folder ({WORK})")
    parser.add_argument("--size", type=int, default=30000, help="served slide side, px (30000)")
    parser.add_argument("--tiles", type=int, default=300, help="tiles a measurement (300)")
    parser.add_argument("--export-size", type=int, default=8192, help="exported slide, px")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def synthetic_slide(work: Path, size: int) -> Path:
    """A ``size`` px square pyramidal TIFF of a repeated tissue texture (built once)."""
    import numpy as np
    import pyvips

    path = work / f"texture_{size}.tif"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    side = 1024
    rgb = np.empty((side, side, 3), dtype=np.uint8)
    rgb[:] = (236, 200, 220)
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(1500):
        cx, cy, r = [*rng.integers(0, side, 2).tolist(), int(rng.integers(3, 9))]
        rgb[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (90, 60, 140)
    rgb = (rgb.astype(np.int16) + rng.integers(-12, 12, rgb.shape)).clip(0, 255).astype("uint8")
    tile = pyvips.Image.new_from_array(rgb).copy(interpretation="srgb")
    repeats = -(-size // side)
    image = tile.replicate(repeats, repeats).crop(0, 0, size, size)
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tif")
    image.tiffsave(
        str(tmp),
        tile=True,
        pyramid=True,
        compression="jpeg",
        Q=90,
        tile_width=256,
        tile_height=256,
        bigtiff=True,
        xres=2000.0,
        yres=2000.0,
        resunit="cm",
    )
    tmp.rename(path)
    return path


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def time_direct(generator: Any, level: int, tiles: list[tuple[int, int]], *, encode: bool) -> float:
    """Tiles a second of ``get_tile`` (and a JPEG encode, with ``encode``)."""
    start = time.perf_counter()
    for address in tiles:
        image = generator.get_tile(level, address)
        if encode:
            image.convert("RGB").save(io.BytesIO(), format="JPEG", quality=80)
    return _rate(len(tiles), time.perf_counter() - start)


def time_served(port: int, level: int, tiles: list[tuple[int, int]]) -> float:
    """Tiles a second fetched over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    for col, row in tiles:
        conn.request("GET", f"/dzi/s0_files/{level}/{col}_{row}.jpeg")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or body[:2] != b"\xff\xd8":
            raise RuntimeError(f"tile {level}/{col}_{row}: HTTP {response.status}")
    seconds = time.perf_counter() - start
    conn.close()
    return _rate(len(tiles), seconds)


def bench_tiles(slide: Path, n_tiles: int, repeat: int) -> dict[str, Any]:
    """The tile figures (see the module docstring)."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    import histolib.view as hv

    direct = DeepZoomGenerator(openslide.OpenSlide(str(slide)), tile_size=254, overlap=1)
    level = direct.level_count - 1
    cols, rows = direct.level_tiles[level]
    addresses = [(c, r) for c in range(cols) for r in range(rows)]
    random.Random(0).shuffle(addresses)
    needed = 3 * n_tiles * repeat
    if needed > len(addresses):
        raise SystemExit(f"--tiles x 3 x --repeat = {needed} > the {len(addresses)} tiles")
    urls: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=hv.serve,
        args=(hv.ViewOptions(slide=slide),),
        kwargs={"port": 0, "ready": urls.append, "stop": stop},
    )
    thread.start()
    while not urls:
        time.sleep(0.05)
    port = int(urls[0].rstrip("/").rsplit(":", 1)[1])
    rates: dict[str, list[float]] = {"direct": [], "direct+jpeg": [], "cold": [], "warm": []}
    try:
        for round_ in range(repeat):
            base = 3 * n_tiles * round_
            sets = [addresses[base + k * n_tiles : base + (k + 1) * n_tiles] for k in range(3)]
            rates["direct"].append(time_direct(direct, level, sets[0], encode=False))
            rates["direct+jpeg"].append(time_direct(direct, level, sets[1], encode=True))
            rates["cold"].append(time_served(port, level, sets[2]))
            rates["warm"].append(time_served(port, level, sets[2]))
    finally:
        stop.set()
        thread.join()
    best = {key: max(values) for key, values in rates.items()}
    return {
        "level": level,
        "tiles_per_measurement": n_tiles,
        "tiles_per_s": best,
        "all_rounds": rates,
        "overhead_cold_vs_direct_jpeg": best["direct+jpeg"] / best["cold"],
        "overhead_cold_vs_get_tile": best["direct"] / best["cold"],
        "warm_over_cold": best["warm"] / best["cold"],
    }


def bench_export(slide: Path, repeat: int) -> dict[str, Any]:
    """Seconds of ``histolib.view.export`` against ``dzsave`` alone (best of ``repeat``)."""
    import pyvips

    import histolib.view as hv

    seconds: dict[str, list[float]] = {"export": [], "dzsave": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="histolib-view-bench-") as tmp:
            start = time.perf_counter()
            pyvips.Image.new_from_file(str(slide), access="sequential").dzsave(
                f"{tmp}/alone",
                layout="dz",
                suffix=".jpeg[Q=80]",
                tile_size=254,
                overlap=1,
                depth="onepixel",
                keep=0,
            )
            seconds["dzsave"].append(time.perf_counter() - start)
            shutil.rmtree(f"{tmp}/alone_files")
            start = time.perf_counter()
            hv.export(f"{tmp}/view", hv.ViewOptions(slide=slide))
            seconds["export"].append(time.perf_counter() - start)
    best = {key: min(values) for key, values in seconds.items()}
    return {"seconds": best, "all_rounds": seconds, "ratio": best["export"] / best["dzsave"]}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    slide = synthetic_slide(args.work, args.size)
    tiles = bench_tiles(slide, args.tiles, args.repeat)
    rates = tiles["tiles_per_s"]
    print(f"slide {args.size} x {args.size} px, level {tiles['level']}, {args.tiles} tiles each")
    for key in ("direct", "direct+jpeg", "cold", "warm"):
        print(f"  {key:12s} {rates[key]:8.1f} tiles/s")
    print(
        f"  server overhead (direct+jpeg / served cold): "
        f"{tiles['overhead_cold_vs_direct_jpeg']:.2f}x;"
        f" get_tile / served cold: {tiles['overhead_cold_vs_get_tile']:.2f}x;"
        f" warm / cold: {tiles['warm_over_cold']:.1f}x"
    )
    export = bench_export(synthetic_slide(args.work, args.export_size), args.repeat)
    print(
        f"export of {args.export_size} px: {export['seconds']['export']:.2f} s, dzsave alone "
        f"{export['seconds']['dzsave']:.2f} s, ratio {export['ratio']:.2f}"
    )
    if args.json:
        figures = {
            "size": args.size,
            "export_size": args.export_size,
            "tiles": tiles,
            "export": export,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
