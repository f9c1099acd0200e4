"""Measures a reviewer trusts: both DICE conventions, border tiles, intervals, paired
comparisons, and scores against a registered real IHC (PSNR, SSIM, DAB DICE)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from histolib_train.evaluation.evaluator import evaluate_generators
from histolib_train.evaluation.scoring import summarise
from histolib_train.evaluation.stats import (
    bootstrap_interval,
    paired_comparison,
    resampling_for,
)
from tests.helpers_transfer import blank_generator, lookup_generator, synthetic_eval_tiles


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("measures")
    _, tiles, truth, _ = synthetic_eval_tiles(root, size=64, extent=512, max_empty=4)
    return root, tiles, truth


def test_an_all_white_generator_scores_dice_empty0_zero_on_every_tile(synthetic) -> None:
    root, tiles, truth = synthetic
    summary = evaluate_generators(
        {"white": blank_generator, "perfect": lookup_generator(truth)}, tiles, out=root / "w"
    )
    with (root / "w" / "tiles.csv").open() as handle:
        white = [r for r in csv.DictReader(handle) if r["checkpoint"] == "white"]
    assert len(white) == len(tiles) and {float(r["dice_empty0"]) for r in white} == {0.0}
    empty = sum(not t.mask.any() for t in tiles)
    assert 0 < empty < len(tiles)
    scores = summary["checkpoints"]["white"]["all"]
    # The blank-rewarding convention gives it the share of tumour-free tiles, the other 0.
    assert scores["dice"]["mean"] == pytest.approx(empty / len(tiles))
    assert scores["dice_empty0"]["mean"] == 0.0 and scores["dice_empty0"]["ci"] == [0.0, 0.0]
    table = (root / "w" / "table.md").read_text()
    assert "DICE (both empty = 0)" in table and "border tiles" in table
    assert "tiles resampled (fewer than 5 slides" in table
    pair = [p for p in summary["paired"] if p["metric"] == "dice_empty0"]
    assert pair[0]["first"] == "white" and pair[0]["mean_difference"] < 0


def test_border_tiles_are_those_with_some_tumour_below_the_threshold() -> None:
    rows = []
    for i, fraction in enumerate((0.0, 0.1, 0.49, 0.5, 0.9)):
        tp = int(fraction * 100)
        rows.append(
            {
                "tile_id": f"t{i}",
                "slide_id": "s",
                "dice": 1.0,
                "bac": 1.0,
                "sensitivity": 1.0,
                "specificity": 1.0,
                "pred_fraction": fraction,
                "tp": tp,
                "fp": 0,
                "fn": 0,
                "tn": 100 - tp,
                "truth_fraction": fraction,
            }
        )
    summary = summarise(rows)
    assert summary["all"]["n_tiles"] == 5 and summary["tumour_tiles"]["n_tiles"] == 4
    assert summary["border_tiles"]["n_tiles"] == 2  # 0.1 and 0.49
    assert summary["all"]["dice_empty0"]["mean"] == pytest.approx(0.8)


def test_intervals_resample_slides_when_there_are_five() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(size=60)
    few = resampling_for(["a", "b"] * 30)
    many = resampling_for([f"s{i % 6}" for i in range(60)])
    assert (few.unit, many.unit) == ("tiles", "slides") and many.n_units == 6
    first = bootstrap_interval(values, [f"s{i % 6}" for i in range(60)], many)
    assert first == bootstrap_interval(values, [f"s{i % 6}" for i in range(60)], many)
    assert first[0] < values.mean() < first[1]
    # Slides whose tiles agree: the slide bootstrap is wider than the tile bootstrap.
    clustered = np.repeat(rng.uniform(size=6), 10)
    slides = [f"s{i // 10}" for i in range(60)]
    by_slide = bootstrap_interval(clustered, slides, many)
    by_tile = bootstrap_interval(clustered, slides, resampling_for(["a"] * 60))
    assert by_slide[1] - by_slide[0] > by_tile[1] - by_tile[0]


def test_paired_comparison_matches_tiles_and_tests_the_differences() -> None:
    first = [{"tile_id": f"t{i}", "slide_id": "s", "dice": 0.5 + 0.01 * i} for i in range(20)]
    second = [{"tile_id": f"t{i}", "slide_id": "s", "dice": 0.5} for i in reversed(range(25))]
    result = paired_comparison(first, second, "dice", resampling_for(["s"] * 20))
    assert result["n_tiles"] == 20
    assert result["mean_difference"] == pytest.approx(0.095)
    assert result["ci"][0] > 0 and result["wilcoxon_p"] < 0.001
    same = paired_comparison(first, first, "dice", resampling_for(["s"] * 20))
    assert same["mean_difference"] == 0 and same["wilcoxon_p"] == 1.0


def test_the_true_ihc_scores_perfectly_against_itself_and_a_blurred_copy_lower(
    synthetic,
) -> None:
    from dataclasses import replace

    from scipy.ndimage import gaussian_filter

    root, tiles, truth = synthetic
    paired = [replace(t, ihc=truth[t.rgb.tobytes()]) for t in tiles]

    def blurred(batch: np.ndarray) -> np.ndarray:
        true = lookup_generator(truth)(batch).astype(float)
        return np.clip(gaussian_filter(true, sigma=(0, 2, 2, 0)), 0, 255).astype(np.uint8)

    summary = evaluate_generators(
        {"true": lookup_generator(truth), "blurred": blurred}, paired, out=root / "t"
    )
    true, blur = (summary["checkpoints"][m]["all"] for m in ("true", "blurred"))
    assert true["psnr"]["identical_tiles"] == len(tiles) and true["psnr"]["n"] == 0
    assert true["ssim"]["mean"] == pytest.approx(1.0) and true["dab_dice"]["mean"] == 1.0
    assert blur["psnr"]["identical_tiles"] == 0 and np.isfinite(blur["psnr"]["mean"])
    assert blur["ssim"]["mean"] < 1.0 and blur["dab_dice"]["mean"] < 1.0
    with (root / "t" / "tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {float(r["psnr"]) for r in rows if r["checkpoint"] == "true"} == {float("inf")}
    table = (root / "t" / "table.md").read_text()
    assert "PSNR (dB)" in table and f"inf ({len(tiles)} identical tiles)" in table


def test_ihc_truth_pairs_by_file_name_or_by_place_on_the_stain_swapped_slide(
    synthetic, tmp_path
) -> None:
    from dataclasses import replace

    from PIL import Image

    from histolib.errors import InputError
    from histolib_train.evaluation.tiles import attach_ihc_truth
    from tests.helpers_transfer import write_eval_manifest

    _, tiles, truth = synthetic
    tiles = tiles[:3]
    folder = tmp_path / "ihc"
    folder.mkdir()
    for tile in tiles:  # same file names as the H&E tiles
        Image.fromarray(truth[tile.rgb.tobytes()]).save(folder / f"{tile.tile_id}.png")
    paired = attach_ihc_truth(tiles, folder)
    assert all(np.array_equal(p.ihc, truth[p.rgb.tobytes()]) for p in paired)
    # Manifests of a `synth --stain both` pair: synthetic_he_0 <-> synthetic_ihc_0, same place.
    he = [replace(t, tile_id=t.tile_id.replace("slide", "synthetic_he_0")) for t in tiles]
    ihc = [
        replace(
            t,
            tile_id=t.tile_id.replace("slide", "synthetic_ihc_0"),
            slide_id="synthetic_ihc_0",
            rgb=truth[t.rgb.tobytes()],
        )
        for t in tiles
    ]
    manifest = write_eval_manifest(tmp_path / "m", ihc, annotations=tmp_path / "none.geojson")
    paired = attach_ihc_truth(he, manifest)
    assert all(np.array_equal(p.ihc, q.rgb) for p, q in zip(paired, ihc, strict=True))
    with pytest.raises(InputError, match="1 of 1 H&E tiles have no registered IHC tile"):
        attach_ihc_truth([replace(tiles[0], tile_id="other_x0_y0_s64")], folder)
