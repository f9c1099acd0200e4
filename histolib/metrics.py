"""Per-pixel agreement between a predicted mask and an expert mask (DICE, balanced accuracy).

The paper's evaluation (Boyd et al. 2022, section 5.1) compares the DAB mask of a virtual IHC
tile with the expert tumour annotation of its H&E tile. Tiles with an empty annotation (no
tumour) or an empty prediction (no DAB) are common, so the metrics need a convention where the
plain formulas divide by zero. histolib uses this one, everywhere:

DICE = 2 |P and T| / (|P| + |T|)
    * both masks empty: 1.0 (the prediction agrees perfectly: there is nothing to find);
    * exactly one empty: 0.0 (what the formula gives; no overlap is possible).

Balanced accuracy = (sensitivity + specificity) / 2, with sensitivity = TP / (TP + FN) over the
annotated pixels and specificity = TN / (TN + FP) over the others. A term whose denominator is
zero is *undefined* and left out of the mean:
    * annotation empty (a tumour-free tile): sensitivity undefined, BAC = specificity (1.0 for
      an empty prediction, the share of pixels left unstained otherwise);
    * annotation full (every pixel tumour): specificity undefined, BAC = sensitivity;
    * a mask of zero pixels: both undefined, BAC = NaN (never happens with real tiles).

``MaskScores.sensitivity`` / ``specificity`` are NaN where undefined, so that a table keeps the
information; aggregate with :func:`mean_std`, which ignores NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MaskScores:
    """Agreement of one predicted mask with one reference mask (pixel counts and scores)."""

    dice: float
    bac: float
    sensitivity: float
    specificity: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pred_fraction(self) -> float:
        """Share of pixels predicted positive."""
        total = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.fp) / total if total else math.nan

    @property
    def truth_fraction(self) -> float:
        """Share of pixels positive in the reference."""
        total = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.fn) / total if total else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The scores and counts as a flat dict (plus the two positive fractions)."""
        out = asdict(self)
        out["pred_fraction"] = self.pred_fraction
        out["truth_fraction"] = self.truth_fraction
        return out


def _as_bool(mask: Any, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool:
        array = array > 0
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {array.shape}")
    return array


def confusion(pred: Any, truth: Any) -> tuple[int, int, int, int]:
    """Pixel counts ``(tp, fp, fn, tn)`` of ``pred`` against ``truth`` (same 2-D shape).

    Non-boolean masks count as positive where they are > 0 (so 0/255 PNG masks work).
    """
    pred_b = _as_bool(pred, "pred")
    truth_b = _as_bool(truth, "truth")
    if pred_b.shape != truth_b.shape:
        raise ValueError(f"mask shapes differ: pred {pred_b.shape} vs truth {truth_b.shape}")
    tp = int(np.count_nonzero(pred_b & truth_b))
    fp = int(np.count_nonzero(pred_b & ~truth_b))
    fn = int(np.count_nonzero(~pred_b & truth_b))
    tn = int(pred_b.size - tp - fp - fn)
    return tp, fp, fn, tn


def dice(pred: Any, truth: Any) -> float:
    """DICE coefficient ``2|P and T| / (|P| + |T|)``; 1.0 when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> empty = np.zeros((4, 4), bool)
    >>> dice(empty, empty)
    1.0
    >>> dice(~empty, empty)
    0.0
    """
    tp, fp, fn, _ = confusion(pred, truth)
    return _dice_from_counts(tp, fp, fn)


def _dice_from_counts(tp: int, fp: int, fn: int) -> float:
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def balanced_accuracy(pred: Any, truth: Any) -> float:
    """Mean of sensitivity and specificity over the terms that are defined.

    An all-negative ``truth`` makes sensitivity undefined, so the score is the specificity
    alone; an all-positive one makes it the sensitivity alone (module docstring).
    """
    return score_masks(pred, truth).bac


def score_masks(pred: Any, truth: Any) -> MaskScores:
    """Every score of ``pred`` against ``truth`` under the convention of this module.

    Parameters
    ----------
    pred, truth
        2-D masks of the same shape: boolean, or numbers counted positive where > 0.

    Returns
    -------
    MaskScores
        DICE, BAC, sensitivity and specificity (NaN where undefined) and the pixel counts.
    """
    tp, fp, fn, tn = confusion(pred, truth)
    sensitivity = tp / (tp + fn) if tp + fn else math.nan
    specificity = tn / (tn + fp) if tn + fp else math.nan
    defined = [v for v in (sensitivity, specificity) if not math.isnan(v)]
    bac = sum(defined) / len(defined) if defined else math.nan
    return MaskScores(
        dice=_dice_from_counts(tp, fp, fn),
        bac=bac,
        sensitivity=sensitivity,
        specificity=specificity,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
    )


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, population standard deviation and count of the finite ``values``.

    NaN (undefined) values are left out; with no finite value the result is ``(nan, nan, 0)``.
    """
    array = np.asarray([float(v) for v in values], dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std()), int(array.size)
