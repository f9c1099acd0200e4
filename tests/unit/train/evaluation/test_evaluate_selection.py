"""The held-out set ``evaluate`` draws (test part, positive and negative tiles, balanced), its
precision (float32 unless --amp) and cache key, and the two empty-mask DICE conventions."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from histolib.errors import ConfigError
from histolib_train.evaluation.evaluator import evaluate_generators
from histolib_train.evaluation.tiles import (
    EvalTile,
    NoSplitWarning,
    balanced_choice,
    load_folder_tiles,
    load_manifest_tiles,
)
from tests.helpers_transfer import (
    blank_generator,
    write_eval_folders,
    write_eval_manifest,
)


def _manifest(root: Path, tiles, geojson: Path, *, boundary: int = 0, split: bool = True) -> Path:
    """The tiles as a manifest; ``boundary`` positive tiles relabelled ``boundary``; with
    ``split`` a tile-level split of half the tiles into ``test``."""
    from histolib.tileset.manifest import read_manifest, write_manifest
    from histolib.tileset.split import split_manifests

    manifest = write_eval_manifest(root, tiles, annotations=geojson)
    if boundary:
        gdf, meta = read_manifest(manifest)
        index = gdf.index[gdf["label"] == "positive"][:boundary]
        gdf.loc[index, "label"] = "boundary"
        write_manifest(gdf, manifest, params=meta["params"])
    if split:
        split_manifests([manifest], test_fraction=0.5, by="tile", seed=0)
    return manifest


def _ids(manifest: Path, **where: str) -> set[str]:
    from histolib.tileset.manifest import read_manifest

    gdf, _ = read_manifest(manifest)
    for column, value in where.items():
        gdf = gdf[gdf[column] == value]
    return set(gdf["tile_id"])


def test_only_the_test_part_by_default(synthetic, tmp_path) -> None:
    _, tiles, _, geojson = synthetic
    manifest = _manifest(tmp_path, tiles, geojson)
    test_ids, train_ids = _ids(manifest, split="test"), _ids(manifest, split="train")
    assert test_ids and train_ids and not test_ids & train_ids
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoSplitWarning)
        held_out = load_manifest_tiles(manifest, n_tiles=None)
    assert {t.tile_id for t in held_out} == test_ids
    trained = load_manifest_tiles(manifest, split="train", n_tiles=None)
    assert {t.tile_id for t in trained} == train_ids
    every = load_manifest_tiles(manifest, split="all", n_tiles=None)
    assert {t.tile_id for t in every} == test_ids | train_ids
    with pytest.raises(ConfigError, match="--split must be test, val, train or all"):
        load_manifest_tiles(manifest, split="validation")


def test_a_manifest_without_split_is_used_whole_with_a_warning(synthetic, tmp_path) -> None:
    _, tiles, _, geojson = synthetic
    manifest = _manifest(tmp_path, tiles, geojson, split=False)
    with pytest.warns(NoSplitWarning, match="no split column"):
        loaded = load_manifest_tiles(manifest, n_tiles=None)
    assert len(loaded) == len(tiles)


def test_positive_and_negative_tiles_unless_asked(synthetic, tmp_path) -> None:
    _, tiles, _, geojson = synthetic
    manifest = _manifest(tmp_path, tiles, geojson, boundary=2, split=False)
    boundary = _ids(manifest, label="boundary")
    assert len(boundary) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSplitWarning)
        default = load_manifest_tiles(manifest, n_tiles=None)
        asked = load_manifest_tiles(manifest, n_tiles=None, labels=None)
    assert not {t.tile_id for t in default} & boundary
    assert boundary <= {t.tile_id for t in asked} and len(asked) == len(tiles)


def test_balanced_draw_half_positive_half_negative(synthetic, tmp_path) -> None:
    _, tiles, _, geojson = synthetic
    manifest = _manifest(tmp_path, tiles, geojson, split=False)
    positive, negative = _ids(manifest, label="positive"), _ids(manifest, label="negative")
    few, many = sorted((positive, negative), key=len)
    assert len(many) > len(few) >= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSplitWarning)
        drawn = load_manifest_tiles(manifest, n_tiles=6, seed=3)
        again = load_manifest_tiles(manifest, n_tiles=6, seed=3)
        short = load_manifest_tiles(manifest, n_tiles=2 * len(few) + 1)
    ids = [t.tile_id for t in drawn]
    assert ids == [t.tile_id for t in again]  # seeded
    assert len(set(ids) & positive) == 3 and len(set(ids) & negative) == 3
    # too few of one label: all of them, the other label fills up the rest
    short_ids = {t.tile_id for t in short}
    assert short_ids & few == few and len(short_ids & many) == len(short) - len(few)
    assert len(short) == 2 * len(few) + 1


def test_balanced_folder_draw_by_mask(synthetic, tmp_path) -> None:
    _, tiles, _, _ = synthetic
    images, masks = write_eval_folders(tmp_path, tiles)
    drawn = load_folder_tiles(images, masks, n_tiles=4, seed=0)
    assert sum(t.mask.any() for t in drawn) == 2
    uniform = load_folder_tiles(images, masks, n_tiles=4, seed=0, balance=False)
    assert len(uniform) == 4


def test_balanced_choice_shares() -> None:
    groups = [list(range(10)), list(range(10, 13))]
    picked = balanced_choice(groups, 8, seed=0)
    assert len(picked) == 8 and sum(i >= 10 for i in picked) == 3  # 5 + all 3
    picked = balanced_choice(groups, 5, seed=0)
    assert sum(i < 10 for i in picked) == 3 and sum(i >= 10 for i in picked) == 2
    three = balanced_choice([list(range(4)), list(range(4, 8)), list(range(8, 12))], 6, seed=1)
    assert [sum(lo <= i < lo + 4 for i in three) for lo in (0, 4, 8)] == [2, 2, 2]
    assert balanced_choice(groups, None, seed=0) == list(range(13))
    assert balanced_choice(groups, 6, seed=2) == balanced_choice(groups, 6, seed=2)


def test_both_empty_mask_conventions(tmp_path) -> None:
    empty = np.zeros((32, 32), bool)
    tiles = [
        EvalTile("clear", np.full((32, 32, 3), 230, np.uint8), empty),
        EvalTile("tumour", np.full((32, 32, 3), 230, np.uint8), ~empty),
    ]
    summary = evaluate_generators({"blank": blank_generator}, tiles, out=tmp_path)
    scores = summary["checkpoints"]["blank"]
    assert scores["all"]["dice"]["mean"] == 0.5  # both empty counts 1
    assert scores["all"]["dice_empty0"]["mean"] == 0.0  # ... or 0, as scikit-learn's F1
    assert scores["both_empty_tiles"] == 1
    assert "dice_empty0" in summary["convention"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["checkpoints"]["blank"]["all"]["dice_empty0"]["mean"] == 0.0
    with (tmp_path / "tiles.csv").open() as handle:
        rows = {r["tile_id"]: r for r in csv.DictReader(handle)}
    assert (rows["clear"]["dice"], rows["clear"]["dice_empty0"]) == ("1.0", "0.0")
    table = (tmp_path / "table.md").read_text()
    assert "counted 0 (scikit-learn's F1)" in table and "blank 0.000" in table


def test_float32_unless_amp_and_a_cache_key_with_device_and_precision(
    synthetic, tmp_path, monkeypatch
) -> None:
    pytest.importorskip("torch")
    import histolib_train.transfer.generator as generator_module
    from histolib_train.evaluation import evaluator as run_module
    from histolib_train.evaluation.options import EvaluateOptions
    from histolib_train.experiment.runner import _cache_key
    from tests.helpers_transfer import tiny_checkpoint

    _, tiles, _, _ = synthetic
    images, masks = write_eval_folders(tmp_path, tiles[:3])
    checkpoint = tiny_checkpoint(tmp_path / "m.pt")
    amps: list[bool] = []
    real_load = generator_module.load_transfer_generator

    def spy_load(*args, **kwargs):
        amps.append(kwargs["amp"])
        return real_load(*args, **kwargs)

    scored: list[int] = []
    real_score = run_module.score_generator
    monkeypatch.setattr(generator_module, "load_transfer_generator", spy_load)
    monkeypatch.setattr(
        run_module, "score_generator", lambda *a, **k: scored.append(1) or real_score(*a, **k)
    )
    inputs = {"out": tmp_path / "eval", "images": images, "masks": masks}
    fp32, amp = EvaluateOptions(device="cpu"), EvaluateOptions(device="cpu", amp=True)
    summary = run_module.run_evaluation([str(checkpoint)], **inputs, options=fp32)
    assert amps == [False] and summary["inference"] == {"device": "cpu", "precision": "fp32"}
    assert summary["selection"]["balance"] is True
    run_module.run_evaluation([str(checkpoint)], **inputs, options=fp32)
    assert len(scored) == 1  # cached
    run_module.run_evaluation([str(checkpoint)], **inputs, options=amp)
    assert amps[-1] is True and len(scored) == 1  # on the CPU --amp changes nothing: fp32
    monkeypatch.setattr(run_module, "precision_name", lambda device, amp: "bf16")
    run_module.run_evaluation([str(checkpoint)], **inputs, options=amp)
    assert len(scored) == 2  # another precision: scored again
    keys = {
        _cache_key(checkpoint, "tiles", device=d, precision=p)
        for d in ("cpu", "cuda:0")
        for p in ("fp32", "bf16")
    }
    assert len(keys) == 4
