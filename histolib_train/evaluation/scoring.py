"""Scoring virtual IHC: the DAB mask of each generated tile against its expert mask.

The DAB mask of a virtual IHC tile is derived exactly as for real IHC tiles
(``histolib.stain.dab_mask(histolib.stain.separate(rgb).d)``, the function the cell-library
builder uses) and compared pixel by pixel with the expert mask: DICE and balanced accuracy,
with the empty-mask convention of :mod:`histolib.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from histolib.metrics import mean_std, score_masks
from histolib_train.evaluation.tiles import EvalTile

GeneratorFn = Callable[[np.ndarray], np.ndarray]

#: The paper's Table 1 figures for the proposed model (docs/evaluation.md): the target.
PAPER_TARGET = {
    "GR (private)": {"dice": (0.536, 0.360), "bac": (0.634, 0.221)},
    "CAMELYON16": {"dice": (0.533, None), "bac": (0.615, None)},
}
CONVENTION = (
    "DICE = 2|P&T|/(|P|+|T|), 1 when both masks are empty, 0 when exactly one is "
    "('dice'); 'dice_empty0' is the same with 0 when both are empty, as scikit-learn's "
    "f1_score gives. BAC = mean of the defined terms among sensitivity TP/(TP+FN) and "
    "specificity TN/(TN+FP): an empty annotation leaves specificity alone."
)
#: The per-tile scores summarised (mean +- std over tiles).
SUMMARY_KEYS = ("dice", "dice_empty0", "bac", "sensitivity", "specificity", "pred_fraction")


def dice_empty0(row: Mapping[str, Any]) -> float:
    """A tile's DICE with the other empty-mask convention: 0 when prediction and annotation
    are both empty (scikit-learn's ``f1_score``), else the DICE."""
    return 0.0 if row["tp"] + row["fp"] + row["fn"] == 0 else float(row["dice"])


def convention_note(summary: Mapping[str, Any]) -> str:
    """The table's footnote on the two empty-mask conventions: how many tiles have both masks
    empty, and each model's mean DICE over all tiles when those count 0."""
    parts = []
    for name, result in summary.get("checkpoints", {}).items():
        stat = result["all"].get("dice_empty0")
        if stat and stat["mean"] is not None:
            both = result.get("both_empty_tiles", 0)
            parts.append(f"{name} {stat['mean']:.3f} ± {stat['std']:.3f} ({both} such tiles)")
    if not parts:
        return ""
    return (
        "DICE over all tiles with both-empty tiles counted 0 (scikit-learn's F1) instead of 1: "
        + "; ".join(parts)
        + "."
    )


def virtual_dab_mask(rgb: np.ndarray) -> np.ndarray:
    """The DAB mask of an (virtual or real) IHC tile: ``dab_mask(separate(rgb).d)``."""
    from histolib.stain import dab_mask, separate

    return dab_mask(separate(rgb, channels="d").d)


def score_generator(
    generator: GeneratorFn,
    tiles: Sequence[EvalTile],
    *,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-tile scores of one generator: DICE, BAC, sensitivity, specificity, counts.

    Tiles are grouped into batches of equal shape for the generator.
    """
    rows: list[dict[str, Any]] = []
    start = 0
    while start < len(tiles):
        shape = tiles[start].rgb.shape
        end = start
        while end < len(tiles) and end - start < batch_size and tiles[end].rgb.shape == shape:
            end += 1
        chunk = tiles[start:end]
        fakes = np.asarray(generator(np.stack([t.rgb for t in chunk])))
        for tile, fake in zip(chunk, fakes, strict=True):
            row = score_masks(virtual_dab_mask(fake), tile.mask).as_dict()
            row["dice_empty0"] = dice_empty0(row)
            rows.append({"tile_id": tile.tile_id, "slide_id": tile.slide_id, **row})
        if on_batch is not None:
            on_batch(len(chunk))
        start = end
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean +- std of DICE (both empty-mask conventions), BAC and the positive fractions, over
    all and over tumour tiles."""
    tumour = [r for r in rows if r["tp"] + r["fn"] > 0]

    def stats(subset: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n_tiles": len(subset)}
        for key in SUMMARY_KEYS:
            values = (dice_empty0(r) if key == "dice_empty0" else r[key] for r in subset)
            mean, std, n = mean_std(values)
            out[key] = {"mean": mean, "std": std, "n": n}
        return out

    return {
        "all": stats(rows),
        "tumour_tiles": stats(tumour),
        "empty_annotation_tiles": len(rows) - len(tumour),
        "empty_prediction_tiles": sum(1 for r in rows if r["tp"] + r["fp"] == 0),
        "both_empty_tiles": sum(1 for r in rows if r["tp"] + r["fp"] + r["fn"] == 0),
    }


def real_ihc_statistics(tiles: Sequence[Any]) -> dict[str, Any]:
    """DAB-mask statistics of real IHC tiles (no annotation exists for them)."""
    from histolib.stain import dab_mask_details, separate

    fractions, zeroed = [], 0
    for _, rgb in tiles:
        details = dab_mask_details(separate(rgb, channels="d").d)
        fractions.append(float(details.mask.mean()))
        zeroed += int(details.zeroed)
    mean, std, n = mean_std(fractions)
    return {
        "n_tiles": n,
        "pred_fraction": {"mean": mean, "std": std, "n": n},
        "empty_prediction_tiles": sum(1 for f in fractions if f == 0),
        "emptied_by_no_stain_rule": zeroed,
    }
