"""Benchmark the cell-library pipeline against the authors' logic, and check identity.

Baseline: a straightforward implementation of the authors' code (jcboyd/miccai2022-roigan,
``data/library_utils.py`` + notebooks): all three stains through ``hed2rgb``, ``blob_log``,
their pairwise-distance clustering loop, ``ConvexHull`` + PIL hulls, ``dilation(disk(10))``,
``closing(disk(9))``. Candidate: :func:`histolib.library.build.tile_cells` (FFT scale space,
distance
transforms, k-d tree graph). Both run in this process on the same tiles; the script prints
tiles/s on one core for each, the ratio, the same with 2 worker processes, and whether every
tile gave identical boxes and labels.

Tiles: the real roigan tiles vendored in ``tests/data/tiles/roigan`` (one H&E with its tumour
annotation, one IHC), the real H&E tiles of the project's shared data folder when
``--shared-data DIR`` (or ``HISTOLIB_SHARED_DATA``) names it (``nuclei/nucls/images/*.png``,
256 px NuCLS tiles, taken with a whole-tile tumour mask; the script says when the folder is
absent), and synthetic tiles rendered by :mod:`histolib.synthetic` (a registered H&E / IHC
layout with tumour masks).

    python benchmarks/library.py                 # defaults: 24 synthetic tiles a stain
    python benchmarks/library.py --synthetic 100 --repeat 5 --shared-data DIR

Timings on a shared machine are noisy: each timed pass runs the baseline and histolib back
to back (alternating which goes first), and the ratio is reported per pass (median and range).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "tests" / "data"


# --------------------------------------------------------------------------- the baseline


def _decompose(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(img)
    null = np.zeros_like(hed[:, :, 0])
    h = hed2rgb(np.stack((hed[:, :, 0], null, null), axis=-1))
    e = hed2rgb(np.stack((null, hed[:, :, 1], null), axis=-1))
    d = hed2rgb(np.stack((null, null, hed[:, :, 2]), axis=-1))
    return h, e, d


def _get_cells(img, gauss_sigma, min_sigma, max_sigma, threshold):
    from skimage.feature import blob_log
    from skimage.filters import gaussian

    inv = 1 - gaussian(img, sigma=gauss_sigma)
    blobs = blob_log(
        inv, min_sigma=min_sigma, max_sigma=max_sigma, threshold=threshold, exclude_border=True
    )
    blobs[:, 2] = blobs[:, 2] * np.sqrt(2)
    return blobs


def _find_clusters(points: np.ndarray) -> list[set]:
    from scipy.spatial.distance import cdist

    dists = cdist(points, points)
    clusters: list[set] = []

    def find(point):
        for idx, cluster in enumerate(clusters):
            if point in cluster:
                return idx
        return None

    n = len(points)
    for i in range(n):
        pi = tuple(points[i])[::-1]
        for j in range(n):
            if j == i or dists[i, j] > 35:
                continue
            pj = tuple(points[j])[::-1]
            ci, cj = find(pi), find(pj)
            if ci is None and cj is None:
                clusters.append({pi, pj})
            elif ci is None:
                clusters[cj].add(pi)
            elif cj is None:
                clusters[ci].add(pj)
            elif ci != cj:
                merged = clusters[ci] | clusters[cj]
                a, b = clusters[ci], clusters[cj]
                clusters.remove(a)
                clusters.remove(b)
                clusters.append(merged)
    return clusters


def _boxes(cells, label, shape):
    out = []
    for cell in cells:
        y, x = map(int, cell)
        top, left = y - 24, x - 24
        if top >= 0 and left >= 0 and top + 48 <= shape[0] and left + 48 <= shape[1]:
            out.append((left, top, left + 48, top + 48, label))
    return out


def baseline_he(img: np.ndarray, annotation: np.ndarray) -> list[tuple]:
    """The authors' H&E pipeline; boxes as (x0, y0, x1, y1, label)."""
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull
    from skimage.color import rgb2gray
    from skimage.morphology import dilation, disk

    h, _, _ = _decompose(img)
    h_gray = rgb2gray(h)
    normal = _get_cells(h_gray, 2, 1, 2, 0.1)
    points = normal[:, :2]
    clusters = _find_clusters(points) if len(points) else []
    mask = Image.new("1", (img.shape[1], img.shape[0]), 0)
    members = []
    for cluster in clusters:
        if len(cluster) < 3:
            continue
        members += list(cluster)
        cl = list(cluster)
        try:
            hull = ConvexHull(cl)
        except Exception:  # the authors' code crashes here on collinear cells
            ImageDraw.Draw(mask).line([min(cl), max(cl)], fill=1)
            continue
        ImageDraw.Draw(mask).polygon([tuple(cl[i]) for i in hull.vertices], outline=1, fill=1)
    hull_mask = np.array(mask)
    in_big = {p for c in clusters if len(c) >= 3 for p in c}
    for p in points:
        if tuple(p)[::-1] not in in_big:
            hull_mask[int(p[0]), int(p[1])] = True
    full = annotation & ~dilation(hull_mask, disk(10))
    cancer = _get_cells(h_gray, 1, 10, 12, 0.01)
    cancer_in = [c[:2] for c in cancer if full[int(c[0]), int(c[1])]]
    normal_rc = [(p[1], p[0]) for p in members]
    return sorted(_boxes(normal_rc, "normal", img.shape) + _boxes(cancer_in, "cancer", img.shape))


def baseline_ihc(img: np.ndarray) -> list[tuple]:
    """The authors' IHC pipeline; boxes as (x0, y0, x1, y1, label)."""
    from skimage.color import rgb2gray
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import closing, disk

    h, _, d = _decompose(img)
    h_gray, d_gray = rgb2gray(h), rgb2gray(d)
    filtered = gaussian(d_gray, sigma=1)
    lo, hi = filtered.min(), filtered.max()
    t = lo if lo == hi else threshold_otsu(filtered)
    mask = closing(filtered < t, disk(9))
    if d_gray.mean() > 0.85:
        mask[:] = False
    normal = _get_cells(h_gray, 2, 1, 3, 0.08)
    normal_out = [c[:2] for c in normal if not mask[int(c[0]), int(c[1])]]
    cancer = _get_cells(1 - d_gray, 2, 7, 10, 0.02)
    cancer_in = [c[:2] for c in cancer if mask[int(c[0]), int(c[1])]]
    return sorted(_boxes(normal_out, "normal", img.shape) + _boxes(cancer_in, "cancer", img.shape))


# --------------------------------------------------------------------------- the candidate


def histolib_boxes(img: np.ndarray, stain: str, mask: np.ndarray | None) -> list[tuple]:
    from histolib.library.detect import tile_cells

    cells = tile_cells(img, stain=stain, mask=mask)
    return sorted(
        (*(int(v) for v in box), label)
        for box, label in zip(cells.boxes, cells.labels, strict=True)
    )


def run_one(job: tuple[str, str, np.ndarray, np.ndarray | None]) -> list[tuple]:
    impl, stain, img, mask = job
    if impl == "baseline":
        return baseline_he(img, mask) if stain == "he" else baseline_ihc(img)
    return histolib_boxes(img, stain, mask)


# --------------------------------------------------------------------------- tiles


Tiles = dict[str, list[tuple[np.ndarray, np.ndarray | None]]]


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def real_tiles(shared: Path | None) -> tuple[Tiles, str]:
    """The vendored roigan tiles, plus the shared folder's NuCLS H&E tiles; and a note on
    where they came from (the shared folder absent or not given included)."""
    folder = VENDORED / "tiles" / "roigan"
    mask = _rgb(folder / "he_mask_000.png")[:, :, 0] > 0
    tiles: Tiles = {
        "he": [(_rgb(folder / "he_000.png"), mask)],
        "ihc": [(_rgb(folder / "ihc_000.png"), None)],
    }
    if shared is None:
        return tiles, (
            "shared data: not given (--shared-data DIR or HISTOLIB_SHARED_DATA); real tiles "
            "are the 2 vendored roigan tiles only"
        )
    nucls = sorted((shared / "nuclei" / "nucls" / "images").glob("*.png"))
    if not nucls:
        return tiles, (
            f"shared data: {shared} is absent or holds no nuclei/nucls/images/*.png; real "
            "tiles are the 2 vendored roigan tiles only"
        )
    for path in nucls:
        he = _rgb(path)
        tiles["he"].append((he, np.ones(he.shape[:2], dtype=bool)))
    return tiles, f"shared data: {shared}: {len(nucls)} NuCLS H&E tiles (whole-tile tumour mask)"


def synthetic_tiles(n: int, seed: int) -> Tiles:
    from histolib import synthetic

    rng = np.random.default_rng(seed)
    tiles: dict[str, list] = {"he": [], "ihc": []}
    layout_seed = seed
    while len(tiles["he"]) < n:
        layout = synthetic.make_layout(2048, 2048, seed=layout_seed)
        layout_seed += 1
        centres = [t.centroid for t in layout.tumours]
        spots = [(c.x, c.y) for c in centres] + [
            tuple(rng.uniform(300, 1750, 2)) for _ in range(max(2, n // 4))
        ]
        for cx, cy in spots:
            x0, y0 = int(cx) - 128, int(cy) - 128
            he = synthetic.render_region(layout, x0, y0, 256, 256, stain="he")
            if he.mean() > 235:  # background
                continue
            tiles["he"].append((he, synthetic.tumour_mask(layout, x0, y0, 256, 256)))
            tiles["ihc"].append(
                (synthetic.render_region(layout, x0, y0, 256, 256, stain="ihc"), None)
            )
            if len(tiles["he"]) >= n:
                break
    return tiles


# --------------------------------------------------------------------------- measuring


def time_interleaved(
    stain: str, tiles: list[tuple[np.ndarray, np.ndarray | None]], repeat: int
) -> dict[str, object]:
    """Tiles/s of the baseline and of histolib, timed back to back ``repeat`` times (the first
    of the pair alternating), the ratio of each pair, and both implementations' boxes."""
    results = {
        impl: [run_one((impl, stain, img, mask)) for img, mask in tiles]  # warm-up + result
        for impl in ("baseline", "histolib")
    }
    rates: dict[str, list[float]] = {"baseline": [], "histolib": []}
    for i in range(repeat):
        order = ("baseline", "histolib") if i % 2 == 0 else ("histolib", "baseline")
        for impl in order:
            t0 = time.perf_counter()
            for img, mask in tiles:
                run_one((impl, stain, img, mask))
            rates[impl].append(len(tiles) / (time.perf_counter() - t0))
    ratios = [f / b for f, b in zip(rates["histolib"], rates["baseline"], strict=True)]
    return {"rates": rates, "ratios": ratios, "results": results}


def time_parallel(impl: str, stain: str, tiles, workers: int) -> float:
    from histolib.core.progress import imap_processes

    jobs = [(impl, stain, img, mask) for img, mask in tiles]
    list(imap_processes(run_one, jobs[: workers * 2], workers=workers))  # start the pool
    t0 = time.perf_counter()
    out = list(imap_processes(run_one, jobs, workers=workers))
    elapsed = time.perf_counter() - t0
    bad = [r for _, r in out if isinstance(r, BaseException)]
    if bad:
        raise bad[0]
    return len(jobs) / elapsed


def _table_row(set_name: str, stain: str, tiles, timed: dict) -> tuple[str, bool]:
    base, fast = timed["results"]["baseline"], timed["results"]["histolib"]
    same = sum(a == b for a, b in zip(base, fast, strict=True))
    n_boxes = sum(len(b) for b in fast)
    n_cancer = sum(1 for b in fast for box in b if box[4] == "cancer")
    ratios = sorted(timed["ratios"])
    row = (
        f"{set_name:<10}{stain:<6}{len(tiles):>4}"
        f"{statistics.median(timed['rates']['baseline']):>14.1f}"
        f"{statistics.median(timed['rates']['histolib']):>14.1f}"
        f"{statistics.median(ratios):>8.2f}{f'{ratios[0]:.2f}-{ratios[-1]:.2f}':>12}"
        f"{f'{same}/{len(tiles)}':>11}{f'{n_boxes} ({n_cancer})':>15}"
    )
    return row, same == len(tiles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, default=24, help="synthetic tiles a stain")
    parser.add_argument("--repeat", type=int, default=3, help="timed back-to-back passes")
    parser.add_argument("--workers", type=int, default=2, help="processes for the pool run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=os.environ.get("HISTOLIB_SHARED_DATA") or None,
        help="the project's shared data folder (more real tiles); default $HISTOLIB_SHARED_DATA",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from histolib.library import cells as cells_module

    real, note = real_tiles(args.shared_data)
    sets = {"real": real, "synthetic": synthetic_tiles(args.synthetic, args.seed)}
    print(f"cpu cores: {os.cpu_count()}; repeat {args.repeat}; {note}")
    print(
        f"{'tiles':<10}{'stain':<6}{'n':>4}{'baseline t/s':>14}{'histolib t/s':>14}"
        f"{'ratio':>8}{'range':>12}{'identical':>11}{'boxes (cancer)':>15}"
    )
    all_identical = True
    for set_name, by_stain in sets.items():
        for stain in ("he", "ihc"):
            tiles = by_stain[stain]
            if not tiles:
                continue
            row, same = _table_row(
                set_name, stain, tiles, time_interleaved(stain, tiles, args.repeat)
            )
            all_identical &= same
            print(row, flush=True)
    print(
        f"detector passes: {cells_module.FALLBACKS['fast']} FFT, "
        f"{cells_module.FALLBACKS['fallback']} fell back to blob_log (near ties)"
    )
    if args.workers > 1:
        print(f"\nwith {args.workers} worker processes (synthetic tiles):")
        for stain in ("he", "ihc"):
            tiles = sets["synthetic"][stain]
            base = time_parallel("baseline", stain, tiles, args.workers)
            fast = time_parallel("histolib", stain, tiles, args.workers)
            print(
                f"  {stain:<4} baseline {base:7.1f} tiles/s   histolib {fast:7.1f} tiles/s"
                f"   ratio {fast / base:5.2f}"
            )
    print("\nidentical boxes on every tile:", "yes" if all_identical else "NO")
    return 0 if all_identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
