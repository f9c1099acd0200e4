"""Benchmark ``histolib tile`` on a large real-looking slide against plain OpenSlide loops.

The slide is built once (cached in ``--work``) from the real Aperio slide
``tests/data/slides/CMU-1-Small-Region.svs`` (vendored) with pyvips: 2x2 mirrored copies (original,
flipped horizontally, vertically, both) repeated over the central part of a ``--size`` x
``--size`` canvas, a white margin around it (``--margin`` of each side in total, 10% a side by
default), written as a pyramidal JPEG TIFF (Q 90, 256 px tiles, BigTIFF) with the source's mpp
in its resolution tags. The Aperio ImageDescription pyvips copies from the SVS is dropped, so
OpenSlide reads the result as a generic TIFF with the right dimensions and mpp.

Measured in one run, on the same slide and the same tile grid:

* ground truth: the tissue fraction of every grid tile counted from full-resolution pixels
  (a pixel is tissue when its darkest channel is below ``--white``), streamed row by row
  through pyvips; tiles at least half tissue are the truth for recall and precision of the
  tiles ``histolib tile`` keeps (default ``--min-tissue 0.5``);
* baselines: a plain loop of OpenSlide ``read_region`` over every grid tile (1 process, and
  2 processes splitting the rows), and the same reads (``ceil(step)`` level-0 px, PIL box
  resize to 256 px, as histolib reads a 0.499 um/px slide at 0.5) over the truth tissue tiles
  plus PNG encoding and writing with the encoder histolib uses (PIL, ``compress_level`` 6
  and 1; histolib's default is 1);
* ``histolib tile`` (as a subprocess, the user's command, interpreter start and imports
  included) with ``--workers 1`` and ``2`` (PNG, compared with the baseline of its zlib level)
  and ``--format none``; and ``histolib.tiling.tiler.tile_slides`` (``image_format="none"``)
  timed inside a process (imports excluded, as CLAM times its segmentation and patching), compared
  with CLAM's ``create_patches_fp`` figure for this slide (1.7 s with its tcga preset,
  4,972 patches, quoted from issue 2: CLAM is not installed here).

Every run is timed in wall-clock seconds and in CPU seconds (user + system, the process and
its children): on a machine shared with other work the wall-clock rates are noisy, while the
one-process CPU ratios barely move; the 2-process speed-ups need an otherwise idle machine.

Run ``python benchmarks/tiling.py`` (30000 px, a few minutes) or ``--size 8000`` for a
quick run; ``--json OUT`` writes every figure; ``--repeat N`` keeps the fastest of N runs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "slides" / "CMU-1-Small-Region.svs"
SLIDE_MPP = 0.499  # CMU-1-Small-Region.svs, kept in the benchmark slide
CLAM_SECONDS = 1.7  # CLAM create_patches_fp, tcga preset, on this kind of slide (issue 2)
CLAM_PATCHES = 4972


# --------------------------------------------------------------------------- slide


def build_slide(
    work: Path,
    *,
    size: int,
    source: Path = SOURCE,
    margin: float = 0.2,
    mpp: float = SLIDE_MPP,
) -> Path:
    """Build (or reuse) the benchmark slide ``work/bench_<size>_m<margin %>_<source>.tif``.

    Parameters
    ----------
    work
        Cache folder; the slide is written there once, atomically (temporary name, rename).
    size
        Side of the square slide in level-0 px.
    source
        The real slide whose 2x2 mirrored copies tile the tissue area.
    margin
        Total white margin as a fraction of the side (half of it on each side).
    mpp
        Microns per pixel written to the TIFF resolution tags.

    Returns
    -------
    Path
        The pyramidal TIFF.
    """
    import pyvips

    from histolib.slide.pyramid import save_pyramidal_tiff

    work.mkdir(parents=True, exist_ok=True)
    target = work / f"bench_{size}_m{round(margin * 100)}_{source.stem}.tif"
    if target.exists():
        return target
    src = pyvips.Image.new_from_file(str(source))
    if src.hasalpha():
        src = src.flatten(background=[255, 255, 255])
    src = src.extract_band(0, n=3)
    top = src.join(src.fliphor(), "horizontal")
    block = top.join(top.flipver(), "vertical")
    side_margin = round(size * margin / 2)
    content = size - 2 * side_margin
    across = math.ceil(content / block.width)
    down = math.ceil(content / block.height)
    tissue = block.replicate(across, down).crop(0, 0, content, content)
    slide = tissue.embed(
        side_margin, side_margin, size, size, extend="background", background=[255, 255, 255]
    )
    for field in slide.get_fields():
        if field.startswith(("openslide.", "aperio.")):
            slide.remove(field)
    # A plain description replaces the Aperio header pyvips copied from the SVS (with it,
    # OpenSlide would read the result as an Aperio slide with the wrong dimensions).
    save_pyramidal_tiff(slide, target, mpp=mpp, description="histolib tiling benchmark")
    return target


def check_slide(path: Path, *, size: int, mpp: float) -> dict[str, Any]:
    """Open the slide with OpenSlide and check vendor, dimensions and mpp; return them."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        props = dict(slide.properties)
        info = {
            "vendor": props.get("openslide.vendor"),
            "dimensions": list(slide.dimensions),
            "mpp_x": float(props.get("openslide.mpp-x", "nan")),
            "mpp_y": float(props.get("openslide.mpp-y", "nan")),
            "levels": slide.level_count,
        }
    problems = []
    if info["vendor"] != "generic-tiff":
        problems.append(f"vendor {info['vendor']!r}, expected 'generic-tiff'")
    if info["dimensions"] != [size, size]:
        problems.append(f"dimensions {info['dimensions']}, expected {[size, size]}")
    if not abs(info["mpp_x"] - mpp) < 1e-3 or not abs(info["mpp_y"] - mpp) < 1e-3:
        problems.append(f"mpp {info['mpp_x']}/{info['mpp_y']}, expected {mpp}")
    if problems:
        raise SystemExit(f"benchmark slide {path} is wrong: " + "; ".join(problems))
    return info


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """Non-overlapping tile grid in level-0 px: origins ``xs`` x ``ys``, square ``extent``."""

    xs: np.ndarray
    ys: np.ndarray
    extent: int
    step: float

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return len(self.ys), len(self.xs)

    def origins(self) -> list[tuple[int, int]]:
        """Every tile origin (x0, y0), row by row."""
        return [(int(x), int(y)) for y in self.ys for x in self.xs]


def tile_grid(
    width: int, height: int, *, size: int = 256, mpp: float = 0.5, slide_mpp: float
) -> Grid:
    """Grid of ``size`` px tiles at ``mpp`` over a ``width`` x ``height`` level-0 slide.

    The grid ``histolib tile`` uses: ``step = size * mpp / slide_mpp`` level-0 px a tile,
    ``floor(width / step)`` whole tiles across, origins ``round(i * step)``. A tile is read as
    ``extent = ceil(step)`` level-0 px (257 for 256 px at 0.5 um/px on a 0.499 um/px slide).
    """
    step = size * mpp / slide_mpp
    extent = math.ceil(step - 1e-9)
    cols = math.floor(width / step + 1e-9)
    rows = math.floor(height / step + 1e-9)
    xs = np.array([round(i * step) for i in range(cols)], dtype=np.int64)
    ys = np.array([round(j * step) for j in range(rows)], dtype=np.int64)
    return Grid(xs=xs, ys=ys, extent=extent, step=step)


def row_fractions(mask_rows: np.ndarray, xs: np.ndarray, extent: int) -> np.ndarray:
    """Fraction of True pixels in each ``extent``-wide window starting at ``xs``.

    ``mask_rows`` is a (rows, width) boolean strip (numpy row, col = y, x) covering one row
    of tiles; returns one fraction a tile.
    """
    per_column = np.asarray(mask_rows, dtype=bool).sum(axis=0, dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(per_column)])
    xs = np.asarray(xs, dtype=np.int64)
    counts = cumulative[xs + extent] - cumulative[xs]
    return counts / float(mask_rows.shape[0] * extent)


def tissue_fractions(slide_path: Path, grid: Grid, *, white: int = 220) -> np.ndarray:
    """Exact tissue fraction of every grid tile from full-resolution pixels.

    A pixel is tissue when its darkest channel is below ``white``. The slide is streamed
    through pyvips one tile row (a strip ``extent`` px high) at a time, so memory stays flat.
    Returns a (rows, cols) float array.
    """
    import pyvips

    image = pyvips.Image.new_from_file(str(slide_path), access="sequential")
    image = image.extract_band(0, n=3)
    dark = (image[0] < white) | (image[1] < white) | (image[2] < white)
    out = np.zeros(grid.shape, dtype=np.float64)
    if not len(grid.xs):
        return out
    width = int(grid.xs[-1] + grid.extent)
    for row, y0 in enumerate(grid.ys):
        # A tile may reach a pixel past the slide's edge (as OpenSlide reads it: background).
        strip = np.zeros((grid.extent, width), dtype=bool)
        high = min(grid.extent, image.height - int(y0))
        wide = min(width, image.width)
        strip[:high, :wide] = dark.crop(0, int(y0), wide, high).numpy() > 0
        out[row] = row_fractions(strip, grid.xs, grid.extent)
    return out


def recall_precision(truth: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    """Recall and precision of the ``kept`` tiles against the ``truth`` tiles (bool arrays).

    Empty sets give recall 1 (nothing to find) and precision 1 (nothing wrongly kept).
    """
    truth = np.asarray(truth, dtype=bool)
    kept = np.asarray(kept, dtype=bool)
    if truth.shape != kept.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, kept {kept.shape}")
    tp = int(np.count_nonzero(truth & kept))
    fn = int(np.count_nonzero(truth & ~kept))
    fp = int(np.count_nonzero(~truth & kept))
    return {
        "true_positive": tp,
        "false_negative": fn,
        "false_positive": fp,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
    }


def kept_on_grid(
    grid: Grid, origins: Iterable[tuple[int, int]], *, tolerance: int = 1
) -> tuple[np.ndarray, int]:
    """Boolean (rows, cols) map of the grid tiles whose origin is in ``origins``.

    An origin matches the grid tile at the nearest position within ``tolerance`` px;
    returns the map and the number of origins that matched no grid tile.
    """
    kept = np.zeros(grid.shape, dtype=bool)
    unmatched = 0
    for x0, y0 in origins:
        col = int(np.searchsorted(grid.xs, x0 - tolerance))
        row = int(np.searchsorted(grid.ys, y0 - tolerance))
        if (
            col < len(grid.xs)
            and row < len(grid.ys)
            and abs(int(grid.xs[col]) - x0) <= tolerance
            and abs(int(grid.ys[row]) - y0) <= tolerance
        ):
            kept[row, col] = True
        else:
            unmatched += 1
    return kept, unmatched


# --------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished (waited-for) children.

    CPU time is far less disturbed than wall time by other work on a shared machine, so the
    one-process ratios are also given per CPU second.
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds of one measured run."""

    wall: float
    cpu: float


# --------------------------------------------------------------------------- baselines


def _read_tiles(
    slide_path: str,
    origins: Sequence[tuple[int, int]],
    step: float,
    size: int,
    png_dir: str | None,
    png_level: int,
    encoder: str = "pil",
) -> int:
    """Read (and optionally PNG-encode and write) tiles with plain OpenSlide.

    Each tile covers ``step`` level-0 px: ``read_region`` of ``ceil(step)`` px, converted to
    RGB, resized to ``size`` px when ``step != size`` (PIL box filter over the exact
    ``step`` box, as :meth:`histolib.slide.reader.Slide.read_pil`), and with ``png_dir`` written as
    ``x<x0>_y<y0>.png`` at zlib ``png_level`` by PIL (``encoder="pil"``) or libvips
    (``"vips"``, spng).
    """
    import openslide
    from PIL import Image

    if encoder not in ("pil", "vips"):
        raise ValueError(f"unknown encoder {encoder!r}")
    extent = math.ceil(step - 1e-9)
    with openslide.OpenSlide(slide_path) as slide:
        for x0, y0 in origins:
            region = slide.read_region((x0, y0), 0, (extent, extent)).convert("RGB")
            if abs(step - size) > 1e-9:
                region = region.resize(
                    (size, size), Image.Resampling.BOX, box=(0.0, 0.0, step, step)
                )
            if png_dir is None:
                continue
            path = os.path.join(png_dir, f"x{x0}_y{y0}.png")
            if encoder == "pil":
                region.save(path, format="PNG", compress_level=png_level)
            else:
                import pyvips

                image = pyvips.Image.new_from_array(np.asarray(region))
                image.pngsave(path, compression=png_level)
    return len(origins)


def split_rows(origins: Sequence[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """Split tile origins between ``parts`` workers by alternating rows (balances tissue)."""
    rows = sorted({y for _, y in origins})
    index = {y: i % parts for i, y in enumerate(rows)}
    out: list[list[tuple[int, int]]] = [[] for _ in range(parts)]
    for x0, y0 in origins:
        out[index[y0]].append((x0, y0))
    return [part for part in out if part]


def baseline(
    slide_path: Path,
    origins: Sequence[tuple[int, int]],
    *,
    step: float,
    size: int,
    workers: int,
    png_dir: Path | None = None,
    png_level: int = 6,
    encoder: str = "pil",
) -> Timing:
    """Time a plain loop over ``origins`` in ``workers`` processes (rows split)."""
    if png_dir is not None:
        shutil.rmtree(png_dir, ignore_errors=True)
        png_dir.mkdir(parents=True)
    png = str(png_dir) if png_dir is not None else None
    start, cpu = time.perf_counter(), cpu_seconds()
    if workers <= 1:
        _read_tiles(str(slide_path), list(origins), step, size, png, png_level, encoder)
    else:
        parts = split_rows(origins, workers)
        # spawn: libvips threads in this process make fork unsafe; start-up is timed.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_read_tiles, str(slide_path), part, step, size, png, png_level, encoder)
                for part in parts
            ]
            for fut in futures:
                fut.result()
    timing = Timing(time.perf_counter() - start, cpu_seconds() - cpu)
    if png_dir is not None:
        shutil.rmtree(png_dir, ignore_errors=True)
    return timing


# --------------------------------------------------------------------------- histolib


def histolib_available() -> bool:
    """Whether ``histolib.tiling.tiler`` (and so ``histolib tile``) is importable."""
    import importlib.util

    return importlib.util.find_spec("histolib.tiling.tiler") is not None


def run_histolib_tile(
    slide_path: Path, out: Path, *, workers: int, image_format: str, extra: Sequence[str] = ()
) -> tuple[Timing, Path]:
    """Run ``histolib tile`` as a subprocess into a fresh ``out``; returns (timing, manifest)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "histolib_cli.main",
        "tile",
        str(slide_path),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--format",
        image_format,
        *extra,
    ]
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True)
    timing = Timing(time.perf_counter() - start, cpu_seconds() - cpu)
    if done.returncode != 0:
        raise RuntimeError(
            f"histolib tile failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}"
        )
    return timing, out / "tiles.parquet"


# Heavy modules that tile_slides imports lazily; loaded before its clock starts.
PRELOAD = (
    "numpy",
    "scipy.ndimage",
    "skimage.filters",
    "skimage.morphology",
    "shapely",
    "geopandas",
    "pyarrow.parquet",
    "openslide",
    "PIL.Image",
    "histolib.tiling.tiler",
    "histolib.slide.tissue",
    "histolib.tiling.qc",
    "histolib.tileset.manifest",
)


def run_histolib_api(slide_path: Path, out: Path) -> tuple[Timing, Path]:
    """Time ``tile_slides`` (``image_format="none"``, ``workers=1``) inside a fresh process.

    The heavy imports (``PRELOAD``) happen before the clocks start; returns (timing, manifest).
    """
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import importlib, json, sys, time\n"
        f"for name in {PRELOAD!r}:\n"
        "    importlib.import_module(name)\n"
        "from histolib.tiling.options import TilingOptions\n"
        "from histolib.tiling.tiler import tile_slides\n"
        "start, cpu = time.perf_counter(), time.process_time()\n"
        "manifest = tile_slides([sys.argv[1]], out=sys.argv[2],"
        " options=TilingOptions(image_format='none'), workers=1, progress=False)\n"
        "print(json.dumps({'wall': time.perf_counter() - start,"
        " 'cpu': time.process_time() - cpu, 'manifest': str(manifest)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(slide_path), str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"tile_slides failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Timing(float(result["wall"]), float(result["cpu"])), Path(result["manifest"])


def manifest_origins(manifest: Path) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Tile origins (x0, y0) in a histolib manifest and its metadata."""
    from histolib.tileset.manifest import read_manifest

    gdf, meta = read_manifest(manifest)
    return [(int(x), int(y)) for x, y in zip(gdf["x0"], gdf["y0"], strict=True)], meta


# --------------------------------------------------------------------------- report


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def rate(tiles: int, seconds: float) -> float:
    """Tiles per second (NaN for a zero duration)."""
    return tiles / seconds if seconds > 0 else float("nan")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(
        description="Benchmark `histolib tile` against plain OpenSlide loops on a large slide."
    )
    parser.add_argument("--size", type=int, default=30000, help="slide side in px (30000)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/histolib-bench"),
        help="cache of the built slide and scratch outputs (/tmp/histolib-bench)",
    )
    parser.add_argument("--source", type=Path, default=SOURCE, help="real slide to mirror")
    parser.add_argument("--margin", type=float, default=0.2, help="white margin, both sides")
    parser.add_argument("--tile", type=int, default=256, help="tile size in px (256)")
    parser.add_argument("--mpp", type=float, default=0.5, help="tile mpp (0.5)")
    parser.add_argument("--white", type=int, default=220, help="truth: tissue if min RGB < this")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="truth threshold (0.5)")
    parser.add_argument(
        "--encoder",
        choices=("pil", "vips"),
        default="pil",
        help="PNG encoder of the baseline; match histolib's (pil)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of N runs")
    parser.add_argument("--skip-baselines", action="store_true", help="no plain loops")
    parser.add_argument("--skip-histolib", action="store_true", help="no histolib runs")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def fastest(repeat: int, run: Any) -> Any:
    """Call ``run()`` ``repeat`` times; return the result with the least wall time.

    ``run`` returns a :class:`Timing` or a tuple whose first item is one.
    """
    results = [run() for _ in range(max(1, repeat))]

    def wall(result: Any) -> float:
        return (result[0] if isinstance(result, tuple) else result).wall

    return min(results, key=wall)


def _row(label: str, workers: int, tiles: int, timing: Timing, *ratios: str) -> list[Any]:
    row = [
        label,
        workers,
        tiles,
        f"{timing.wall:.2f}",
        f"{timing.cpu:.2f}",
        f"{rate(tiles, timing.wall):.0f}",
        f"{rate(tiles, timing.cpu):.0f}",
        *ratios,
    ]
    row += [""] * (len(HEADER) - len(row))
    print("  ".join(map(str, row)).rstrip(), flush=True)
    return row


HEADER = (
    "run",
    "workers",
    "tiles",
    "wall s",
    "cpu s",
    "tiles/s",
    "tiles/cpu-s",
    "ratio (wall)",
    "ratio (cpu)",
)


def run_baselines(
    args: argparse.Namespace, slide_path: Path, grid: Grid, truth_origins: list[tuple[int, int]]
) -> tuple[dict[str, dict[str, float]], list[list[Any]]]:
    """The plain loops: read every grid tile; read + PNG-encode + write the tissue tiles.

    Returns ``({"read_w1": {"wall": tiles/s, "cpu": tiles/cpu-s, ...}, ...}, table rows)``.
    """
    all_origins = grid.origins()
    png_dir = args.work / "baseline_png"
    plan = [
        ("read", None, all_origins, "baseline read_region, every grid tile"),
        ("png6", 6, truth_origins, f"baseline read + {args.encoder} PNG zlib 6, truth tiles"),
        ("png1", 1, truth_origins, f"baseline read + {args.encoder} PNG zlib 1, truth tiles"),
    ]
    rates: dict[str, dict[str, float]] = {}
    rows: list[list[Any]] = []
    for name, level, origins, label in plan:
        for workers in (1, 2):

            def once(origins=origins, level=level, workers=workers) -> Timing:
                return baseline(
                    slide_path,
                    origins,
                    step=grid.step,
                    size=args.tile,
                    workers=workers,
                    png_dir=png_dir if level is not None else None,
                    png_level=level or 6,
                    encoder=args.encoder,
                )

            timing = fastest(args.repeat, once)
            rates[f"{name}_w{workers}"] = {
                "tiles": len(origins),
                "wall_s": timing.wall,
                "cpu_s": timing.cpu,
                "wall": rate(len(origins), timing.wall),
                "cpu": rate(len(origins), timing.cpu),
            }
            rows.append(_row(label, workers, len(origins), timing))
    return rates, rows


def run_histolib(
    args: argparse.Namespace,
    slide_path: Path,
    grid: Grid,
    truth: np.ndarray,
    fractions: np.ndarray,
    base: dict[str, dict[str, float]],
) -> tuple[dict[str, Any], list[list[Any]]]:
    """``histolib tile`` with --format none, png with 1 and 2 workers; rates, ratios, accuracy.

    PNG runs are compared with the baseline of the zlib level histolib used (its
    ``png_compression`` parameter): with 1 worker against the 1-process loop (wall and CPU);
    with 2 workers against the 1-process loop (wall: the speed-up) and the 2-process loop
    (wall, and CPU: the parallel overhead). ``--format none`` is compared with CLAM's figure.
    """
    out_root = args.work / f"out_{slide_path.stem}"
    runs: dict[str, Any] = {}
    rows: list[list[Any]] = []
    plan = (("api", "none", 1), ("cli", "none", 1), ("cli", "png", 1), ("cli", "png", 2))
    for how, image_format, workers in plan:
        key = f"{image_format}_w{workers}" + ("_api" if how == "api" else "")
        out = out_root / key
        if how == "api":
            timing, manifest = fastest(
                args.repeat, lambda out=out: run_histolib_api(slide_path, out)
            )
        else:
            timing, manifest = fastest(
                args.repeat,
                lambda out=out, fmt=image_format, workers=workers: run_histolib_tile(
                    slide_path, out, workers=workers, image_format=fmt
                ),
            )
        origins, meta = manifest_origins(manifest)
        kept, unmatched = kept_on_grid(grid, origins)
        accuracy = recall_precision(truth, kept)
        misses = fractions[truth & ~kept]
        extras = fractions[~truth & kept]
        tiles = len(origins)
        runs[key] = {
            "wall_s": timing.wall,
            "cpu_s": timing.cpu,
            "tiles": tiles,
            "tiles_per_s": rate(tiles, timing.wall),
            "tiles_per_cpu_s": rate(tiles, timing.cpu),
            "unmatched_origins": unmatched,
            **accuracy,
            # How far from the 0.5 line the errors are: truth fractions of missed and extra
            # tiles, and the scores with a +-0.1 band around the threshold left out.
            "missed_truth_fraction_range": (
                [float(misses.min()), float(misses.max())] if misses.size else None
            ),
            "extra_truth_fraction_range": (
                [float(extras.min()), float(extras.max())] if extras.size else None
            ),
            "recall_truth_ge_0.6": recall_precision(fractions >= 0.6, kept)["recall"],
            "precision_truth_ge_0.4": recall_precision(fractions >= 0.4, kept)["precision"],
        }
        if image_format == "none":
            wall_ratio = f"{CLAM_SECONDS / timing.wall:.2f}x CLAM speed"
            cpu_ratio = ""
            runs[key]["vs_clam_speed"] = CLAM_SECONDS / timing.wall
        else:
            level = png_level_of(meta)
            runs[key]["png_level"] = level
            one = base.get(f"png{level}_w1")
            same = base.get(f"png{level}_w{workers}")
            wall_parts, cpu_parts = [], []
            if one:
                runs[key]["vs_baseline_1proc_wall"] = rate(tiles, timing.wall) / one["wall"]
                wall_parts.append(f"{runs[key]['vs_baseline_1proc_wall']:.2f}x png{level} 1p")
            if workers > 1 and same:
                runs[key][f"vs_baseline_{workers}proc_wall"] = (
                    rate(tiles, timing.wall) / same["wall"]
                )
                wall_parts.append(
                    f"{runs[key][f'vs_baseline_{workers}proc_wall']:.2f}x png{level} {workers}p"
                )
            cpu_ref = same if workers > 1 else one
            if cpu_ref:
                runs[key]["vs_baseline_cpu"] = rate(tiles, timing.cpu) / cpu_ref["cpu"]
                cpu_parts.append(f"{runs[key]['vs_baseline_cpu']:.2f}x png{level} {workers}p")
            wall_ratio, cpu_ratio = "; ".join(wall_parts), "; ".join(cpu_parts)
        label = (
            "tile_slides(format none), imports excluded"
            if how == "api"
            else f"histolib tile --format {image_format}"
        )
        rows.append(_row(label, workers, tiles, timing, wall_ratio, cpu_ratio))
    return runs, rows


def png_level_of(meta: dict[str, Any]) -> int:
    """The zlib level histolib wrote its PNGs with (``png_compression`` in the manifest)."""
    return int(meta["params"]["png_compression"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return (and optionally write) the figures."""
    args = parse_args(argv)
    slide_mpp = SLIDE_MPP
    figures: dict[str, Any] = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "size": args.size,
        "cpu_count": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
    }

    start = time.perf_counter()
    slide_path = build_slide(args.work, size=args.size, source=args.source, margin=args.margin)
    figures["build_seconds"] = time.perf_counter() - start
    info = check_slide(slide_path, size=args.size, mpp=slide_mpp)
    figures["slide"] = {"path": str(slide_path), **info}
    print(f"slide {slide_path}: {info}", flush=True)

    grid = tile_grid(args.size, args.size, size=args.tile, mpp=args.mpp, slide_mpp=slide_mpp)
    start = time.perf_counter()
    fractions = tissue_fractions(slide_path, grid, white=args.white)
    truth = fractions >= args.min_tissue
    truth_origins = [
        (int(grid.xs[c]), int(grid.ys[r])) for r, c in zip(*np.nonzero(truth), strict=True)
    ]
    figures["truth"] = {
        "grid_tiles": int(truth.size),
        "tissue_tiles": int(truth.sum()),
        "extent": grid.extent,
        "white": args.white,
        "min_tissue": args.min_tissue,
        "seconds": time.perf_counter() - start,
    }
    print(f"truth: {figures['truth']}", flush=True)

    rows: list[list[Any]] = []
    base: dict[str, dict[str, float]] = {}
    if not args.skip_baselines:
        base, base_rows = run_baselines(args, slide_path, grid, truth_origins)
        rows += base_rows
    figures["baselines"] = base

    if not args.skip_histolib:
        if not histolib_available():
            print("histolib.tiling.tiler is not importable: skipping the histolib runs", flush=True)
            figures["histolib"] = None
        else:
            runs, hist_rows = run_histolib(args, slide_path, grid, truth, fractions, base)
            rows += hist_rows
            figures["histolib"] = runs
            first = runs["none_w1"]
            figures["accuracy"] = {
                k: first[k]
                for k in (
                    "recall",
                    "precision",
                    "true_positive",
                    "false_positive",
                    "false_negative",
                    "missed_truth_fraction_range",
                    "extra_truth_fraction_range",
                    "recall_truth_ge_0.6",
                    "precision_truth_ge_0.4",
                )
            }
    figures["load_average_after"] = list(os.getloadavg())

    print()
    print(format_table(rows, HEADER))
    if figures.get("histolib"):
        print(
            f"CLAM create_patches_fp (tcga preset) on this slide: {CLAM_SECONDS} s, "
            f"{CLAM_PATCHES} patches (quoted from issue 2; not run here)"
        )
    if "accuracy" in figures:
        acc = figures["accuracy"]
        print(
            f"\ntissue recall {acc['recall']:.3f} (target >= 0.98), precision "
            f"{acc['precision']:.3f} (target >= 0.95): {acc['true_positive']} of "
            f"{figures['truth']['tissue_tiles']} tiles >= {args.min_tissue} tissue kept, "
            f"{acc['false_positive']} kept below it"
        )
        missed, extra = acc["missed_truth_fraction_range"], acc["extra_truth_fraction_range"]
        print(
            "  missed tiles' true tissue fraction: "
            + (f"{missed[0]:.3f}..{missed[1]:.3f}" if missed else "none")
            + "; extra tiles': "
            + (f"{extra[0]:.3f}..{extra[1]:.3f}" if extra else "none")
            + f"; recall of tiles >= 0.6 tissue {acc['recall_truth_ge_0.6']:.3f}, "
            f"precision against tiles >= 0.4 {acc['precision_truth_ge_0.4']:.3f}"
        )
    print(
        f"load average before {figures['load_average_before'][0]:.2f}, "
        f"after {figures['load_average_after'][0]:.2f} on {figures['cpu_count']} cores"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
