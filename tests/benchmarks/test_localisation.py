"""Smoke tests of benchmarks/localisation.py: its synthetic data and its scoring rule."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

SPEC_KW = {
    "tile_size": 64,
    "slide_px": 512,
    "n_he_slides": 1,
    "n_ihc_slides": 1,
    "n_test_slides": 1,
    "max_tiles": 6,
    "n_eval": 6,
    "he_tumour_fraction": 0.4,
    "ihc_tumour_fraction": 0.6,
    "test_tumour_fraction": 0.5,
}


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.localisation")


@pytest.fixture(scope="module")
def spec(bench):
    return bench.DataSpec(**SPEC_KW)


def test_domains_use_disjoint_layouts_and_their_prevalence(bench, spec):
    seeds = {d: set(spec.layout_seeds(d)) for d in ("he", "ihc", "test")}
    assert not seeds["he"] & seeds["ihc"]
    assert not seeds["test"] & (seeds["he"] | seeds["ihc"])
    assert spec.tumour_fraction("he") == 0.4
    assert spec.tumour_fraction("ihc") == 0.6
    other = bench.DataSpec(**{**SPEC_KW, "cancer_texture": 0.5})
    assert other.digest() != spec.digest()


def test_he_domain_tiles_masks_and_manifest(bench, spec, tmp_path):
    from PIL import Image

    from histolib.synthetic import tumour_mask
    from histolib.tileset.manifest import read_manifest, tile_image_path

    layouts = bench.make_layouts(spec, "he")
    manifest = bench.write_domain(spec, "he", tmp_path / "he", layouts=layouts, progress=False)
    gdf, meta = read_manifest(manifest)
    assert 0 < len(gdf) <= spec.max_tiles
    assert set(gdf["stain"]) == {"he"}
    assert meta["params"]["positive_classes"] == ["Tumor"]
    for _, row in gdf.iterrows():
        layout = layouts[row["slide_id"]]
        rgb = np.asarray(Image.open(tile_image_path(manifest, row)))
        assert rgb.shape == (64, 64, 3)
        mask = np.asarray(Image.open(tmp_path / "he" / "masks" / f"{row['tile_id']}.png")) > 0
        truth = tumour_mask(layout, row["x0"], row["y0"], 64, 64)
        assert np.array_equal(mask, truth)
        assert row["annotation_fraction"] == pytest.approx(truth.mean())
        assert row["label"] == bench.tile_label(truth.mean())
        assert row["tissue_fraction"] >= spec.min_tissue
        annotation = meta["params"]["slides"][row["slide_id"]]["annotation_path"]
        assert Path(annotation).is_file()
    # A second call with the same spec reuses the manifest.
    stamp = manifest.stat().st_mtime_ns
    bench.write_domain(spec, "he", tmp_path / "he", layouts=layouts, progress=False)
    assert manifest.stat().st_mtime_ns == stamp


def test_ihc_domain_is_unlabelled_without_masks(bench, spec, tmp_path):
    from histolib.tileset.manifest import read_manifest

    manifest = bench.write_domain(spec, "ihc", tmp_path / "ihc", progress=False)
    gdf, meta = read_manifest(manifest)
    assert set(gdf["stain"]) == {"ihc"} and set(gdf["label"]) == {"unlabelled"}
    assert not (tmp_path / "ihc" / "masks").exists()
    assert "annotations" not in meta["params"]


def test_choose_tiles_balanced_half_tumour(bench):
    tiles = [{"annotation_fraction": 0.5 if i < 10 else 0.0} for i in range(40)]
    picked = bench.choose_tiles(tiles, 8, seed=0, balanced=True)
    assert sum(t["annotation_fraction"] > 0 for t in picked) == 4
    assert len(picked) == 8
    few = bench.choose_tiles(tiles[:12], 8, seed=0, balanced=True)  # only 2 non-tumour tiles
    assert len(few) == 8 and sum(t["annotation_fraction"] == 0 for t in few) == 2


def _ring_tile(size: int = 64, nucleus: int = 14, ring: int = 24) -> np.ndarray:
    """A white tile with a hematoxylin disc inside a ring of DAB (a stained cancer cell)."""
    from skimage.color import hed2rgb

    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    hed = np.zeros((size, size, 3))
    hed[..., 0] = np.where(r < nucleus, 0.08, 0.0)
    hed[..., 2] = np.where((r >= nucleus) & (r < ring), 0.12, 0.0)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


def test_mask_rule_keeps_a_wide_nucleus_as_a_hole_and_fill_closes_it(bench):
    from histolib_train.evaluation.scoring import virtual_dab_mask

    rgb = _ring_tile()
    rule = virtual_dab_mask(rgb)
    same = bench.variant_dab_mask(rgb, fill_holes=False, no_stain_mean=0.85)
    filled = bench.variant_dab_mask(rgb, fill_holes=True, no_stain_mean=0.85)
    assert np.array_equal(rule, same)
    assert rule.any() and not rule[32, 32]  # the DAB-free nucleus, wider than the closing disk
    assert filled[32, 32] and (filled >= rule).all()
    # a small stained cell covers too little of the tile: the "no stain" rule empties its
    # mask; without that rule the closing alone fills its nucleus
    small = _ring_tile(nucleus=5, ring=12)
    assert not virtual_dab_mask(small).any()
    kept = bench.variant_dab_mask(small, fill_holes=False, no_stain_mean=np.inf)
    assert kept[32, 32] and not kept[0, 0]


def test_references_scored_by_the_evaluation(bench, spec, tmp_path):
    eval_set = bench.make_eval_set(spec, tmp_path / "eval_tiles")
    tumour = [t for t in eval_set.tiles if t.mask.any()]
    assert tumour and len(tumour) < len(eval_set.tiles)
    assert len(list((tmp_path / "eval_tiles" / "masks").glob("*.png"))) == len(eval_set.tiles)
    scores = bench.score_models(
        {"perfect": bench.perfect_generator(eval_set), "empty": bench.empty_generator},
        eval_set,
        tmp_path / "eval",
        panel_count=2,
    )
    assert (tmp_path / "eval" / "table.md").is_file()
    for rows in scores["empty"]["rows"].values():
        for row, tile in zip(rows, eval_set.tiles, strict=True):
            assert row["dice"] == (0.0 if tile.mask.any() else 1.0)
            assert row["pred_fraction"] == 0.0
    for row in scores["empty"]["rows"]["rule"]:
        assert row["dice_empty0"] == 0.0  # a blank tile never scores under dice_empty0
    # paired truth: the true IHC against itself is identical, a blank tile is not
    for row in scores["perfect"]["rows"]["rule"]:
        assert row["psnr"] == np.inf and row["ssim"] == pytest.approx(1.0)
        assert row["dab_dice"] == 1.0
    assert all(np.isfinite(r["psnr"]) for r in scores["empty"]["rows"]["rule"])
    assert all(r["ssim"] < 1.0 for r in scores["empty"]["rows"]["rule"])
    perfect = scores["perfect"]["rows"]
    # the true IHC stains the cancer cells: never less DAB than nothing, some on tumour tiles
    assert any(r["pred_fraction"] > 0 for r in perfect["filled_noempty"])
    dice = {k: np.mean([r["dice"] for r in v]) for k, v in perfect.items()}
    assert dice["rule"] >= np.mean([r["dice"] for r in scores["empty"]["rows"]["rule"]]) - 1e-9
    agg = bench.aggregate([scores["perfect"], scores["perfect"]])
    assert agg["rule/all/dice"]["mean"] == pytest.approx(dice["rule"])
    assert agg["rule/all/dice"]["std_seeds"] == 0.0
    low, high = agg["rule/all/dice"]["ci"]
    assert low <= dice["rule"] <= high
    assert agg["rule/all/psnr"]["identical"] == 2 * len(eval_set.tiles)
    assert agg["rule/tumour_tiles/dab_dice"]["mean"] == 1.0
    assert agg["rule/all/dice_empty0"]["mean"] < agg["rule/all/dice"]["mean"]
    assert "filled/all/psnr" not in agg  # paired truth under the authors' rule only


def _seed_run(bench, dice: list[float]) -> dict:
    """A seed's scores on tiles t0.. (the first half tumour-free, the rest border tiles)."""
    rows = []
    for i, value in enumerate(dice):
        tumour = i >= len(dice) // 2
        rows.append(
            {
                "tile_id": f"t{i}",
                "slide_id": "s0",
                "dice": value if tumour else 1.0,
                "dice_empty0": value if tumour else 0.0,
                "bac": value,
                "tp": 5.0 * tumour,
                "fp": 0.0,
                "fn": 5.0 * tumour,
                "pred_fraction": 0.1,
                "truth_fraction": 0.2 * tumour,
                "psnr": 20.0 + value,
                "ssim": value,
                "dab_dice": value,
                "dab_dice_empty0": value,
            }
        )
    return {"rows": {rule: rows for rule in ("rule", *bench.VARIANTS)}}


def test_three_models_and_their_paired_differences(bench) -> None:
    """CycleGAN 8x8 and the RoI CycleGAN with each RoI sampler; every pair's difference is
    reported on the same tiles (interval, Wilcoxon p) and per seed."""
    assert [opts.get("roi_sampling") for opts in bench.MODELS.values()] == [
        None,
        "authors",
        "balanced",
    ]
    base = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    seeds = {
        "CycleGAN 8x8": [base, base],
        "RoI CycleGAN (authors' RoIs)": [[v + 0.2 for v in base], [v + 0.1 for v in base]],
        "RoI CycleGAN (balanced RoIs)": [[v + 0.05 * (i % 2) for i, v in enumerate(base)]] * 2,
    }
    models = {}
    for name, values in seeds.items():
        runs = [_seed_run(bench, v) for v in values]
        models[name] = {"aggregate": bench.aggregate(runs), "tile_means": bench.tile_means(runs)}
    agg = models["CycleGAN 8x8"]["aggregate"]
    # tumour-free tiles: dice 1, dice_empty0 0; the border group is the tumour tiles here
    assert agg["rule/all/dice"]["mean"] == pytest.approx((4 * 1.0 + 0.5 + 0.6 + 0.7 + 0.8) / 8)
    assert agg["rule/all/dice_empty0"]["mean"] == pytest.approx((0.5 + 0.6 + 0.7 + 0.8) / 8)
    assert agg["rule/border_tiles/dice"]["n_tiles"] == 4
    assert agg["rule/all/ssim"]["ci"][0] <= agg["rule/all/ssim"]["mean"]
    resampling = bench.eval_resampling([_seed_run(bench, base)])
    assert resampling.unit == "tiles"  # one slide: fewer than 5
    diff = bench.difference(models, resampling)
    assert list(diff) == [f"{a} − {b}" for a, b in bench.PAIRS]
    authors = diff["RoI CycleGAN (authors' RoIs) − CycleGAN 8x8"]
    assert authors["rule/all/ssim"]["per_seed"] == pytest.approx([0.2, 0.1])
    assert authors["rule/all/ssim"]["mean"] == pytest.approx(0.15)
    assert authors["rule/all/ssim"]["ci"] == pytest.approx([0.15, 0.15])
    assert authors["rule/all/ssim"]["wilcoxon_p"] < 0.05
    assert authors["rule/all/ssim"]["n_tiles"] == 8
    assert authors["rule/tumour_tiles/dice"]["n_tiles"] == 4
    balanced = diff["RoI CycleGAN (balanced RoIs) − CycleGAN 8x8"]["rule/all/bac"]
    assert balanced["mean"] == pytest.approx(0.025)
    assert balanced["ci"][0] < 0.025 < balanced["ci"][1]


@pytest.mark.slow
def test_quick_run_reports_both_conventions_paired_truth_and_differences(bench, tmp_path):
    import json

    out = tmp_path / "out.json"
    argv = ["--quick", "--preset", "paper", "--seeds", "0", "--work", str(tmp_path / "w")]
    assert bench.main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in bench.MODELS:
        agg = report["models"][name]["aggregate"]
        for key in ("all/dice", "all/dice_empty0", "tumour_tiles/dice", "border_tiles/dice"):
            assert agg[f"rule/{key}"]["ci"] is not None or agg[f"rule/{key}"]["n_tiles"] == 0
        for key in ("psnr", "ssim", "dab_dice", "dab_dice_empty0"):
            assert 0 <= agg[f"rule/all/{key}"]["mean"] < (60 if key == "psnr" else 1.0 + 1e-9)
    perfect = report["references"]["perfect (true IHC)"]["aggregate"]
    assert perfect["rule/all/psnr"]["identical"] == report["n_eval_tiles"]
    assert perfect["rule/all/ssim"]["mean"] == pytest.approx(1.0)
    assert perfect["rule/all/dab_dice"]["mean"] == 1.0
    empty = report["references"]["empty (no DAB)"]["aggregate"]
    assert empty["rule/all/dice_empty0"]["mean"] == 0.0 < empty["rule/all/dice"]["mean"]
    for pair in report["difference"].values():
        for key in ("rule/all/dice_empty0", "rule/all/ssim", "rule/all/dab_dice"):
            assert set(pair[key]) >= {"mean", "ci", "wilcoxon_p", "n_tiles", "per_seed"}
            assert len(pair[key]["per_seed"]) == 1
    table = report["table"]
    for column in ("DICE_e0", "DICE border", "PSNR dB", "SSIM", "DAB DICE", "Wilcoxon p"):
        assert column in table
    assert "inf (identical)" in table and "tiles resampled" in table
