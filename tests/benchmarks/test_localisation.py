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
    perfect = scores["perfect"]["rows"]
    # the true IHC stains the cancer cells: never less DAB than nothing, some on tumour tiles
    assert any(r["pred_fraction"] > 0 for r in perfect["filled_noempty"])
    dice = {k: np.mean([r["dice"] for r in v]) for k, v in perfect.items()}
    assert dice["rule"] >= np.mean([r["dice"] for r in scores["empty"]["rows"]["rule"]]) - 1e-9
    agg = bench.aggregate([scores["perfect"], scores["perfect"]])
    assert agg["rule/all/dice"]["mean"] == pytest.approx(dice["rule"])
    assert agg["rule/all/dice"]["std_seeds"] == 0.0


def test_three_models_and_their_per_seed_differences(bench) -> None:
    """CycleGAN 8x8 and the RoI CycleGAN with each RoI sampler; every pair's difference is
    reported per seed."""
    assert [opts.get("roi_sampling") for opts in bench.MODELS.values()] == [
        None,
        "authors",
        "balanced",
    ]

    def run(dice: float) -> dict:
        rows = [{"dice": dice, "bac": dice, "tp": 1, "fn": 0, "pred_fraction": 0.5}]
        return {"rows": {rule: rows for rule in ("rule", *bench.VARIANTS)}}

    scores = {"CycleGAN 8x8": [0.1, 0.2], "RoI CycleGAN (authors' RoIs)": [0.4, 0.3]}
    scores["RoI CycleGAN (balanced RoIs)"] = [0.2, 0.25]
    models = {
        name: {"aggregate": bench.aggregate([run(v) for v in s])} for name, s in scores.items()
    }
    diff = bench.difference(models)
    assert list(diff) == [f"{a} − {b}" for a, b in bench.PAIRS]
    authors_vs_balanced = diff["RoI CycleGAN (authors' RoIs) − RoI CycleGAN (balanced RoIs)"]
    assert authors_vs_balanced["rule/all/dice"]["per_seed"] == pytest.approx([0.2, 0.05])
    assert diff["RoI CycleGAN (authors' RoIs) − CycleGAN 8x8"]["rule/all/dice"][
        "mean"
    ] == pytest.approx(0.2)
