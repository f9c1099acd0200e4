"""Training, cell libraries and evaluation straight from slides (manifests written with
``--format none``): the same tiles, batches, losses, libraries and scores as from PNGs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from histolib.library.cellio import read_library  # noqa: E402
from histolib_train.training.batches import (  # noqa: E402
    PairedBatches,
    load_tiles,
    make_loader,
    sample_batch,
    split_groups,
)
from histolib_train.training.config import resolve_config  # noqa: E402
from histolib_train.training.loop import train  # noqa: E402
from tests.helpers_synth import small_slide  # noqa: E402
from tests.helpers_train import quiet, read_metrics  # noqa: E402

pytestmark = pytest.mark.torch

TILE = 64


@dataclass
class Cohort:
    """One synthetic H&E and one IHC slide, each tiled as PNGs and as coordinates only."""

    he_slide: Path
    ihc_slide: Path
    annotations: Path
    manifests: dict[tuple[str, str], Path]  # (stain, "png" | "none") -> tiles.parquet
    libraries: dict[tuple[str, str], Path]  # (stain, "png" | "none") -> library


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    from histolib.library.build import build_library
    from histolib.tiling.options import TilingOptions
    from histolib.tiling.tiler import tile_slides

    root = tmp_path_factory.mktemp("cohort")
    he = small_slide(root / "slides", stain="he", seed=1, width=1024, height=1024)
    ihc = small_slide(root / "slides", stain="ihc", seed=2, width=1024, height=1024)
    manifests, libraries = {}, {}
    for fmt in ("png", "none"):
        for stain, slide in (("he", he), ("ihc", ihc)):
            is_he = stain == "he"
            options = TilingOptions(
                stain=stain, size=TILE, max_tiles=12, image_format=fmt, balance=is_he
            )
            manifest = tile_slides(
                slide.slide_path,
                out=root / f"{stain}_{fmt}",
                options=options,
                annotations=slide.annotations_path if is_he else None,
                workers=1,
                progress=False,
            )
            manifests[stain, fmt] = manifest
            libraries[stain, fmt] = build_library(
                manifest=manifest,
                stain=stain,
                out=root / f"library_{stain}_{fmt}.parquet",
                workers=2,
                progress=False,
            )
    return Cohort(he.slide_path, ihc.slide_path, he.annotations_path, manifests, libraries)


def _tiles(cohort: Cohort, stain: str, fmt: str):
    tiles = load_tiles(
        cohort.manifests[stain, fmt], domain=stain, library=cohort.libraries[stain, "png"]
    )
    split_groups(tiles, require_boxes=True)
    return tiles


def _paired(cohort: Cohort, fmt: str) -> PairedBatches:
    """Batches of 2 (2 boxes a tile, seed 1) over the cohort's H&E and IHC tiles of ``fmt``."""
    return PairedBatches(
        _tiles(cohort, "he", fmt),
        _tiles(cohort, "ihc", fmt),
        seed=1,
        batch_size=2,
        boxes_per_tile=4,
    )


def test_the_library_built_from_the_slide_equals_the_one_from_pngs(cohort: Cohort) -> None:
    for stain in ("he", "ihc"):
        png, _ = read_library(cohort.libraries[stain, "png"])
        bare, _ = read_library(cohort.libraries[stain, "none"])
        assert len(png) > 0, stain
        columns = [c for c in png.columns if c != "geometry"]
        assert png[columns].equals(bare[columns]), stain
        assert png.geometry.equals(bare.geometry), stain


def test_batches_from_the_slide_equal_batches_from_pngs(cohort: Cohort) -> None:
    for stain in ("he", "ihc"):
        png, bare = _tiles(cohort, stain, "png"), _tiles(cohort, stain, "none")
        assert png.tile_ids == bare.tile_ids and all(p is None for p in bare.image_paths)
        assert png.tile_size == bare.tile_size == TILE and png.mpp == bare.mpp
        for step in range(4):
            a = sample_batch(png, step=step, seed=5, batch_size=4, boxes_per_tile=4)
            b = sample_batch(bare, step=step, seed=5, batch_size=4, boxes_per_tile=4)
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), (stain, step, key)


class _WithHandles:
    """A dataset that also reports which process made each item and the slides it had open."""

    def __init__(self, batches: PairedBatches) -> None:
        self.batches = batches

    def __getitem__(self, step: int):
        from histolib.slide.cache import open_slide_paths

        return self.batches[step], os.getpid(), open_slide_paths()


def test_dataloader_workers_open_each_slide_once_and_give_the_png_batches(
    cohort: Cohort,
) -> None:
    from torch.utils.data import DataLoader

    from histolib.slide.cache import close_slides, open_slide_paths

    close_slides()
    png = _paired(cohort, "png")
    bare = _paired(cohort, "none")
    loader = DataLoader(
        _WithHandles(bare),
        batch_size=None,
        sampler=range(8),
        num_workers=2,  # type: ignore[arg-type]
        prefetch_factor=2,
    )
    pids: dict[int, dict[str, int]] = {}
    for step, (pair, pid, handles) in enumerate(loader):
        pids[pid] = handles
        expected = png[step]
        for domain in ("he", "ihc"):
            for key, value in expected[domain].items():
                assert torch.equal(pair[domain][key], value), (step, domain, key)
    assert len(pids) == 2 and os.getpid() not in pids
    slides = {str(cohort.he_slide), str(cohort.ihc_slide)}
    assert all(handles == dict.fromkeys(slides, 1) for handles in pids.values())
    assert open_slide_paths() == {}  # the main process opened nothing
    inline = make_loader(bare, start=3, stop=5, workers=0, pin_memory=False)
    for step, pair in zip(range(3, 5), inline, strict=True):
        assert torch.equal(pair["he"]["image"], png[step]["he"]["image"])


def _options(cohort: Cohort, fmt: str, out: Path) -> dict:
    return {
        "he": str(cohort.manifests["he", fmt]),
        "ihc": str(cohort.manifests["ihc", fmt]),
        "he_library": str(cohort.libraries["he", fmt]),
        "ihc_library": str(cohort.libraries["ihc", fmt]),
        "out": str(out),
        "epochs": 1,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "n_blocks": 1,
        "ngf": 8,
        "ndf": 8,
        "boxes_per_tile": 4,
        "workers": 1,
        "device": "cpu",
        "log_every": 1,
        "sample_every": 1000,
        "seed": 4,
    }


def test_training_from_the_slide_equals_training_from_pngs(cohort: Cohort, tmp_path) -> None:
    from histolib_train.checkpoint import load_checkpoint

    runs = {}
    for fmt in ("png", "none"):
        runs[fmt] = tmp_path / fmt
        result = train(resolve_config(_options(cohort, fmt, runs[fmt])), log=quiet)
        assert result.stopped == "finished" and result.step == 3
    a, b = read_metrics(runs["png"]), read_metrics(runs["none"])
    assert [r["step"] for r in a] == ["1", "2", "3"]
    for row_a, row_b in zip(a, b, strict=True):
        assert {k: v for k, v in row_a.items() if k != "elapsed_s"} == {
            k: v for k, v in row_b.items() if k != "elapsed_s"
        }
    net_a = load_checkpoint(runs["png"])["nets"]["G_he2ihc"]
    net_b = load_checkpoint(runs["none"])["nets"]["G_he2ihc"]
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)


def test_build_library_cli_reads_a_coordinates_only_manifest(cohort: Cohort, tmp_path) -> None:
    from typer.testing import CliRunner

    from histolib_cli.main import app

    out = tmp_path / "lib.geojson"
    manifest = cohort.manifests["ihc", "none"]
    result = CliRunner().invoke(
        app, ["build-library", str(manifest), "--stain", "ihc", "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    built, _ = read_library(out)
    reference, _ = read_library(cohort.libraries["ihc", "png"])
    assert len(built) == len(reference) > 0
    assert sorted(built["tile_id"]) == sorted(reference["tile_id"])


def test_evaluation_reads_tiles_from_the_slide_as_from_pngs(cohort: Cohort, tmp_path) -> None:
    from histolib_train.evaluation.evaluator import run_evaluation
    from histolib_train.evaluation.options import EvaluateOptions
    from histolib_train.evaluation.tiles import load_manifest_tiles, load_real_ihc
    from tests.helpers_transfer import tiny_checkpoint

    png = load_manifest_tiles(cohort.manifests["he", "png"], n_tiles=None)
    bare = load_manifest_tiles(cohort.manifests["he", "none"], n_tiles=None)
    assert [t.tile_id for t in png] == [t.tile_id for t in bare] and len(png) > 0
    for a, b in zip(png, bare, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.mask, b.mask)
    real_png = load_real_ihc(cohort.manifests["ihc", "png"], n_tiles=5, seed=2)
    real_bare = load_real_ihc(cohort.manifests["ihc", "none"], n_tiles=5, seed=2)
    assert [t for t, _ in real_png] == [t for t, _ in real_bare]
    for (_, a), (_, b) in zip(real_png, real_bare, strict=True):
        np.testing.assert_array_equal(a, b)
    checkpoint = tiny_checkpoint(tmp_path / "g.pt")
    summaries = [
        run_evaluation(
            [str(checkpoint)],
            out=tmp_path / fmt,
            manifest=cohort.manifests["he", fmt],
            real_ihc=cohort.manifests["ihc", fmt],
            options=EvaluateOptions(n_tiles=6, device="cpu"),
        )
        for fmt in ("png", "none")
    ]
    assert summaries[0]["checkpoints"] and summaries[0]["real_ihc"]
    sources = [summary["selection"].pop("source") for summary in summaries]
    assert [Path(s).parent.name for s in sources] == ["he_png", "he_none"]
    assert summaries[0] == summaries[1]
    rows = [(tmp_path / fmt / "tiles.csv").read_text() for fmt in ("png", "none")]
    assert rows[0] == rows[1] and len(rows[0].splitlines()) == 7
