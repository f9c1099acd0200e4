"""DICE / balanced accuracy and the empty-mask convention (histolib.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from histolib.metrics import balanced_accuracy, confusion, dice, mean_std, score_masks

EMPTY = np.zeros((8, 8), bool)
FULL = np.ones((8, 8), bool)
LEFT = np.zeros((8, 8), bool)
LEFT[:, :4] = True


def test_both_empty_is_perfect_agreement() -> None:
    scores = score_masks(EMPTY, EMPTY)
    assert scores.dice == 1.0
    assert math.isnan(scores.sensitivity)  # no tumour pixel: undefined
    assert scores.specificity == 1.0
    assert scores.bac == 1.0  # specificity alone


def test_prediction_on_a_tumour_free_tile_scores_by_specificity() -> None:
    scores = score_masks(LEFT, EMPTY)
    assert scores.dice == 0.0
    assert math.isnan(scores.sensitivity)
    assert scores.specificity == pytest.approx(0.5)
    assert scores.bac == pytest.approx(0.5)


def test_empty_prediction_on_a_tumour_tile() -> None:
    scores = score_masks(EMPTY, LEFT)
    assert scores.dice == 0.0
    assert scores.sensitivity == 0.0
    assert scores.specificity == 1.0
    assert scores.bac == pytest.approx(0.5)


def test_all_tumour_tile_scores_by_sensitivity() -> None:
    scores = score_masks(LEFT, FULL)
    assert math.isnan(scores.specificity)
    assert scores.sensitivity == pytest.approx(0.5)
    assert scores.bac == pytest.approx(0.5)
    assert scores.dice == pytest.approx(2 * 32 / (32 + 64))


def test_values_against_hand_counts() -> None:
    truth = np.zeros((4, 5), bool)
    truth[:2] = True  # 10 positives
    pred = np.zeros((4, 5), bool)
    pred[1:3] = True  # 5 TP, 5 FP
    tp, fp, fn, tn = confusion(pred, truth)
    assert (tp, fp, fn, tn) == (5, 5, 5, 5)
    assert dice(pred, truth) == pytest.approx(0.5)
    assert balanced_accuracy(pred, truth) == pytest.approx(0.5)
    assert score_masks(pred, truth).pred_fraction == pytest.approx(0.5)


def test_png_style_masks_count_nonzero_as_positive() -> None:
    truth = LEFT.astype(np.uint8) * 255
    assert dice(LEFT, truth) == 1.0
    assert balanced_accuracy(LEFT.astype(np.uint8), truth) == 1.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        dice(np.zeros((4, 4, 3), bool), np.zeros((4, 4, 3), bool))


def test_mean_std_ignores_undefined_values() -> None:
    assert mean_std([1.0, math.nan, 0.0]) == (0.5, 0.5, 2)
    mean, std, n = mean_std([math.nan])
    assert math.isnan(mean) and math.isnan(std) and n == 0


@settings(max_examples=60, deadline=None)
@given(
    arrays(bool, (6, 7)),
    arrays(bool, (6, 7)),
)
def test_scores_are_bounded_and_dice_symmetric(pred: np.ndarray, truth: np.ndarray) -> None:
    scores = score_masks(pred, truth)
    assert 0.0 <= scores.dice <= 1.0
    assert 0.0 <= scores.bac <= 1.0
    assert scores.dice == pytest.approx(dice(truth, pred))
    assert scores.tp + scores.fp + scores.fn + scores.tn == pred.size
    if np.array_equal(pred, truth):
        assert scores.dice == 1.0 and scores.bac == 1.0


@given(st.integers(min_value=1, max_value=30))
def test_identical_non_empty_masks_score_one(n: int) -> None:
    mask = np.zeros((6, 6), bool)
    mask.flat[:n] = True
    assert dice(mask, mask) == 1.0
    assert balanced_accuracy(mask, mask) == 1.0
