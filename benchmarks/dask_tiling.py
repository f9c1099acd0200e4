"""Benchmark ``histolib tile`` on a Dask cluster against the local process pool.

A set of synthetic H&E slides (:func:`histolib.synthetic.make_slide`, built once in
``--work``, default ``/tmp/histolib-bench/dask``) is tiled, with their tumour contours, by the
user's command ``histolib tile`` (a subprocess: interpreter start and imports included) four
ways, in one run:

* the local pool, ``--workers 1`` and ``--workers 2``;
* a Dask ``LocalCluster`` of 1 and of 2 worker processes (one thread each, on loopback),
  ``--scheduler tcp://...``; each cluster is started once, before its runs, as a cluster on
  a real deployment is (its start-up is reported apart, not counted in the runs).

Every configuration runs ``--repeat`` times (interleaved, so that other work on the machine
weighs on all alike; the first Dask run of a cluster also pays the imports in its fresh
workers) and the fastest run is kept. The figure the issue asks for is the ratio of the 2-worker
Dask run to the 2-process local run (the Dask path within 15 %: ratio <= 1.15); the speed-up
of 2 workers over 1 is given for both. Every run's manifest must equal the local 2-process
run's, row for row.

Besides wall-clock seconds, each run's CPU seconds (user + system) are summed over every
process taking part: the ``histolib tile`` process and its pool, and for Dask the worker
processes and this process (it hosts the scheduler). On a machine shared with other work the
wall-clock figures are noisy; the CPU seconds say what the Dask path costs in work.

With one worker the two paths differ in kind: ``--workers 1`` runs everything in one process,
while with a 1-worker cluster the ``histolib tile`` process finishes slides (masks, QC
pictures, parts) while the worker plans and cuts the next ones.

Run ``python benchmarks/dask_tiling.py`` (16 slides of 4096 px, 1,805 tiles) or
``--slides 4 --size 2048 --repeat 1`` for a quick run; ``--json OUT`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("local-1", "local-2", "dask-1", "dask-2")
TARGET_RATIO = 1.15


def build_slides(work: Path, *, count: int, size: int) -> Path:
    """The folder of ``count`` synthetic H&E slides of ``size`` px (and their contours),
    rendered once and reused."""
    from histolib.synthetic.slides import make_slide

    folder = work / f"slides_{count}x{size}"
    for seed in range(count):
        make_slide(
            folder,
            name=f"bench_{seed:02d}",
            stain="he",
            seed=seed,
            width=size,
            height=size,
            workers=2,
        )
    return folder


def cpu_seconds() -> float:
    """CPU seconds so far of this process, its waited-for children and its live descendants
    (the Dask workers)."""
    import resource

    import psutil

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended meanwhile: counted in RUSAGE_CHILDREN once waited for
            continue
        total += times.user + times.system
    return total


def run_tile(slides: Path, out: Path, *, how: Sequence[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``histolib tile SLIDES --out OUT --annotations SLIDES
    *how`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "histolib_cli.main", "tile", str(slides)]
    command += ["--out", str(out), "--annotations", str(slides), "--no-progress", *how]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, cpu_seconds() - cpu


def same_manifest(path: Path, reference: Path) -> bool:
    """Whether two manifests hold the same rows (and the same parameters)."""
    from histolib.tileset.manifest import read_manifest

    gdf, meta = read_manifest(path)
    ref, ref_meta = read_manifest(reference)
    return bool(gdf.to_wkt().equals(ref.to_wkt())) and meta["params"] == ref_meta["params"]


def start_clusters() -> tuple[dict[str, Any], dict[str, float]]:
    """The 1- and 2-worker local Dask clusters, and the seconds each took to start."""
    from histolib.core.dask_cluster import start_local_cluster

    clusters, seconds = {}, {}
    for n in (1, 2):
        start = time.perf_counter()
        clusters[f"dask-{n}"] = start_local_cluster(n, silence_logs=logging.ERROR)
        seconds[f"dask-{n}"] = time.perf_counter() - start
    return clusters, seconds


def measure(
    slides: Path, work: Path, *, repeat: int, clusters: dict[str, Any]
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, bool]]:
    """Every configuration ``repeat`` times, interleaved; the (wall, CPU) seconds of each run
    and whether each configuration's manifests equal the local 2-process run's."""
    how = {
        "local-1": ["--workers", "1"],
        "local-2": ["--workers", "2"],
        **{name: ["--scheduler", c.scheduler_address] for name, c in clusters.items()},
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    same: dict[str, bool] = dict.fromkeys(CONFIGS, True)
    reference = work / "out_local-2" / "tiles.parquet"
    for _ in range(repeat):
        for name in ("local-2", "local-1", "dask-2", "dask-1"):
            out = work / f"out_{name}"
            times[name].append(run_tile(slides, out, how=how[name]))
            same[name] = same[name] and same_manifest(out / "tiles.parquet", reference)
    return times, same


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="histolib tile over a Dask cluster against the local process pool"
    )
    parser.add_argument("--slides", type=int, default=16, help="synthetic slides (16)")
    parser.add_argument("--size", type=int, default=4096, help="slide side in px (4096)")
    parser.add_argument("--repeat", type=int, default=3, help="keep the fastest of N runs (3)")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/histolib-bench/dask"), help="slides and outputs"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def report(figures: dict[str, Any]) -> str:
    """The table of figures as text."""
    tiles = figures["tiles"]
    local2 = figures["fastest"]["local-2"]
    local2_cpu = figures["cpu_s"]["local-2"]
    lines = [
        f"{figures['slides']} slides of {figures['size']} px, {tiles} tiles; fastest of "
        f"{figures['repeat']} run(s); CPUs: {figures['cpus']}",
        f"{'run':<8} {'wall s':>8} {'tiles/s':>8} {'x local-2':>10} {'x own 1-worker':>15} "
        f"{'CPU s':>8} {'CPU x local-2':>14} same",
    ]
    for name in CONFIGS:
        wall, cpu = figures["fastest"][name], figures["cpu_s"][name]
        one = figures["fastest"][name[:-1] + "1"]
        lines.append(
            f"{name:<8} {wall:>8.2f} {tiles / wall:>8.1f} {wall / local2:>10.3f} "
            f"{one / wall:>15.2f} {cpu:>8.2f} {cpu / local2_cpu:>14.3f} "
            f"{'yes' if figures['same'][name] else 'NO'}"
        )
    ratio = figures["dask2_over_local2"]
    verdict = "yes" if ratio <= TARGET_RATIO else "no"
    lines.append(
        f"Dask 2 workers / local pool of 2: {ratio:.3f} (within {TARGET_RATIO - 1:.0%}: {verdict})"
    )
    starts = ", ".join(f"{k} {v:.1f} s" for k, v in figures["cluster_start_s"].items())
    lines.append(f"cluster start-up (not in the runs): {starts}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from histolib.core.parallel import available_cpus
    from histolib.tileset.manifest import read_manifest

    args.work.mkdir(parents=True, exist_ok=True)
    slides = build_slides(args.work, count=args.slides, size=args.size)
    clusters, started = start_clusters()
    try:
        times, same = measure(slides, args.work, repeat=args.repeat, clusters=clusters)
    finally:
        for cluster in clusters.values():
            cluster.close()
    fastest = {name: min(wall for wall, _ in values) for name, values in times.items()}
    cpu = {name: min(c for _, c in values) for name, values in times.items()}
    gdf, _ = read_manifest(args.work / "out_local-2" / "tiles.parquet")
    figures = {
        "slides": args.slides,
        "size": args.size,
        "tiles": len(gdf),
        "repeat": args.repeat,
        "cpus": available_cpus(),
        "times_s": times,
        "fastest": fastest,
        "cpu_s": cpu,
        "same": same,
        "cluster_start_s": started,
        "dask2_over_local2": fastest["dask-2"] / fastest["local-2"],
        "speedup_local": fastest["local-1"] / fastest["local-2"],
        "speedup_dask": fastest["dask-1"] / fastest["dask-2"],
    }
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
