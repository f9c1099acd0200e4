"""Benchmark reading hostile contour files: self-intersecting polygons and many ImageScope holes.

Writes, in ``--work`` (default a temporary folder):

- ``random<N>.geojson``: one polygon of N random vertices (about N^2/10 self-intersections),
  for N in ``--random`` (default 1,000 and 200,000);
- ``twisted200k.geojson``: a 200,000-vertex circle with one small twist (a realistic contour
  that needs repair);
- ``holes<N>.xml``: an ImageScope file of 20 regions and N NegativeROA holes (default 20,000).

Each file is read by ``histolib.annotations.reading.read_annotations_report`` in a fresh
process: wall seconds, peak resident memory (MiB) and the outcome (objects read, or the one-line
refusal). The baseline, in the same run on the small sizes only, is GEOS's default repair
(``shapely.make_valid``, ``linework`` method) of the same random polygons, which histolib used
before: it grows about with the cube of the vertex count.

    python benchmarks/contour_repair.py                       # the figures of docs/limits.md
    python benchmarks/contour_repair.py --random 1000 --holes 2000 --baseline 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READ = """
import sys
from histolib.annotations.reading import read_annotations_report
from histolib.errors import HistolibError
try:
    items, notes = read_annotations_report(sys.argv[1])
    print(f"{len(items)} object(s); {'; '.join(notes)}")
except HistolibError as exc:
    print(f"refused: {exc}")
"""

BASELINE = """
import sys, numpy as np, shapely
from shapely.geometry import Polygon
xy = np.random.default_rng(0).uniform(0, 100_000, (int(sys.argv[1]), 2)).round(1)
print(shapely.make_valid(Polygon(xy)).geom_type)
"""


def _feature_collection(path: Path, ring: list[list[float]]) -> Path:
    feature = {
        "type": "Feature",
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def _square(x: float, y: float, side: float) -> str:
    corners = [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]
    return "".join(f'<Vertex X="{a:.1f}" Y="{b:.1f}" Z="0"/>' for a, b in corners)


def write_holes(path: Path, n_holes: int, n_regions: int = 20) -> Path:
    """``n_regions`` strips, each holding ``n_holes / n_regions`` square NegativeROA holes."""
    per = max(1, n_holes // n_regions)
    regions, rid = [], 0
    for k in range(n_regions):
        y0 = k * 1100
        shell = [(0, y0), (per * 100, y0), (per * 100, y0 + 1000), (0, y0 + 1000)]
        verts = "".join(f'<Vertex X="{a}" Y="{b}" Z="0"/>' for a, b in shell)
        regions.append(f'<Region Id="{rid}" Type="0" NegativeROA="0"><Vertices>{verts}'
                       "</Vertices></Region>")  # fmt: skip
        rid += 1
        for i in range(per):
            square = _square(50 + i * 100, y0 + 500, 40)
            regions.append(f'<Region Id="{rid}" Type="0" NegativeROA="1"><Vertices>{square}'
                           "</Vertices></Region>")  # fmt: skip
            rid += 1
    path.write_text('<?xml version="1.0"?><Annotations><Annotation Id="1" Name="Tumor"><Regions>'
                    + "".join(regions) + "</Regions></Annotation></Annotations>")  # fmt: skip
    return path


def write_files(work: Path, randoms: list[int], holes: int) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    files = []
    for n in randoms:
        xy = rng.uniform(0, 100_000, (n, 2)).round(1).tolist()
        files.append(_feature_collection(work / f"random{n}.geojson", xy))
    t = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    circle = np.c_[50_000 + 40_000 * np.cos(t), 50_000 + 40_000 * np.sin(t)]
    circle[1000:1010] = circle[1000:1010][::-1]  # one small figure-of-eight loop
    files.append(_feature_collection(work / "twisted200k.geojson", circle.tolist()))
    files.append(write_holes(work / f"holes{holes}.xml", holes))
    return files


PEAK = """
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def measure(code: str, arg: str, timeout: float) -> dict[str, object]:
    """Run ``code`` with ``arg`` in a fresh Python; wall seconds, its peak RSS (MiB), its
    output."""
    start = time.perf_counter()
    peak: float | None = None
    try:
        done = subprocess.run([sys.executable, "-c", code + PEAK, arg], capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        if done.returncode == 0 and lines and lines[-1].isdigit():
            peak = int(lines[-1]) / 1024
        output = (done.stdout.strip() or (lines[-1] if lines else "no output"))[:160]
    except subprocess.TimeoutExpired:
        output = f"still running after {timeout:g} s (stopped)"
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "peak_mib": None if peak is None else round(peak),
            "output": output}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--random", type=int, nargs="+", default=[1000, 200_000])
    parser.add_argument("--holes", type=int, default=20_000)
    parser.add_argument("--baseline", type=int, nargs="*", default=[100, 200, 400])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="histolib-contours-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for path in write_files(work, args.random, args.holes):
        rows[f"histolib {path.name}"] = measure(READ, str(path), args.timeout)
    for n in args.baseline:
        rows[f"baseline make_valid linework, {n} random vertices"] = measure(
            BASELINE, str(n), args.timeout
        )
    for name, row in rows.items():
        print(f"{name}: {row['seconds']} s, peak {row['peak_mib']} MiB; {row['output']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
