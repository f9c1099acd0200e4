"""Selecting each model's best run apart from the reporting set, by a measure that gives a
blank generator nothing (records constructed directly: no training)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from histolib.errors import ConfigError
from histolib_train.evaluation.scoring import summarise
from histolib_train.experiment.report import best_table_markdown, check_select_by, select_best


def _row(i: int, *, truth: float, pred: float, overlap: float) -> dict[str, Any]:
    """One tile's scores: 100 px, ``truth`` and ``pred`` fractions, ``overlap`` shared."""
    tp = round(100 * overlap)
    fp, fn = round(100 * pred) - tp, round(100 * truth) - tp
    tn = 100 - tp - fp - fn
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    bac = sens if spec != spec else (spec if sens != sens else (sens + spec) / 2)
    return {
        "tile_id": f"t{i}",
        "slide_id": f"s{i % 3}",
        "dice": dice,
        "bac": bac,
        "sensitivity": sens,
        "specificity": spec,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "pred_fraction": pred,
        "truth_fraction": truth,
    }


def _record(name: str, model: str, val: dict | None, test: dict | None) -> SimpleNamespace:
    spec = SimpleNamespace(name=name, model=model, settings={"lambda_cyc": name[-1]})
    return SimpleNamespace(spec=spec, val_scores=val, scores=test, run_dir=Path("/nowhere"))


def _scores(dice_all: float, bac: float = 0.5) -> dict[str, Any]:
    stat = {"mean": dice_all, "std": 0.1, "n": 10, "ci": [dice_all - 0.1, dice_all + 0.1]}
    group = {"n_tiles": 10, "dice": stat, "dice_empty0": stat, "pred_fraction": stat}
    group["bac"] = {"mean": bac, "std": 0.1, "n": 10, "ci": None}
    return {"all": group, "tumour_tiles": group, "border_tiles": group}


def test_selection_on_val_and_on_test_differ_and_the_table_names_the_parts() -> None:
    a = _record("roi-a", "roi", val=_scores(0.70), test=_scores(0.40))
    b = _record("roi-b", "roi", val=_scores(0.50), test=_scores(0.60))
    assert select_best([a, b], part="val")["roi"] is a
    assert select_best([a, b], part="test")["roi"] is b  # what the old selection did
    result = SimpleNamespace(
        records=[a, b],
        best={"roi": "roi-a"},
        tile_ids=[f"t{i}" for i in range(10)],
        selection={"part": "val", "metric": "dice_empty0", "n_tiles": 12, "optimistic": False},
    )
    table = best_table_markdown(result)
    assert "over all 12 tiles of the **val** part" in table
    assert "| roi | roi-a | lambda_cyc a | n/a | 0.700 |" in table  # its val figure, for selection
    assert "on the **test** part (10 tiles)" in table
    assert "| roi | all tiles | 10 | 0.400 ± 0.100 [0.300, 0.500] |" in table  # its test figure
    result.selection["optimistic"] = True
    result.selection["part"] = "test"
    assert "optimistic" in best_table_markdown(result)


def test_an_all_white_generator_is_never_selected_by_the_default_measure() -> None:
    # Half the tiles tumour-free. White paints nothing: DICE 1 on the tumour-free tiles under
    # the blank-rewarding convention, 0 everywhere under dice_empty0. "Brown" paints all of
    # every tile: a fair DICE on tumour tiles, 0 on the others.
    tiles = [(0.0 if i % 2 else 0.6) for i in range(12)]
    white = [_row(i, truth=t, pred=0.0, overlap=0.0) for i, t in enumerate(tiles)]
    brown = [_row(i, truth=t, pred=1.0, overlap=t) for i, t in enumerate(tiles)]
    w, b = summarise(white), summarise(brown)
    assert w["all"]["dice_empty0"]["mean"] == 0.0
    assert {r["dice"] for r in white if r["truth_fraction"] == 0} == {1.0}
    assert w["all"]["dice"]["mean"] > b["all"]["dice"]["mean"]  # the old measure prefers white
    records = [_record("m-white", "m", w, None), _record("m-brown", "m", b, None)]
    assert select_best(records)["m"].spec.name == "m-brown"  # default: dice_empty0 on val
    assert select_best(records, metric="dice")["m"].spec.name == "m-white"
    only_white = select_best([records[0], _record("m-x", "m", b, None)])
    assert only_white["m"].spec.name == "m-x"
    with pytest.raises(ConfigError, match="--select-by must be"):
        check_select_by("psnr")
