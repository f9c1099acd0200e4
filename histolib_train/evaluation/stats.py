"""Intervals and paired comparisons of per-tile scores.

Every mean an evaluation reports comes with a 95 % percentile bootstrap interval. Tiles of one
slide are correlated (they share staining, scanner, patient), so where the scored tiles come
from at least :data:`MIN_SLIDES` slides the bootstrap resamples *slides* (a cluster bootstrap:
each replicate draws slides with replacement and takes the mean over all their tiles); with
fewer slides it resamples tiles, and says so (``unit``). Replicates are drawn from a seeded
generator: the same scores give the same intervals.

Two models scored on the same tiles are compared by the per-tile difference (first minus
second) on the tiles both scored: its mean, the bootstrap interval of that mean (same unit) and
the two-sided Wilcoxon signed-rank p-value (:func:`scipy.stats.wilcoxon`, zero differences
dropped) of the differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Fewest distinct slides for which the bootstrap resamples slides rather than tiles.
MIN_SLIDES = 5
LEVEL = 0.95
N_BOOT = 2000
SEED = 0
#: Metrics compared model against model.
PAIRED_METRICS = ("dice_empty0", "dice", "bac")


@dataclass(frozen=True)
class Resampling:
    """How intervals are drawn: ``unit`` is ``slides`` or ``tiles``."""

    unit: str
    n_units: int
    n_boot: int = N_BOOT
    seed: int = SEED
    level: float = LEVEL

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (for ``summary.json``)."""
        return {
            "unit": self.unit,
            "n_units": self.n_units,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "level": self.level,
            "method": "percentile bootstrap of the mean"
            + (", slides resampled with all their tiles" if self.unit == "slides" else ""),
        }

    @property
    def text(self) -> str:
        """One sentence for a table's notes."""
        what = (
            f"slides resampled ({self.n_units} slides, each with all its tiles)"
            if self.unit == "slides"
            else f"tiles resampled (fewer than {MIN_SLIDES} slides: {self.n_units} tiles)"
        )
        return (
            f"[a, b]: {self.level:.0%} bootstrap interval of the mean, {what}, "
            f"{self.n_boot} replicates, seed {self.seed}."
        )


def resampling_for(slide_ids: Sequence[str], *, n_boot: int = N_BOOT, seed: int = SEED):
    """The :class:`Resampling` of tiles from ``slide_ids`` (one per tile): slides when there
    are at least :data:`MIN_SLIDES` distinct ones, else tiles."""
    n_slides = len({str(s) for s in slide_ids})
    if n_slides >= MIN_SLIDES:
        return Resampling("slides", n_slides, n_boot, seed)
    return Resampling("tiles", len(slide_ids), n_boot, seed)


def bootstrap_interval(
    values: Sequence[float], slide_ids: Sequence[str], resampling: Resampling
) -> list[float] | None:
    """The bootstrap interval ``[low, high]`` of the mean of the finite ``values``.

    ``slide_ids`` (one per value) are the clusters when ``resampling.unit`` is ``slides``.
    None when no value is finite.
    """
    array = np.asarray([float(v) for v in values], dtype=float)
    keep = np.isfinite(array)
    array = array[keep]
    if array.size == 0:
        return None
    if resampling.unit == "slides":
        clusters = np.asarray([str(s) for s in slide_ids], dtype=object)[keep]
        _, index = np.unique(clusters, return_inverse=True)
    else:
        index = np.arange(array.size)
    n_clusters = int(index.max()) + 1
    sums = np.bincount(index, weights=array, minlength=n_clusters)
    counts = np.bincount(index, minlength=n_clusters).astype(float)
    rng = np.random.default_rng(resampling.seed)
    draws = rng.integers(0, n_clusters, size=(resampling.n_boot, n_clusters))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - resampling.level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return [float(low), float(high)]


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is 0, None when
    there is none."""
    from scipy.stats import wilcoxon

    if differences.size == 0:
        return None
    if not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(
    first: Sequence[Mapping[str, Any]],
    second: Sequence[Mapping[str, Any]],
    metric: str,
    resampling: Resampling,
) -> dict[str, Any]:
    """``first - second`` on ``metric`` over the tiles both scored (matched by ``tile_id``):
    the mean difference, its interval, the Wilcoxon p-value and how many tiles were paired."""
    other = {str(r["tile_id"]): r for r in second}
    diffs, slides = [], []
    for row in first:
        match = other.get(str(row["tile_id"]))
        if match is None:
            continue
        a, b = float(row[metric]), float(match[metric])
        if math.isfinite(a) and math.isfinite(b):
            diffs.append(a - b)
            slides.append(str(row.get("slide_id", "")))
    array = np.asarray(diffs, dtype=float)
    return {
        "metric": metric,
        "n_tiles": int(array.size),
        "mean_difference": float(array.mean()) if array.size else None,
        "ci": bootstrap_interval(array, slides, resampling),
        "wilcoxon_p": wilcoxon_p(array),
    }


def paired_comparisons(
    rows_by_model: Mapping[str, Sequence[Mapping[str, Any]]],
    resampling: Resampling,
    *,
    metrics: Sequence[str] = PAIRED_METRICS,
) -> list[dict[str, Any]]:
    """Every pair of models (in the order given, first minus second) on every metric."""
    names = list(rows_by_model)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for metric in metrics:
                result = paired_comparison(rows_by_model[a], rows_by_model[b], metric, resampling)
                out.append({"first": a, "second": b, **result})
    return out


def fmt_ci(ci: Sequence[float] | None) -> str:
    """``[0.412, 0.587]`` or ``n/a``."""
    return "n/a" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_p(p: float | None) -> str:
    """A p-value for a table."""
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def paired_markdown(paired: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """Markdown lines: one row per pair and metric of ``metrics``."""
    rows = [p for p in paired if p["metric"] in metrics]
    if not rows:
        return []
    lines = [
        "Paired differences (first minus second, on the same tiles):",
        "",
        "| first | second | metric | mean difference | interval | Wilcoxon p | tiles |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in rows:
        mean = "n/a" if p["mean_difference"] is None else f"{p['mean_difference']:+.3f}"
        lines.append(
            f"| {p['first']} | {p['second']} | {p['metric']} | {mean} | {fmt_ci(p['ci'])} | "
            f"{fmt_p(p['wilcoxon_p'])} | {p['n_tiles']} |"
        )
    return lines
