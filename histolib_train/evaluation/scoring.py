"""Scoring virtual IHC: the DAB mask of each generated tile against its expert mask.

The DAB mask of a virtual IHC tile is derived exactly as for real IHC tiles
(``histolib.stain.dab_mask(histolib.stain.separate(rgb).d)``, the function the cell-library
builder uses) and compared pixel by pixel with the expert mask: DICE and balanced accuracy,
with the empty-mask convention of :mod:`histolib.metrics`.
"""

from __future__ import annotations

import math
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
#: The per-tile scores against a registered real IHC tile (``--ihc-truth``), when given.
TRUTH_KEYS = ("psnr", "ssim", "dab_dice", "dab_dice_empty0")
#: The groups of tiles summarised: summary key -> (short name for --groups, label).
GROUPS = {
    "all": ("all", "all tiles"),
    "tumour_tiles": ("tumour", "tumour tiles"),
    "border_tiles": ("border", "border tiles"),
}
#: Annotation fraction from which a tile is positive (the tiler's default --positive-fraction):
#: a border tile has some tumour, less than this.
BORDER_THRESHOLD = 0.5


def group_keys(groups: Sequence[str] | None) -> list[str]:
    """Summary keys of the ``--groups`` names (``all``, ``tumour``, ``border``; None: all
    three), in that order.

    Raises
    ------
    ConfigError
        For an unknown name.
    """
    from histolib.errors import ConfigError

    if not groups:
        return list(GROUPS)
    short = {v[0]: k for k, v in GROUPS.items()}
    bad = [g for g in groups if g not in short]
    if bad:
        raise ConfigError(f"--groups takes all, tumour and border, not {bad[0]!r}")
    return [k for k, v in GROUPS.items() if v[0] in set(groups)]


def in_group(row: Mapping[str, Any], key: str, border_threshold: float = BORDER_THRESHOLD) -> bool:
    """Whether a per-tile row belongs to the group ``key`` of :data:`GROUPS`: every tile;
    tumour tiles (non-empty annotation); border tiles (annotation fraction strictly between 0
    and ``border_threshold``)."""
    if key == "all":
        return True
    tumour = float(row["tp"]) + float(row["fn"]) > 0
    if key == "tumour_tiles":
        return tumour
    return tumour and float(row["truth_fraction"]) < border_threshold


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


def truth_scores(fake: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """A virtual IHC tile against the registered real IHC of the same tissue: PSNR (dB, inf
    when identical), SSIM (colour, :func:`skimage.metrics.structural_similarity`) and the
    DICE of the two DAB masks (``dab_dice``: 1 when both are empty; ``dab_dice_empty0``: 0)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    fake, truth = np.asarray(fake), np.asarray(truth)
    if fake.shape != truth.shape:
        from histolib.errors import ImageError

        raise ImageError(f"real IHC tile is {truth.shape}, the virtual one {fake.shape}")
    if np.array_equal(fake, truth):
        psnr = math.inf
    else:
        psnr = float(peak_signal_noise_ratio(truth, fake, data_range=255))
    side = min(truth.shape[:2])
    ssim = float(
        structural_similarity(
            truth, fake, channel_axis=-1, data_range=255, win_size=min(7, side - (side % 2 == 0))
        )
    )
    dab = score_masks(virtual_dab_mask(fake), virtual_dab_mask(truth)).as_dict()
    return {
        "psnr": psnr,
        "ssim": ssim,
        "dab_dice": float(dab["dice"]),
        "dab_dice_empty0": dice_empty0(dab),
    }


def score_generator(
    generator: GeneratorFn,
    tiles: Sequence[EvalTile],
    *,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-tile scores of one generator: DICE, BAC, sensitivity, specificity, counts, and
    against a tile's registered real IHC (``EvalTile.ihc``) PSNR, SSIM and DAB DICE.

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
            if tile.ihc is not None:
                row.update(truth_scores(fake, tile.ihc))
            rows.append({"tile_id": tile.tile_id, "slide_id": tile.slide_id, **row})
        if on_batch is not None:
            on_batch(len(chunk))
        start = end
    return rows


def summarise(
    rows: Sequence[Mapping[str, Any]],
    *,
    resampling: Any = None,
    border_threshold: float = BORDER_THRESHOLD,
) -> dict[str, Any]:
    """Mean +- std of DICE (both empty-mask conventions), BAC, the positive fractions and,
    where scored, PSNR / SSIM / DAB DICE against real IHC, over each group of :data:`GROUPS`,
    with the bootstrap interval of every mean (:mod:`histolib_train.evaluation.stats`; the
    resampling is decided from the rows' slides when not given)."""
    from histolib_train.evaluation.stats import bootstrap_interval, resampling_for

    if resampling is None:
        resampling = resampling_for([str(r.get("slide_id", "")) for r in rows])
    keys = SUMMARY_KEYS + tuple(k for k in TRUTH_KEYS if rows and k in rows[0])

    def stats(subset: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n_tiles": len(subset)}
        slides = [str(r.get("slide_id", "")) for r in subset]
        for key in keys:
            values = [float(dice_empty0(r) if key == "dice_empty0" else r[key]) for r in subset]
            mean, std, n = mean_std(values)
            out[key] = {"mean": mean, "std": std, "n": n}
            out[key]["ci"] = bootstrap_interval(values, slides, resampling)
            if key == "psnr":
                out[key]["identical_tiles"] = sum(1 for v in values if v == math.inf)
        return out

    summary = {
        key: stats([r for r in rows if in_group(r, key, border_threshold)]) for key in GROUPS
    }
    return {
        **summary,
        "empty_annotation_tiles": summary["all"]["n_tiles"] - summary["tumour_tiles"]["n_tiles"],
        "empty_prediction_tiles": sum(1 for r in rows if r["tp"] + r["fp"] == 0),
        "both_empty_tiles": sum(1 for r in rows if r["tp"] + r["fp"] + r["fn"] == 0),
        "interval": resampling.as_dict(),
        "border_threshold": border_threshold,
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
