"""Training batches a second: uint8 batches (today's) against float32 ones (the earlier path),
read from PNG tiles and straight from slides.

Two synthetic slides (``histolib synth``: an H&E and an IHC slide, pyramidal JPEG TIFF, Q 90,
256 px TIFF tiles, 0.5 um/px) are built once in ``--work`` and each tiled twice with
``histolib tile``: ``--format png`` (the default zlib level 1) and ``--format none``
(coordinates only). The training data pipeline then draws the same seeded batches from both
(``histolib_train.training.batches.PairedBatches``: ``--batch`` tiles of each domain a step,
random flips; the plain CycleGAN's draw, no cell library) through a torch DataLoader with 1
and 2 worker processes, exactly as ``histolib train`` does, and hands each pair to
``--device`` (the CPU by default; pinned memory on CUDA) as the trainer takes it:

* ``new``: the batches cross from the workers as uint8 (image and class map), are copied
  with ``non_blocking=True`` and normalised to float32 on the device
  (:func:`histolib_train.training.batches.to_device`, what ``histolib train`` does);
* ``old``: the earlier path, carried here as the baseline: each worker converts the batch to
  float32 (``x / 127.5 - 1`` in numpy, class map float32) and the float tensors, four times
  the bytes, cross the processes before the copy to the device, with every small field
  (boxes, labels, indices) a shared-memory tensor of its own (the DataLoader's default
  conversion; today they travel inside the pickled batch,
  :func:`histolib_train.training.batches.for_transport`);
* ``loader``: the uint8 batches as the DataLoader hands them, neither copied nor normalised
  (the rate the ``new`` path approaches where the normalisation is a GPU kernel, not main-
  process CPU time).

On the CPU the ``new`` path's normalisation runs in the main process (on a GPU it is a
kernel); the two paths give bit-identical float inputs (checked on the first batch).

Scenarios (``--scenarios``): ``aligned``, tiles at the slides' own 0.5 um/px (a 256 px tile is
one TIFF tile of level 0), and ``resampled``, tiles at ``--resampled-mpp`` (0.501 um/px: each
tile reads a 257 px window that straddles up to four TIFF tiles and is area-resized). Sources
(``--how``): ``png`` files and ``slide`` (the slides of a DataLoader worker share one tile
cache of ``HISTOLIB_SLIDE_CACHE_MB``, default 256 MiB); ``own32`` (OpenSlide's own 32 MiB
cache a slide) and ``cold`` (no cache at all: every read decodes every TIFF tile it covers)
may be added.

Every configuration is timed over ``--batches`` batches after the first (worker start-up left
out), each pair's pixel tensors read once after the hand-off (:func:`read_inputs`, as the
step's first layer would: on the CPU a shared-memory tensor's pages are mapped only when first
read); old and new alternate within each round, the round order reverses every round, and the
best of ``--repeat`` rounds is kept (the machine may be shared). Prints batches/s and the
ratios new / old and loader / old.

Usage: ``python benchmarks/slide_batches.py [--size 6144] [--batches 40] [--repeat 3]
[--workers 1,2] [--how png,slide] [--device cpu] [--json OUT]``.
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
#: uint8 batches normalised on the device (today's); float32 batches made in the workers;
#: the uint8 batches as the DataLoader hands them, before the copy and the normalisation.
PATHS = ("new", "old", "loader")


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
        "--how", default="png,slide", help=f"sources among {','.join(HOWS)} (png,slide)"
    )
    parser.add_argument(
        "--scenarios", default="aligned,resampled", help="aligned and/or resampled (both)"
    )
    parser.add_argument("--device", default="cpu", help="where batches go: cpu, cuda, auto")
    parser.add_argument(
        "--resampled-mpp", type=float, default=0.501, help="tile mpp of the resampled scenario"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    args.how = [h for h in args.how.split(",") if h]
    if not args.how or set(args.how) - set(HOWS):
        parser.error(f"--how takes {', '.join(HOWS)}")
    return args


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


class FloatBatches:
    """The earlier path, the baseline: each worker makes the float32 tensors (``x / 127.5 -
    1`` in numpy, the class map float32) that then cross the processes."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __getitem__(self, step: int) -> dict[str, dict[str, Any]]:
        import numpy as np
        import torch

        pair = self.batches[step]
        for batch in pair.values():
            # (B, 3, S, S) in memory as the earlier sampler laid it out, then float32.
            image = np.ascontiguousarray(batch["image"].numpy()).astype(np.float32)
            image = image / 127.5 - 1.0
            batch["image"] = torch.from_numpy(image)
            batch["class_map"] = batch["class_map"].float()
        return pair


def old_loader(data: Any, *, stop: int, workers: int, pin: bool) -> Any:
    """The earlier ``make_loader``: the DataLoader's default conversion (every field a tensor,
    each crossing from a worker in shared memory of its own)."""
    from torch.utils.data import DataLoader

    return DataLoader(
        data,
        batch_size=None,
        sampler=range(stop),
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def to_device_old(pair: dict[str, dict[str, Any]], device: Any) -> dict[str, dict[str, Any]]:
    """The earlier trainer's copy: every (float) tensor to the device, nothing else."""
    return {
        d: {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for d, batch in pair.items()
    }


def to_device_new(pair: dict[str, dict[str, Any]], device: Any) -> dict[str, dict[str, Any]]:
    """What ``histolib train`` does: :func:`histolib_train.training.batches.to_device`."""
    from histolib_train.training.batches import to_device

    return {d: to_device(batch, device) for d, batch in pair.items()}


def read_inputs(pair: dict[str, dict[str, Any]]) -> None:
    """Read each pixel tensor once, as a training step's first layer does: on the CPU a tensor
    handed over in shared memory costs its page mapping only when first read, so a hand-off
    that never reads its inputs would leave that cost out (the ``old`` path's float32 tensors,
    four times the bytes, most of all). The ``loader`` path's uint8 tensors are read too."""
    for batch in pair.values():
        for key in ("image", "class_map"):
            batch[key].sum()


def _as_loaded(pair: dict[str, dict[str, Any]], device: Any) -> dict[str, dict[str, Any]]:
    """The ``loader`` path: the pair as the DataLoader hands it (nothing moved)."""
    return pair


def batches_per_second(
    dataset: Any, *, path: str, workers: int, batches: int, device: Any
) -> tuple[float, Any]:
    """Batches/s of a DataLoader over ``dataset`` (``batches`` after the first), each pair
    handed to ``device`` by ``path``, and the first pair on the device."""
    import torch

    from histolib_train.training.batches import make_loader

    move = {"new": to_device_new, "old": to_device_old, "loader": _as_loaded}[path]
    pin = device.type == "cuda"
    if path == "old":
        loader = old_loader(FloatBatches(dataset), stop=batches + 1, workers=workers, pin=pin)
    else:
        loader = make_loader(dataset, start=0, stop=batches + 1, workers=workers, pin_memory=pin)
    iterator = iter(loader)
    first = move(next(iterator), device)  # worker start-up and the first reads are left out
    t0 = time.perf_counter()
    count = 0
    for pair in iterator:
        read_inputs(move(pair, device))
        count += 1
    if pin:
        torch.cuda.synchronize(device)
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


def timed(dataset: Any, how: str, **kwargs: Any) -> tuple[float, Any]:
    """:func:`batches_per_second` with the slide cache of ``how``."""
    with slide_cache(how) if how != "png" else contextlib.nullcontext():
        return batches_per_second(dataset, **kwargs)


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return all(torch.equal(a[d][k].cpu(), b[d][k].cpu()) for d in ("he", "ihc") for k in a[d])


def _round(
    data: dict[str, Any], args: argparse.Namespace, workers: int, device: Any, order: int
) -> dict[tuple[str, str], tuple[float, Any]]:
    """One round: every source, new and old alternating (reversed when ``order`` is odd)."""
    runs = [(how, path) for how in args.how for path in PATHS]
    out = {}
    for how, path in runs if order % 2 == 0 else runs[::-1]:
        dataset = data["png" if how == "png" else "none"]
        out[how, path] = timed(
            dataset, how, path=path, workers=workers, batches=args.batches, device=device
        )
    return out


def measure(args: argparse.Namespace, manifests: dict, device: Any) -> list[dict[str, Any]]:
    """Every scenario x worker count x source: best-of-``--repeat`` batches/s, new and old."""
    rows = []
    for scenario in [s for s in args.scenarios.split(",") if s]:
        data = {
            fmt: paired_batches(manifests, scenario, fmt, args.batch) for fmt in ("png", "none")
        }
        n_tiles = len(data["png"].he) + len(data["png"].ihc)
        for workers in [int(w) for w in args.workers.split(",")]:
            best = {(how, path): 0.0 for how in args.how for path in PATHS}
            firsts: dict[tuple[str, str], Any] = {}
            for round_ in range(args.repeat):
                for key, (rate, first) in _round(data, args, workers, device, round_).items():
                    best[key], firsts[key] = max(best[key], rate), first
            reference = firsts["png" if "png" in args.how else args.how[0], "new"]
            for how in args.how:
                rows.append(
                    {
                        "scenario": scenario,
                        "workers": workers,
                        "source": how,
                        "tiles": n_tiles,
                        "new_batches_s": best[how, "new"],
                        "old_batches_s": best[how, "old"],
                        "new_over_old": best[how, "new"] / best[how, "old"],
                        "loader_batches_s": best[how, "loader"],
                        "loader_over_old": best[how, "loader"] / best[how, "old"],
                        "equal_batches": same_batch(reference, firsts[how, "new"])
                        and same_batch(firsts[how, "new"], firsts[how, "old"]),
                    }
                )
                print_row(rows[-1], args)
    return rows


def print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    tiles = 2 * args.batch
    print(
        f"{row['scenario']:>9}  workers {row['workers']}  {row['source']:>5}  batches/s "
        f"(tiles/s): new uint8 {row['new_batches_s']:5.2f} ({row['new_batches_s'] * tiles:5.1f})"
        f"  old float32 {row['old_batches_s']:5.2f} ({row['old_batches_s'] * tiles:5.1f})  "
        f"new/old {row['new_over_old']:.2f}x  uint8 as loaded {row['loader_batches_s']:5.2f} "
        f"({row['loader_over_old']:.2f}x)  same inputs: {row['equal_batches']}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from histolib_train.device import resolve_device

    device = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifests = make_manifests(args)
    print(
        f"slides {args.size} px, tiles {args.tile} px, batch {args.batch} tiles a domain "
        f"(2 domains) to {device}, {args.batches} batches timed, best of {args.repeat} "
        f"(set-up {time.perf_counter() - t0:.0f} s, cached in {args.work})"
    )
    rows = measure(args, manifests, device)
    result = {
        "size": args.size,
        "tile": args.tile,
        "batch": args.batch,
        "batches": args.batches,
        "repeat": args.repeat,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
