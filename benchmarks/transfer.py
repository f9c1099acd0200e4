"""Benchmark: slide restaining throughput with the paper's generator (6 blocks, ngf 64).

Restains a synthetic H&E slide twice on the chosen device and prints windows per second,
output megapixels per second and where the time goes (read, inference, blend, write):

* ``pipeline``: ``histolib_train.transfer.slide.transfer_slide`` (overlapping windows blended,
  background skipped, reader threads, batched inference, streaming pyramidal TIFF writer);
* ``baseline``: a naive loop over the same tissue, non-overlapping tiles, one at a time:
  read, run, paste into a whole-slide array in memory, then one ``tiffsave`` at the end
  (hard seams, memory growing with the slide).

The paper (Boyd et al. 2022) reports 22 s and 14 s for two whole slides on a V100. Timings
here are disturbed by whatever else runs on the machine; compare the two rows of one run.

    python benchmarks/transfer.py                 # 1024 x 1024 slide, CPU: a few minutes
    python benchmarks/transfer.py --size 4096 --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from histolib.slide.pyramid import pyramid_tiff_options


def naive_transfer(
    slide_path: Path, generator: Any, *, out: Path, mpp: float, tile_size: int
) -> dict[str, float]:
    """The baseline: sequential, non-overlapping tiles on tissue, whole canvas in memory."""
    import pyvips

    from histolib.slide.blend import window_starts
    from histolib.slide.reader import open_slide
    from histolib_train.transfer.slide import tissue_lowres, tissue_window_grid

    timings = {"read": 0.0, "inference": 0.0, "blend": 0.0, "write": 0.0}
    start = time.perf_counter()
    with open_slide(slide_path) as slide:
        downsample = mpp / slide.mpp
        out_w = round(slide.dimensions[0] / downsample)
        out_h = round(slide.dimensions[1] / downsample)
        xs = window_starts(out_w, tile_size=tile_size, overlap=0)
        ys = window_starts(out_h, tile_size=tile_size, overlap=0)
        mask, sx, sy = tissue_lowres(slide)
        grid = tissue_window_grid(
            mask, scale_x=sx, scale_y=sy, xs=xs, ys=ys, tile_size=tile_size, downsample=downsample
        )
        canvas = np.full((ys[-1] + tile_size, xs[-1] + tile_size, 3), 255, np.uint8)
        for row, y in enumerate(ys):
            for col, x in enumerate(xs):
                if not grid[row, col]:
                    continue
                t0 = time.perf_counter()
                tile = slide.read_region(
                    round(x * downsample), round(y * downsample), size=tile_size, mpp=mpp
                )
                t1 = time.perf_counter()
                fake = generator(np.asarray(tile)[None])[0]
                t2 = time.perf_counter()
                canvas[y : y + tile_size, x : x + tile_size] = fake
                timings["read"] += t1 - t0
                timings["inference"] += t2 - t1
                timings["blend"] += time.perf_counter() - t2
    t0 = time.perf_counter()
    image = pyvips.Image.new_from_array(
        np.ascontiguousarray(canvas[:out_h, :out_w]), interpretation="srgb"
    )
    image.tiffsave(str(out), **pyramid_tiff_options(mpp=mpp))
    timings["write"] = time.perf_counter() - t0
    timings["wall"] = time.perf_counter() - start
    timings["windows"] = float(grid.sum())
    timings["canvas_mb"] = canvas.nbytes / 1e6
    return timings


def _memory_run(slide: str, out: str) -> tuple[float, float]:
    """Restain ``slide`` with an identity generator in this (fresh) process; peak RSS in MB."""
    import resource

    from histolib_train.transfer.slide import transfer_slide

    def identity(batch: np.ndarray) -> np.ndarray:
        return batch

    start = time.perf_counter()
    transfer_slide(
        slide, identity, out=out, mpp=0.5, tile_size=256, overlap=64, tissue=False, overwrite=True
    )
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start


def memory_check(work: Path, *, width: int, heights: list[int]) -> list[dict[str, Any]]:
    """Peak memory of slide restaining for slides of one width and growing heights.

    Each run is a fresh process (so that peak RSS belongs to it alone); the generator is the
    identity, so what is measured is the reading, blending and streaming machinery.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import pyvips

    rng = np.random.default_rng(0)
    texture = np.clip(rng.normal([215, 150, 190], 20, size=(64, 64, 3)), 0, 255).astype(np.uint8)
    patch = pyvips.Image.new_from_array(texture).copy(interpretation="srgb")
    rows = []
    for height in heights:
        path = work / f"mem_{width}x{height}.tif"
        image = patch.replicate(width // 64 + 1, height // 64 + 1).crop(0, 0, width, height)
        image.tiffsave(str(path), **pyramid_tiff_options(mpp=0.5))
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            out = work / f"mem_out_{height}.tif"
            peak, seconds = pool.submit(_memory_run, str(path), str(out)).result()
        rows.append(
            {
                "slide": f"{width} x {height}",
                "raw_output_mb": round(width * height * 3 / 1e6, 1),
                "peak_rss_mb": round(peak, 1),
                "seconds": round(seconds, 1),
            }
        )
        path.unlink()
        out.unlink()
    return rows


def _row(name: str, t: dict[str, float], windows: float, megapixels: float) -> dict[str, Any]:
    busy = sum(t[k] for k in ("read", "inference", "blend", "write"))
    return {
        "run": name,
        "wall_s": round(t["wall"], 2),
        "windows": int(windows),
        "windows_per_s": round(windows / t["wall"], 3),
        "output_mpx_per_s": round(megapixels / t["wall"], 4),
        **{f"{k}_s": round(t[k], 2) for k in ("read", "inference", "blend", "write")},
        **{f"{k}_share": round(t[k] / busy, 3) for k in ("read", "inference", "blend", "write")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="Slide side in px at 0.5 um/px.")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-blocks", type=int, default=6)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Instead: peak memory for slides 4000 px wide and 4000, 8000, 16000 px high.",
    )
    args = parser.parse_args()
    if args.memory:
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="histolib-bench-"))
        for row in memory_check(work, width=4000, heights=[4000, 8000, 16000]):
            print(json.dumps(row))
        return

    import torch

    from histolib.synthetic.slides import make_slide
    from histolib_train.device import resolve_device
    from histolib_train.models.networks import ResnetGenerator
    from histolib_train.transfer.generator import TorchGenerator
    from histolib_train.transfer.slide import transfer_slide

    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = ResnetGenerator(n_blocks=args.n_blocks, ngf=args.ngf).to(device).eval()
    generator = TorchGenerator(net, device=device)
    generator(np.full((1, args.tile_size, args.tile_size, 3), 200, np.uint8))  # warm-up
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="histolib-bench-"))
    slide = make_slide(
        work, name="bench_he", width=args.size, height=args.size, seed=args.seed
    ).slide_path
    megapixels = args.size * args.size / 1e6
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads); generator {args.n_blocks} "
        f"blocks, ngf {args.ngf}; slide {args.size} x {args.size} px at 0.5 um/px; "
        f"windows {args.tile_size} px, overlap {args.overlap}, batch {args.batch_size}"
    )
    rows = []
    result = transfer_slide(
        slide,
        generator,
        out=work / "pipeline.tif",
        mpp=0.5,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        workers=args.workers,
        overwrite=True,
    )
    rows.append(_row("pipeline", result.timings, result.tissue_windows, megapixels))
    print(json.dumps(rows[-1]), flush=True)
    if not args.skip_baseline:
        naive = naive_transfer(
            slide, generator, out=work / "naive.tif", mpp=0.5, tile_size=args.tile_size
        )
        rows.append(_row("baseline", naive, naive["windows"], megapixels))
        rows[-1]["canvas_mb"] = round(naive["canvas_mb"], 1)
        print(json.dumps(rows[-1]))
    if len(rows) == 2:
        pipe, base = rows
        print(
            f"pipeline / baseline wall time: {pipe['wall_s'] / base['wall_s']:.2f} "
            f"({pipe['windows']} overlapping windows vs {base['windows']} tiles; "
            f"windows/s ratio {pipe['windows_per_s'] / base['windows_per_s']:.2f})"
        )
    print("paper: 22 s and 14 s for two whole slides on a V100 (Boyd et al. 2022)")


if __name__ == "__main__":
    main()
