"""Benchmark: slide restaining throughput with the paper's generator (6 blocks, ngf 64).

Restains a synthetic H&E slide twice on the chosen device and prints windows per second,
output megapixels per second and where the time goes (read, inference, blend, write):

* ``pipeline``: ``histolib_train.transfer.slide.transfer_slide`` (overlapping windows blended,
  background skipped, reader threads, batched inference, streaming pyramidal TIFF writer);
* ``baseline``: a naive loop over the same tissue, non-overlapping tiles, one at a time:
  read, run, paste into a whole-slide array in memory, then one ``tiffsave`` at the end
  (hard seams, memory growing with the slide).

With ``--generator null`` or ``--generator sleep:MS`` it measures the pipeline's ceiling
instead: the generator costs nothing (``null``: its input back) or sleeps ``MS`` ms a batch
(``sleep``: a stand-in for a GPU, which leaves the CPU free), and the run compares the
restaining code of this tree (``new``) with the implementation before the device pipeline
(``old``: ``histolib_train/transfer`` of ``--old-commit``, extracted with ``git archive`` into
a temporary folder and imported under another name), interleaved, on the same slide. Per path
it reports windows/s, the share of the wall time the generator's thread waited for input or
for room for its output, and CPU seconds per window by stage (``time.thread_time`` of each
stage's threads; ``other``: the rest of the process's CPU time, i.e. libvips' JPEG/pyramid
threads and torch's intra-op threads), with the slide-level tissue mask (the same code in
both paths) measured once and reported apart. ``sleep:auto`` sleeps, per batch, the new
path's ``null`` wall time per batch, so that the generator alone would take about half the
wall time of a run that overlaps nothing. The outputs of the two paths are compared pixel by
pixel (max and mean absolute difference of the decoded TIFFs).

The paper (Boyd et al. 2022) reports 22 s and 14 s for two whole slides on a V100. Timings
here are disturbed by whatever else runs on the machine; compare the two rows of one run.

    python benchmarks/transfer.py                 # 1024 x 1024 slide, CPU: a few minutes
    python benchmarks/transfer.py --size 4096 --device cuda --batch-size 32
    python benchmarks/transfer.py --generator null --size 4096 --repeat 2
    python benchmarks/transfer.py --generator sleep:auto --size 4096 --repeat 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


OLD_COMMIT = "5596631"
"""``main`` before the device pipeline: the ``old`` path of ``--generator null|sleep``."""
OLD_PACKAGE = "histolib_old_transfer"
#: Imports of the old package from ``histolib`` whose names have moved since, as today's
#: equivalent (the old code runs against today's ``histolib``).
OLD_IMPORTS = {
    "from histolib.core.names import check_not_input": (
        "from histolib.core.overwrite import check_output; "
        "check_not_input = lambda outs, ins, hint='': "
        "[check_output(o, inputs=ins, folder=False) for o in outs]"
    ),
}


def load_old_transfer(commit: str, dest: Path) -> Any:
    """``histolib_train/transfer`` at ``commit`` as the package :data:`OLD_PACKAGE` (its
    ``slide`` module returned); its own imports of the package are renamed to it, and the
    imports of :data:`OLD_IMPORTS` rewritten."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit, "histolib_train/transfer"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    package = dest / OLD_PACKAGE
    (dest / "histolib_train" / "transfer").rename(package)
    for path in package.glob("*.py"):
        text = path.read_text().replace("histolib_train.transfer.", f"{OLD_PACKAGE}.")
        for old, new in OLD_IMPORTS.items():
            text = text.replace(old, new)
        path.write_text(text)
    sys.path.insert(0, str(dest))
    return importlib.import_module(f"{OLD_PACKAGE}.slide")


class StandIn:
    """A generator that costs nothing (``sleep_s`` 0: its input back) or sleeps a fixed time a
    batch (a GPU stand-in); a numpy function for the old path, ``run_tensor`` for the new."""

    device = "cpu"

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.batches = 0

    def _wait(self) -> None:
        self.batches += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._wait()
        return batch

    def run_tensor(self, batch: Any) -> Any:
        self._wait()
        return batch


@contextlib.contextmanager
def _timed_prefetch(module: Any, clock: dict[str, float]) -> Iterator[None]:
    """Note the process's and this thread's CPU time when ``module``'s pipeline starts (its
    ``prefetch``, after the slide-level set-up), and time the generator thread's waits for
    input (the old path records none)."""
    original = module.prefetch

    def timed(iterator: Any, *, depth: int, stop: Any) -> Iterator[Any]:
        clock["cpu0"], clock["main0"] = time.process_time(), time.thread_time()
        inner = original(iterator, depth=depth, stop=stop)
        try:
            while True:
                start = time.perf_counter()
                item = next(inner, None)
                clock["wait_input"] += time.perf_counter() - start
                if item is None:
                    return
                yield item
        finally:
            inner.close()

    module.prefetch = timed
    try:
        yield
    finally:
        module.prefetch = original


def ceiling_run(
    path: str, module: Any, slide: Path, out: Path, *, sleep_s: float, **kw: Any
) -> dict[str, Any]:
    """One restaining of ``slide`` by ``module.transfer_slide`` with a :class:`StandIn`; CPU
    time counted from the start of the pipeline (after the slide-level set-up) to the end."""
    generator = StandIn(sleep_s)
    clock = {"wait_input": 0.0}
    with _timed_prefetch(module, clock):
        result = module.transfer_slide(slide, generator, out=out, overwrite=True, **kw)
    cpu, main = time.process_time() - clock["cpu0"], time.thread_time() - clock["main0"]
    t, n = result.timings, result.tissue_windows
    wait_in = t.get("wait_input", clock["wait_input"])
    wait_out = t.get("wait_output", 0.0)
    stages = {"generator_thread": main}
    if path == "new":
        stages = {"generator_thread": t["device_cpu"], "readers": t["read_cpu"]}
        stages.update(alpha=t["alpha_cpu"], rows=t["rows_cpu"])
    stages["other"] = cpu - sum(stages.values())
    return {
        "path": path,
        "generator": f"sleep:{sleep_s * 1e3:g}" if sleep_s else "null",
        "windows": n,
        "batches": generator.batches,
        "wall_s": round(t["wall"], 3),
        "windows_per_s": round(n / t["wall"], 1),
        "generator_alone_share": round(generator.batches * sleep_s / t["wall"], 3),
        "wait_input_share": round(wait_in / t["wall"], 3),
        "wait_output_share": round(wait_out / t["wall"], 3),
        "cpu_ms_per_window": round(cpu / n * 1e3, 3),
        **{f"cpu_ms_{k}": round(v / n * 1e3, 3) for k, v in stages.items()},
    }


def pixel_difference(a: Path, b: Path) -> dict[str, float]:
    """Max and mean absolute difference of two TIFFs' full-resolution pixels."""
    import pyvips

    one = pyvips.Image.new_from_file(str(a)).numpy().astype(np.int16)
    two = pyvips.Image.new_from_file(str(b)).numpy().astype(np.int16)
    diff = np.abs(one[..., :3] - two[..., :3])
    return {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean())}


def _ratio(rows: list[dict[str, Any]], key: str) -> float:
    old = np.median([r[key] for r in rows if r["path"] == "old"])
    new = np.median([r[key] for r in rows if r["path"] == "new"])
    return float(old / new)


def floor_costs(slide: Path, output: Path, *, workers: int, batch_size: int, **kw: Any) -> dict:
    """CPU ms a tissue window of the two stages every path runs the same way, measured alone:
    decoding the slide's window rows (the new path's readers, no alpha) and writing the output
    TIFF (:class:`~histolib.slide.pyramid.StreamingTiffWriter`, JPEG pyramid included); their
    sum bounds from below what any restaining of ``slide`` costs on this machine."""
    import threading

    import pyvips
    import torch

    from histolib.slide.pyramid import StreamingTiffWriter
    from histolib.slide.reader import open_slide
    from histolib_train.transfer.device import HostBuffers
    from histolib_train.transfer.slide import tissue_lowres, tissue_window_grid
    from histolib_train.transfer.windows import plan_windows, read_batches, stripe_level

    size = kw["tile_size"]
    with open_slide(slide) as handle:
        windows = plan_windows(handle, mpp=kw["mpp"], tile_size=size, overlap=kw["overlap"])
        mask, sx, sy = tissue_lowres(handle)
        stripes = stripe_level(handle, windows)
    grid = tissue_window_grid(
        mask,
        scale_x=sx,
        scale_y=sy,
        xs=windows.xs,
        ys=windows.ys,
        tile_size=size,
        downsample=windows.downsample,
    )
    n = int(grid.sum())
    cpu = torch.device("cpu")
    buffers = HostBuffers(cpu, count=6, specs=[((batch_size, size, size, 3), torch.uint8)])
    start = time.process_time()
    for batch in read_batches(
        lambda: open_slide(slide),
        windows=windows,
        grid=grid,
        batch_size=batch_size,
        workers=workers,
        stop=threading.Event(),
        timings={"read": 0.0, "read_cpu": 0.0, "alpha_cpu": 0.0},
        buffers=buffers,
        stripe_choice=stripes,
    ):
        if batch.buffer is not None:
            buffers.release(batch.buffer)
    decode = time.process_time() - start
    rows = pyvips.Image.new_from_file(str(output)).numpy()[..., :3].copy()
    start = time.process_time()
    target = output.with_name("floor.tif")
    with StreamingTiffWriter(target, width=rows.shape[1], height=rows.shape[0], mpp=kw["mpp"]) as w:
        for top in range(0, rows.shape[0], windows.stride):
            w.write_rows(rows[top : top + windows.stride])
    write = time.process_time() - start
    target.unlink()
    return {"windows": n, "decode_ms": decode / n * 1e3, "write_ms": write / n * 1e3}


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Old path against new with a ``null`` or ``sleep`` generator, ``--repeat`` x interleaved."""
    import torch  # noqa: F401  (imported before the runs: the new path's first run would pay it)

    from histolib.synthetic.slides import make_slide
    from histolib_train.transfer import slide as new_module

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="histolib-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    old_module = load_old_transfer(args.old_commit, Path(tempfile.mkdtemp(prefix="old-", dir=work)))
    slide = make_slide(
        work, name=f"ceiling_{args.size}", width=args.size, height=args.size, seed=args.seed
    ).slide_path
    kw = dict(mpp=0.5, tile_size=args.tile_size, overlap=args.overlap)
    kw.update(batch_size=args.batch_size, workers=args.workers)
    kind, _, ms = args.generator.partition(":")
    sleep_s = 0.0
    if kind == "sleep" and ms == "auto":
        null = ceiling_run("new", new_module, slide, work / "new.tif", sleep_s=0, **kw)
        sleep_s = null["wall_s"] / null["batches"]
    elif kind == "sleep":
        sleep_s = float(ms) / 1e3
    rows, floors = [], []
    modules = {"old": old_module, "new": new_module}
    for _ in range(args.repeat):
        for path in ("old", "new"):
            out = work / f"{path}.tif"
            rows.append(ceiling_run(path, modules[path], slide, out, sleep_s=sleep_s, **kw))
            print(json.dumps(rows[-1]), flush=True)
        floors.append(floor_costs(slide, work / "new.tif", **kw))
        print(json.dumps({"floor": {k: round(v, 3) for k, v in floors[-1].items()}}), flush=True)
    floor = float(np.median([f["decode_ms"] + f["write_ms"] for f in floors]))
    old, new = (
        float(np.median([r["cpu_ms_per_window"] for r in rows if r["path"] == p]))
        for p in ("old", "new")
    )
    summary = {
        "slide_px": args.size,
        "cpu_per_window_old_over_new": round(_ratio(rows, "cpu_ms_per_window"), 2),
        "windows_per_s_new_over_old": round(1 / _ratio(rows, "windows_per_s"), 2),
        # Decoding and writing, measured alone: what every path pays; the rest is its own.
        "floor_cpu_ms_per_window": round(floor, 3),
        "old_over_floor": round(old / floor, 2),
        "own_cpu_ms_old": round(old - floor, 3),
        "own_cpu_ms_new": round(new - floor, 3),
        "own_old_over_new": round((old - floor) / max(new - floor, 1e-9), 2),
        **pixel_difference(work / "old.tif", work / "new.tif"),
    }
    print(json.dumps(summary))
    return {"rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
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
    parser.add_argument(
        "--generator",
        default="model",
        help="model (the paper's generator), null, sleep:MS or sleep:auto (see the docstring).",
    )
    parser.add_argument("--repeat", type=int, default=2, help="Old/new pairs (--generator).")
    parser.add_argument("--old-commit", default=OLD_COMMIT, help="The old path's commit.")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Instead: peak memory for slides 4000 px wide and 4000, 8000, 16000 px high.",
    )
    args = parser.parse_args(argv)
    if args.generator != "model":
        return ceiling(args)
    if args.memory:
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="histolib-bench-"))
        for row in memory_check(work, width=4000, heights=[4000, 8000, 16000]):
            print(json.dumps(row))
        return None

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
    return None


if __name__ == "__main__":
    main()
