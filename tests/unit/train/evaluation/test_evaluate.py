"""The paper's evaluation (histolib_train.evaluation) on synthetic tiles whose truth
is known."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from histolib.errors import ConfigError, ImageError, InputError, ManifestError
from histolib_train.evaluation.evaluator import checkpoint_labels, evaluate_generators
from histolib_train.evaluation.scoring import score_generator, virtual_dab_mask
from histolib_train.evaluation.tiles import (
    EvalTile,
    load_folder_tiles,
    load_manifest_tiles,
    load_real_ihc,
)
from tests.helpers_transfer import (
    blank_generator,
    lookup_generator,
    write_eval_folders,
    write_eval_manifest,
)


def test_perfect_generator_scores_near_one_and_blank_near_zero(synthetic, tmp_path) -> None:
    _, tiles, truth, _ = synthetic
    summary = evaluate_generators(
        {"perfect": lookup_generator(truth), "blank": blank_generator},
        tiles,
        out=tmp_path,
        batch_size=4,
    )
    perfect = summary["checkpoints"]["perfect"]
    blank = summary["checkpoints"]["blank"]
    print(
        "perfect DICE", perfect["all"]["dice"], "BAC", perfect["all"]["bac"],
        "| blank on tumour tiles DICE", blank["tumour_tiles"]["dice"],
    )  # fmt: skip
    assert perfect["all"]["dice"]["mean"] > 0.95
    assert perfect["tumour_tiles"]["dice"]["mean"] > 0.95
    assert perfect["all"]["bac"]["mean"] > 0.95
    assert blank["tumour_tiles"]["dice"]["mean"] == 0.0
    assert blank["tumour_tiles"]["bac"]["mean"] == pytest.approx(0.5)  # specificity 1, TPR 0
    # Empty-mask convention: on tumour-free tiles the blank generator is right (DICE 1).
    n_empty = summary["checkpoints"]["blank"]["empty_annotation_tiles"]
    assert n_empty > 0
    assert blank["all"]["dice"]["mean"] == pytest.approx(n_empty / len(tiles))


def test_reports_are_written(synthetic, tmp_path) -> None:
    _, tiles, truth, _ = synthetic
    evaluate_generators(
        {"perfect": lookup_generator(truth), "blank": blank_generator},
        tiles,
        out=tmp_path,
        real_ihc=[("real", np.asarray(next(iter(truth.values()))))],
    )
    with (tmp_path / "tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(tiles)
    assert {r["checkpoint"] for r in rows} == {"perfect", "blank"}
    assert {"dice", "bac", "sensitivity", "specificity", "tile_id"} <= set(rows[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_tiles"] == len(tiles)
    assert summary["real_ihc"]["n_tiles"] == 1
    assert summary["paper_target"]["GR (private)"]["dice"]["mean"] == 0.536
    table = (tmp_path / "table.md").read_text()
    assert "| perfect |" in table and "| blank |" in table and "real IHC" in table
    assert "0.536" in table
    from PIL import Image

    with Image.open(tmp_path / "panel.png") as panel:
        # 4 columns (H&E, annotation, 2 models) x up to 4 tiles, plus a header.
        assert panel.width == 4 * (tiles[0].rgb.shape[1] + 4)
        assert panel.height > 4 * tiles[0].rgb.shape[0]


def test_virtual_dab_mask_is_the_library_function(synthetic) -> None:
    from histolib.stain import dab_mask, separate

    _, _tiles, truth, _ = synthetic
    ihc = next(iter(truth.values()))
    np.testing.assert_array_equal(virtual_dab_mask(ihc), dab_mask(separate(ihc).d))


def test_cached_results_are_reused(synthetic, tmp_path) -> None:
    _, tiles, truth, _ = synthetic
    calls = {"n": 0}
    perfect = lookup_generator(truth)

    def counting(batch: np.ndarray) -> np.ndarray:
        calls["n"] += len(batch)
        return perfect(batch)

    kwargs = {"out": tmp_path, "fingerprints": {"m": "file|1|2"}}
    first = evaluate_generators({"m": counting}, tiles, **kwargs)
    scored = calls["n"]
    assert scored >= len(tiles)
    second = evaluate_generators({"m": counting}, tiles, **kwargs)
    assert calls["n"] - scored <= 4  # only the panel tiles run again
    assert first["checkpoints"] == second["checkpoints"]
    # Another checkpoint fingerprint (file changed): scored again.
    evaluate_generators({"m": counting}, tiles, out=tmp_path, fingerprints={"m": "file|1|3"})
    assert calls["n"] - scored > len(tiles)


def test_score_generator_batches_tiles_of_different_sizes() -> None:
    tiles = [
        EvalTile("a", np.full((32, 32, 3), 255, np.uint8), np.zeros((32, 32), bool)),
        EvalTile("b", np.full((40, 48, 3), 255, np.uint8), np.ones((40, 48), bool)),
    ]
    shapes = []

    def generator(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return batch

    rows = score_generator(generator, tiles, batch_size=8)
    assert shapes == [(1, 32, 32, 3), (1, 40, 48, 3)]
    assert [r["dice"] for r in rows] == [1.0, 0.0]


def test_folder_tiles_and_their_errors(synthetic, tmp_path) -> None:
    _, tiles, _, _ = synthetic
    images, masks = write_eval_folders(tmp_path, tiles)
    loaded = load_folder_tiles(images, masks, n_tiles=None)
    assert [t.tile_id for t in loaded] == sorted(t.tile_id for t in tiles)
    by_id = {t.tile_id: t for t in tiles}
    for tile in loaded:
        np.testing.assert_array_equal(tile.mask, by_id[tile.tile_id].mask)
    subset = load_folder_tiles(images, masks, n_tiles=3, seed=1)
    assert len(subset) == 3
    assert [t.tile_id for t in subset] == [
        t.tile_id for t in load_folder_tiles(images, masks, n_tiles=3, seed=1)
    ]
    first_mask = sorted(masks.iterdir())[0]
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(first_mask)
    with pytest.raises(ImageError, match="mask is 10x10"):
        load_folder_tiles(images, masks, n_tiles=None)
    first_mask.unlink()
    with pytest.raises(InputError, match="have no mask"):
        load_folder_tiles(images, masks)
    with pytest.raises(InputError, match="no such folder"):
        load_folder_tiles(tmp_path / "nope", masks)


def test_manifest_tiles_use_the_slide_contours(synthetic, tmp_path) -> None:
    _, tiles, _, geojson = synthetic
    manifest = write_eval_manifest(tmp_path, tiles, annotations=geojson)
    loaded = load_manifest_tiles(manifest, n_tiles=None)
    assert len(loaded) == len(tiles)
    by_id = {t.tile_id: t for t in tiles}
    for tile in loaded:
        np.testing.assert_array_equal(tile.mask, by_id[tile.tile_id].mask)
        np.testing.assert_array_equal(tile.rgb, by_id[tile.tile_id].rgb)
    only_positive = load_manifest_tiles(manifest, labels=["positive"], n_tiles=None)
    assert all(t.mask.any() for t in only_positive)
    other_class = load_manifest_tiles(manifest, positive_classes=["Stroma"], n_tiles=None)
    assert not any(t.mask.any() for t in other_class)
    # a label no tile has is named, with the labels there are
    with pytest.raises(ManifestError, match=r"no H&E tile has the label boundary \(labels here"):
        load_manifest_tiles(manifest, labels=["boundary"])


def test_real_ihc_from_a_folder(tmp_path) -> None:
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "x.png")
    assert [name for name, _ in load_real_ihc(tmp_path)] == ["x"]
    with pytest.raises(InputError):
        load_real_ihc(tmp_path / "empty_dir_missing.parquet")


def test_checkpoint_labels() -> None:
    pairs = checkpoint_labels(["runs/a/checkpoints/latest.pt", "runs/b/checkpoints/latest.pt"])
    assert [name for name, _ in pairs] == ["a/checkpoints/latest", "b/checkpoints/latest"]
    assert checkpoint_labels(["roi=x.pt", "y.pt"])[0] == ("roi", Path("x.pt"))
    assert checkpoint_labels(["one.pt"])[0][0] == "one"
    with pytest.raises(ConfigError, match="same name"):
        checkpoint_labels(["m=a.pt", "m=b.pt"])


def test_no_tiles_is_an_error(tmp_path) -> None:
    with pytest.raises(InputError):
        evaluate_generators({"blank": blank_generator}, [], out=tmp_path)


def test_zero_batch_size_and_grayscale_tiles_are_refused(synthetic, tmp_path) -> None:
    from PIL import Image

    _, tiles, _, _ = synthetic
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        evaluate_generators({"blank": blank_generator}, tiles[:2], out=tmp_path, batch_size=0)
    images, masks = write_eval_folders(tmp_path, tiles[:2])
    first = sorted(images.iterdir())[0]
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(first)  # 1-channel
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / first.name)
    with pytest.raises(ImageError, match=r"8-bit RGB image.*mode L") as info:
        load_folder_tiles(images, masks, n_tiles=None)
    assert first.name in str(info.value)


def test_real_tiles_from_shared_data(shared_data, tmp_path) -> None:
    """The real CAMELYON16 tile with its expert mask, and the real IHC tile as a sanity row."""
    import shutil

    roigan = shared_data / "tiles" / "roigan"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "ihc").mkdir()
    shutil.copy(roigan / "he_000.png", tmp_path / "images" / "he_000.png")
    shutil.copy(roigan / "he_mask_000.png", tmp_path / "masks" / "he_000.png")
    shutil.copy(roigan / "ihc_000.png", tmp_path / "ihc" / "ihc_000.png")
    tiles = load_folder_tiles(tmp_path / "images", tmp_path / "masks")
    assert tiles[0].rgb.shape == (256, 256, 3) and tiles[0].mask.any()
    summary = evaluate_generators(
        {"blank": blank_generator},
        tiles,
        out=tmp_path / "out",
        real_ihc=load_real_ihc(tmp_path / "ihc"),
    )
    assert summary["checkpoints"]["blank"]["all"]["dice"]["mean"] == 0.0
    real = summary["real_ihc"]
    assert real["n_tiles"] == 1 and real["emptied_by_no_stain_rule"] == 0
    assert 0.2 < real["pred_fraction"]["mean"] < 0.8  # cytokeratin-stained tumour tile
