"""What a run trains on: the same tiles for every model (at least one cell box, as the authors),
and ``train_tiles.json``, the record of those tiles (ids, sources, split, every tile used)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from histolib_train.training import loop  # noqa: E402
from histolib_train.training.config import resolve_config  # noqa: E402
from histolib_train.training.loop import train  # noqa: E402
from histolib_train.training.run_folder import (  # noqa: E402
    TRAINING_TILES_NAME,
    read_training_tiles,
)
from tests.helpers_train import make_tiny_pair, quiet, tiny_options  # noqa: E402

pytestmark = pytest.mark.torch


def _drawable(tiles) -> set[str]:
    """The ids of the tiles a tile set's batches can draw."""
    return {tiles.tile_ids[i] for i in (*tiles.with_cancer, *tiles.without_cancer)}


def _kind_ids(domain, *kinds: str) -> set[str]:
    return {tid for tid, kind in domain.kinds.items() if kind in kinds}


@pytest.mark.parametrize("model", ["roi", "cyclegan", "ccgan", "ccgan-plain"])
def test_every_model_draws_only_tiles_with_boxes_by_default(pair, tmp_path: Path, model) -> None:
    he, ihc = pair
    cfg = resolve_config(tiny_options(he, ihc, tmp_path / "run", model=model))
    for tiles, domain in zip(loop._load_data(cfg, quiet), pair, strict=True):
        assert _drawable(tiles) == _kind_ids(domain, "mixed", "normal", "cancer")
        assert not _drawable(tiles) & _kind_ids(domain, "empty")


def test_include_empty_tiles_adds_them_except_for_the_roi_models(pair, tmp_path: Path) -> None:
    he, ihc = pair
    options = tiny_options(he, ihc, tmp_path / "run", include_empty_tiles=True)
    baseline = resolve_config({**options, "model": "cyclegan"})
    he_tiles, _ = loop._load_data(baseline, quiet)
    assert _drawable(he_tiles) == set(he.kinds)  # the empty tile too
    roi = resolve_config({**options, "model": "roi"})
    he_tiles, _ = loop._load_data(roi, quiet)
    assert not _drawable(he_tiles) & _kind_ids(he, "empty")


def test_a_split_run_records_its_train_tiles(tmp_path: Path) -> None:
    from histolib.tileset.manifest import read_manifest
    from histolib.tileset.split import split_manifests

    he, ihc = make_tiny_pair(tmp_path, n_mixed=4, n_normal=4)
    split_manifests([he.manifest, ihc.manifest], test_fraction=0.25, by="tile", seed=3)
    run = tmp_path / "run"
    messages: list[str] = []
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=messages.append)
    assert not [m for m in messages if "split column" in m]
    record = json.loads((run / TRAINING_TILES_NAME).read_text())
    expected = set()
    for domain in (he, ihc):
        gdf, _ = read_manifest(domain.manifest)
        train_ids = set(gdf.loc[gdf["split"] == "train", "tile_id"])
        expected |= train_ids - _kind_ids(domain, "empty")
    assert set(record["tile_ids"]) == expected and len(record["tile_ids"]) == len(expected)
    assert read_training_tiles(run) == expected
    assert record["used_every_tile"] is False
    assert [s["split"] for s in record["sources"]] == ["train", "train"]
    for source, domain in zip(record["sources"], (he, ihc), strict=True):
        assert source["path"] == str(domain.manifest.resolve())
        assert source["sha256"] == hashlib.sha256(domain.manifest.read_bytes()).hexdigest()


def test_a_manifest_without_split_warns_once_and_is_recorded(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    messages: list[str] = []
    train(resolve_config(tiny_options(he, ihc, run, epochs=1)), log=messages.append)
    warnings = [m for m in messages if "no split column" in m]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING")
    assert str(he.manifest) in warnings[0] and str(ihc.manifest) in warnings[0]
    assert "\n" not in warnings[0]
    record = json.loads((run / TRAINING_TILES_NAME).read_text())
    assert record["used_every_tile"] is True
    assert [s["split"] for s in record["sources"]] == [None, None]
    assert set(record["tile_ids"]) == _kind_ids(he, "mixed", "normal") | _kind_ids(
        ihc, "mixed", "normal"
    )
    # A resumed run keeps the record (rewritten with the same content).
    before = (run / TRAINING_TILES_NAME).read_text()
    train(resolve_config(tiny_options(he, ihc, run, epochs=2, resume=True)), log=quiet)
    assert (run / TRAINING_TILES_NAME).read_text() == before


def test_folder_tiles_are_named_by_their_relative_path(pair, tmp_path: Path) -> None:
    he, ihc = pair
    run = tmp_path / "run"
    options = tiny_options(he, ihc, run, model="cyclegan", epochs=1)
    options.update(he_library=None, ihc_library=None, he=str(he.folder), ihc=str(ihc.folder))
    train(resolve_config(options), log=quiet)
    record = json.loads((run / TRAINING_TILES_NAME).read_text())
    # Without a library every tile is drawn; the folder holds tiles/slide_<stain>/<id>.png.
    expected = {f"slide_he/{t}" for t in he.kinds} | {f"slide_ihc/{t}" for t in ihc.kinds}
    assert set(record["tile_ids"]) == expected
    assert record["used_every_tile"] is True
    assert [s["sha256"] for s in record["sources"]] == [None, None]
