"""Training batches a second read straight from slides against the same tiles read as PNGs.

Two synthetic slides (``histolib synth``: an H&E and an IHC slide, pyramidal JPEG TIFF, Q 90,
256 px TIFF tiles, 0.5 um/px) are built once in ``--work`` and each tiled twice with
``histolib tile``: ``--format png`` (the default zlib level 1) and ``--format none``
(coordinates only). The training data pipeline then draws the same seeded batches from both
(``histolib_train.training.batches.PairedBatches``: ``--batch`` tiles of each domain a step,
random flips, float tensors; the plain CycleGAN's draw, no cell library), through a torch
DataLoader with 1 and 2 worker processes, exactly as ``histolib train`` does. Reading from the
slide, each worker opens each slide once, lazily, and keeps it open
(:mod:`histolib.tileset.pixels`, :mod:`histolib.slide.cache`).

Two scenarios, both in one run:

* ``aligned``: tiles at the slides' own 0.5 um/px; a 256 px tile is one TIFF tile of level 0
  (what a 20x tile from a 20x scan costs);
* ``resampled``: tiles at ``--resampled-mpp`` (default 0.501 um/px, as a 0.499 um/px Aperio
  scan read at 0.5): each tile reads a 257 px window that straddles up to four TIFF tiles and
  is area-resized to 256 px.

The slide is read three ways: as ``histolib train`` reads it (the slides of a DataLoader
worker share one tile cache of ``HISTOLIB_SLIDE_CACHE_MB``, default 256 MiB); ``own32``, with
OpenSlide's own cache of 32 MiB a slide (what histolib did before: the baseline of the shared
cache); and ``cold``, with no cache at all (every read decodes every TIFF tile it covers: what
a cohort far larger than any cache costs, the floor). The two synthetic slides decode to
2 x 144 MiB at level 0, so the shared cache holds most of them: on real cohorts the figure
lies between ``cold`` and the shared one.

Every configuration is timed over ``--batches`` batches after the first (worker start-up left
out); configurations alternate and the best of ``--repeat`` rounds is kept (the machine may be
shared). The first batch of each is checked equal to the PNG one (the pixels of a
``--format none`` tile equal its PNG's). Prints batches/s and the ratios slide / PNG.

Usage: ``python benchmarks/slide_batches.py [--size 6144] [--batches 40] [--repeat 3]
[--json OUT]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "histolib-bench" / "slide_batches"
#: PNG files; the slide with the shared cache; OpenSlide's own cache a slide; no cache.
HOWS = ("png", "slide", "own32", "cold")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK, help=f"cache folder ({WORK})")
    parser.add_argument("--size", type=int, default=6144, help="slide side in px (6144)")
    parser.add_argument("--tile", type=int, default=256, help="tile side in px (256)")
    parser.add_argument("--batch", type=int, default=8, help="tiles a domain a batch (8)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches (40)")
    parser.add_argument("--workers", default="1,2", help="DataLoader workers to time (1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="keep the best of N rounds (3)")
    parser.add_argument(
        "--resampled-mpp", type=float, default=0.501, help="tile mpp of the resampled scenario"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def make_manifests(args: argparse.Namespace) -> dict[tuple[str, str, str], Path]:
    """``{(scenario, stain, "png" | "none"): tiles.parquet}``, built once in ``--work``."""
    from histolib.synthetic import make_slide
    from histolib.tiling.options import TilingOptions
    from histolib.tiling.tiler import tile_slides

    slides = {
        stain: make_slide(
            args.work / "slides",
            name=f"bench_{stain}",
            stain=stain,
            width=args.size,
            height=args.size,
            seed=11,
            workers=2,
        ).slide_path
        for stain in ("he", "ihc")
    }
    manifests = {}
    for scenario, mpp in (("aligned", 0.5), ("resampled", args.resampled_mpp)):
        for stain, slide in slides.items():
            for fmt in ("png", "none"):
                out = args.work / f"{scenario}_{args.tile}_{stain}_{fmt}"
                manifest = out / "tiles.parquet"
                if not manifest.is_file():
                    tile_slides(
                        slide,
                        out=out,
                        options=TilingOptions(
                            stain=stain, mpp=mpp, size=args.tile, image_format=fmt
                        ),
                        workers=2,
                        progress=False,
                    )
                manifests[scenario, stain, fmt] = manifest
    return manifests


def paired_batches(
    manifests: dict[tuple[str, str, str], Path], scenario: str, fmt: str, batch: int
):
    """The training data pipeline's dataset over one scenario's tiles, read one way."""
    from histolib_train.training.batches import PairedBatches, load_tiles, split_groups

    domains = []
    for stain in ("he", "ihc"):
        tiles = load_tiles(manifests[scenario, stain, fmt], domain=stain, library=None)
        split_groups(tiles, require_boxes=False)
        domains.append(tiles)
    return PairedBatches(domains[0], domains[1], seed=0, batch_size=batch, boxes_per_tile=8)


def batches_per_second(dataset: Any, *, workers: int, batches: int) -> tuple[float, Any]:
    """Batches/s of a DataLoader over ``dataset`` (``batches`` after the first) and the first."""
    from histolib_train.training.batches import make_loader

    loader = make_loader(dataset, start=0, stop=batches + 1, workers=workers, pin_memory=False)
    iterator = iter(loader)
    first = next(iterator)  # worker start-up and the first reads are left out
    t0 = time.perf_counter()
    count = sum(1 for _ in iterator)
    elapsed = time.perf_counter() - t0
    del iterator
    return count / elapsed, first


@contextlib.contextmanager
def slide_cache(how: str) -> Iterator[None]:
    """The slide cache of ``how`` for the DataLoader workers forked inside (they open their
    slides lazily and read ``HISTOLIB_SLIDE_CACHE_MB`` then)."""
    from histolib.slide import cache
    from histolib.slide.reader import Slide

    saved_env, saved_use = os.environ.get(cache.CACHE_ENV), Slide.use_cache
    if how == "cold":
        os.environ[cache.CACHE_ENV] = "0"
    if how == "own32":
        Slide.use_cache = lambda self, cache: None  # type: ignore[method-assign]
    cache.close_slides()
    try:
        yield
    finally:
        Slide.use_cache = saved_use  # type: ignore[method-assign]
        if saved_env is None:
            os.environ.pop(cache.CACHE_ENV, None)
        else:
            os.environ[cache.CACHE_ENV] = saved_env
        cache.close_slides()


def timed(dataset: Any, how: str, *, workers: int, batches: int) -> tuple[float, Any]:
    """:func:`batches_per_second` with the slide cache of ``how``."""
    with slide_cache(how) if how != "png" else contextlib.nullcontext():
        return batches_per_second(dataset, workers=workers, batches=batches)


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return all(torch.equal(a[d][k], b[d][k]) for d in ("he", "ihc") for k in a[d])


def measure(args: argparse.Namespace, manifests: dict) -> list[dict[str, Any]]:
    """Every scenario x worker count: best-of-``--repeat`` batches/s of PNGs and of slides."""
    rows = []
    for scenario in ("aligned", "resampled"):
        data = {
            fmt: paired_batches(manifests, scenario, fmt, args.batch) for fmt in ("png", "none")
        }
        n_tiles = len(data["png"].he) + len(data["png"].ihc)
        for workers in [int(w) for w in args.workers.split(",")]:
            best = dict.fromkeys(HOWS, 0.0)
            firsts: dict[str, Any] = {}
            for round_ in range(args.repeat):
                for how in HOWS if round_ % 2 == 0 else HOWS[::-1]:
                    dataset = data["png" if how == "png" else "none"]
                    rate, firsts[how] = timed(dataset, how, workers=workers, batches=args.batches)
                    best[how] = max(best[how], rate)
            rows.append(
                {
                    "scenario": scenario,
                    "workers": workers,
                    "tiles": n_tiles,
                    "png_batches_s": best["png"],
                    "slide_batches_s": best["slide"],
                    "slide_own32_batches_s": best["own32"],
                    "slide_cold_batches_s": best["cold"],
                    "ratio": best["slide"] / best["png"],
                    "ratio_own32": best["own32"] / best["png"],
                    "ratio_cold": best["cold"] / best["png"],
                    "equal_batches": all(
                        same_batch(firsts["png"], firsts[how]) for how in HOWS[1:]
                    ),
                }
            )
            print_row(rows[-1], args)
    return rows


def print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    tiles = 2 * args.batch
    rates = "  ".join(
        f"{label} {row[key]:5.2f} ({row[key] * tiles:5.1f})"
        for label, key in (
            ("PNG", "png_batches_s"),
            ("slide", "slide_batches_s"),
            ("own32", "slide_own32_batches_s"),
            ("cold", "slide_cold_batches_s"),
        )
    )
    print(
        f"{row['scenario']:>9}  workers {row['workers']}  batches/s (tiles/s): {rates}  "
        f"slide/PNG {row['ratio']:.2f}x, own32 {row['ratio_own32']:.2f}x, "
        f"cold {row['ratio_cold']:.2f}x  same pixels: {row['equal_batches']}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifests = make_manifests(args)
    print(
        f"slides {args.size} px, tiles {args.tile} px, batch {args.batch} tiles a domain "
        f"(2 domains), {args.batches} batches timed, best of {args.repeat} "
        f"(set-up {time.perf_counter() - t0:.0f} s, cached in {args.work})"
    )
    rows = measure(args, manifests)
    result = {
        "size": args.size,
        "tile": args.tile,
        "batch": args.batch,
        "batches": args.batches,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
