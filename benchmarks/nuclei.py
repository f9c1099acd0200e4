"""Precision and recall of the H&E normal-cell (small nucleus) detector on NuCLS nuclei.

Data: a NuCLS folder (``--data DIR``; default ``$HISTOLIB_SHARED_DATA/nuclei/nucls``, the
project's shared data folder, not part of a clone): 256x256 H&E tiles at 40x (0.25 um/px) with
hand-annotated nucleus centres ``x,y,class`` (x = column; classes in label_map.yaml). Each tile
is downsampled to 20x (128x128, area averaging with PIL's BOX filter), the annotated centres
are halved, and the library's ``he_normal`` pass (:func:`histolib.library.cells.detect_blobs`
on the H image: Gaussian 2, LoG sigma 1..2, threshold 0.1, the authors' defaults; not retuned)
is run. Detections and annotations are matched one to one
(``scipy.optimize.linear_sum_assignment`` on the distances, pairs farther than the radius
forbidden); precision = matched / detections, recall = matched / annotations, pooled over the
tiles. Radius 6 px at 20x = 3 um (about a small nucleus' radius); other radii are printed for
context. Recall is also given per annotated class, and for the cells the library keeps as
"normal" (members of >= 3-cell clusters).

    python benchmarks/nuclei.py
    python benchmarks/nuclei.py --radius 6 --radii 4 6 8
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUCLS = Path(os.environ.get("HISTOLIB_SHARED_DATA") or ".") / "nuclei" / "nucls"


def load_tiles(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, 20x RGB, centres (n, 2) x/y at 20x, classes (n,)) for each annotated tile."""
    from PIL import Image

    out = []
    for image_path in sorted((folder / "images").glob("*.png")):
        labels = folder / "labels" / f"{image_path.stem}.csv"
        if not labels.is_file():
            continue
        with Image.open(image_path) as img:
            rgb40 = img.convert("RGB")
            rgb20 = np.asarray(rgb40.resize((rgb40.width // 2, rgb40.height // 2), Image.BOX))
        table = np.loadtxt(labels, delimiter=",", ndmin=2)
        centres = table[:, :2] / 2.0 if len(table) else np.zeros((0, 2))
        classes = table[:, 2].astype(int) if len(table) else np.zeros(0, dtype=int)
        out.append((image_path.stem, rgb20, centres, classes))
    return out


def class_names(folder: Path) -> dict[int, str]:
    import yaml

    path = folder / "label_map.yaml"
    if not path.is_file():
        return {}
    return {int(k): str(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()}


def match(detected: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matching within ``radius``; returns (k, 2) index pairs (detected, truth)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(detected) == 0 or len(truth) == 0:
        return np.zeros((0, 2), dtype=int)
    dist = cdist(detected, truth)
    cost = np.where(dist <= radius, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    ok = dist[rows, cols] <= radius
    return np.stack([rows[ok], cols[ok]], axis=1)


def evaluate(tiles, detections, radius: float, names: dict[int, str]) -> dict[str, float]:
    n_det = n_true = n_match = 0
    per_class: dict[int, list[int]] = {}
    for (_, _, truth, classes), det in zip(tiles, detections, strict=True):
        pairs = match(det, truth, radius)
        n_det += len(det)
        n_true += len(truth)
        n_match += len(pairs)
        hit = np.zeros(len(truth), dtype=bool)
        hit[pairs[:, 1]] = True
        for cls in np.unique(classes):
            stats = per_class.setdefault(int(cls), [0, 0])
            stats[0] += int(hit[classes == cls].sum())
            stats[1] += int((classes == cls).sum())
    precision = n_match / n_det if n_det else float("nan")
    recall = n_match / n_true if n_true else float("nan")
    result = {
        "detections": n_det,
        "annotated": n_true,
        "matched": n_match,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if n_match else 0.0,
    }
    for cls, (hits, total) in sorted(per_class.items()):
        result[f"recall[{names.get(cls, cls)}]"] = hits / total if total else float("nan")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=NUCLS, help="NuCLS folder")
    parser.add_argument("--radius", type=float, default=6.0, help="match radius, px at 20x")
    parser.add_argument(
        "--radii", type=float, nargs="*", default=[4.0, 8.0], help="further radii to print"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from histolib.library.cells import detect_blobs
    from histolib.library.clusters import find_clusters
    from histolib.library.params import LibraryParams
    from histolib.stain import separate

    if not (args.data / "images").is_dir():
        print(f"no NuCLS data at {args.data}")
        return 1
    tiles = load_tiles(args.data)
    names = class_names(args.data)
    p = LibraryParams()
    d = p.detector_params("he_normal")
    all_blobs, members = [], []
    for _, rgb, _, _ in tiles:
        h = separate(rgb, channels="h", dtype=np.float64).h
        blobs = detect_blobs(
            h,
            gauss_sigma=d.gauss_sigma,
            min_sigma=d.min_sigma,
            max_sigma=d.max_sigma,
            threshold=d.threshold,
        )
        all_blobs.append(blobs.xy)
        clusters = find_clusters(
            blobs.xy, max_distance=p.graph_distance, min_size=p.min_cluster_size
        )
        members.append(blobs.xy[clusters.members()])
    print(
        f"NuCLS: {len(tiles)} tiles, 40x -> 20x ({tiles[0][1].shape[1]} px), "
        f"{sum(len(t[2]) for t in tiles)} annotated nuclei; detector he_normal "
        f"(Gaussian {d.gauss_sigma}, sigma {d.min_sigma}..{d.max_sigma}, "
        f"threshold {d.threshold})"
    )
    for label, dets in (
        ("all LoG detections", all_blobs),
        ("library 'normal' cells (>= 3-cell clusters)", members),
    ):
        for radius in [args.radius, *[r for r in args.radii if r != args.radius]]:
            res = evaluate(tiles, dets, radius, names)
            head = (
                f"{label}, radius {radius:g} px ({radius * 0.5:g} um): "
                f"precision {res['precision']:.3f} recall {res['recall']:.3f} "
                f"F1 {res['f1']:.3f} ({res['matched']}/{res['detections']} detections, "
                f"{res['annotated']} annotated)"
            )
            print(head)
            if radius == args.radius:
                per = ", ".join(
                    f"{k[7:-1]} {v:.2f}" for k, v in res.items() if k.startswith("recall[")
                )
                print(f"    recall by class: {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
