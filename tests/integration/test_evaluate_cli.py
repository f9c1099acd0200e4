"""``histolib evaluate`` end to end: folders, manifests, outputs and errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_transfer import (
    synthetic_eval_tiles,
    tiny_checkpoint,
    write_eval_folders,
    write_eval_manifest,
)

pytest.importorskip("torch")
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate_cli")
    _, tiles, _, geojson = synthetic_eval_tiles(root, max_empty=3)
    images, masks = write_eval_folders(root, tiles)
    manifest = write_eval_manifest(root / "manifest", tiles, annotations=geojson)
    run_a = root / "runs" / "a" / "checkpoints"
    run_b = root / "runs" / "b" / "checkpoints"
    run_a.mkdir(parents=True)
    run_b.mkdir(parents=True)
    return {
        "images": images,
        "masks": masks,
        "manifest": manifest,
        "a": tiny_checkpoint(run_a / "latest.pt", seed=1),
        "b": tiny_checkpoint(run_b / "latest.pt", seed=2, model="cyclegan"),
        "n": Path(str(len(tiles))),
    }


def on_folders(data: dict[str, Path], *checkpoints: str, out: Path) -> list[str]:
    """``evaluate`` of ``checkpoints`` on the image and mask folders, written to ``out``."""
    tiles = ["--images", str(data["images"]), "--masks", str(data["masks"])]
    return ["evaluate", *checkpoints, *tiles, "--out", str(out)]


def test_two_checkpoints_on_folders(data, tmp_path) -> None:
    out = tmp_path / "eval"
    run_b = str(data["b"].parents[1])  # a run folder: its checkpoints/latest.pt
    result = runner.invoke(
        app, [*on_folders(data, f"roi={data['a']}", run_b, out=out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "| roi |" in result.output and "| b |" in result.output
    assert {p.name for p in out.iterdir()} >= {"tiles.csv", "summary.json", "table.md", "panel.png"}
    summary = json.loads((out / "summary.json").read_text())
    n = int(str(data["n"]))
    assert summary["n_tiles"] == n
    assert set(summary["checkpoints"]) == {"roi", "b"}
    assert summary["checkpoint_paths"]["roi"] == str(data["a"])
    with (out / "tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * n
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0


def test_manifest_with_recorded_annotations_and_n_tiles(data, tmp_path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(data["a"]), "--tiles", str(data["manifest"]), "--out", str(out)]
    result = runner.invoke(app, [*args, "--n-tiles", "3", "--seed", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tiles"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--images", "{images}"], "--masks"),
        ([], "either --tiles"),
        (["--tiles", "{manifest}", "--images", "{images}"], "either --tiles"),
        (["--images", "{images}", "--masks", "{nowhere}"], "no such folder"),
    ],
)
def test_bad_tile_sources(data, tmp_path, extra, message) -> None:
    extra = [
        e.format(images=data["images"], manifest=data["manifest"], nowhere=tmp_path / "x")
        for e in extra
    ]
    result = runner.invoke(app, ["evaluate", str(data["a"]), "--out", str(tmp_path), *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_corrupt_checkpoint(data, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nonsense")
    result = runner.invoke(app, on_folders(data, str(bad), out=tmp_path / "o"))
    assert result.exit_code == 1
    assert "bad.pt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_subprocess_run(data, tmp_path) -> None:
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "histolib_cli.main", *on_folders(data, str(data["a"]), out=out)]
    cmd += ["--real-ihc", str(data["images"]), "--n-tiles", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "real IHC" in (out / "table.md").read_text()


def test_split_labels_and_precision_options(data, tmp_path) -> None:
    import shutil

    from histolib.tileset.manifest import read_manifest
    from histolib.tileset.split import split_manifests

    plain = data["manifest"]
    args = ["evaluate", str(data["a"]), "--device", "cpu", "--n-tiles", "100"]
    no_split = runner.invoke(app, [*args, "--tiles", str(plain), "--out", str(tmp_path / "o1")])
    assert no_split.exit_code == 0, no_split.output
    warning = [line for line in no_split.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 2 and "no split column" in warning[0]
    assert "no record of the training tiles of latest" in warning[1]  # said once
    folder = tmp_path / "manifest"
    shutil.copytree(plain.parent, folder)
    manifest = folder / plain.name
    split_manifests([manifest], test_fraction=0.3, by="tile", seed=0)
    gdf, _ = read_manifest(manifest)
    for part, expected in (("test", {"test"}), ("train", {"train"}), ("all", {"test", "train"})):
        out = tmp_path / part
        result = runner.invoke(
            app, [*args, "--tiles", str(manifest), "--out", str(out), "--split", part, "--amp"]
        )
        assert result.exit_code == 0, result.output
        assert "no split column" not in result.output
        summary = json.loads((out / "summary.json").read_text())
        ids = set(gdf.loc[gdf["split"].isin(expected), "tile_id"])
        assert summary["n_tiles"] == len(ids)
        with (out / "tiles.csv").open() as handle:
            assert {row["tile_id"] for row in csv.DictReader(handle)} == ids
        # --amp is bf16 autocast on CUDA only; on the CPU the generators stay float32
        assert summary["inference"]["precision"] == "fp32"
        assert summary["selection"]["split"] == part
    every = runner.invoke(
        app, [*args, "--tiles", str(manifest), "--out", str(tmp_path / "e"), "--label", "all"]
    )
    assert every.exit_code == 0, every.output
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["selection"]["labels"] is None


def test_a_run_is_not_scored_on_the_tiles_it_trained_on(data, tmp_path) -> None:
    import shutil

    from histolib.tileset.manifest import read_manifest
    from histolib.tileset.split import split_manifests
    from histolib_train.training.run_folder import TRAINING_TILES_NAME

    folder = tmp_path / "manifest"
    shutil.copytree(data["manifest"].parent, folder)
    manifest = folder / data["manifest"].name
    split_manifests([manifest], test_fraction=0.3, by="tile", seed=0)
    gdf, _ = read_manifest(manifest)
    trained = sorted(gdf.loc[gdf["split"] == "train", "tile_id"])
    run = tmp_path / "run"
    shutil.copytree(data["a"].parents[1], run)
    (run / TRAINING_TILES_NAME).write_text(
        json.dumps(
            {
                "tile_ids": trained,
                "sources": [{"path": str(manifest), "sha256": "", "split": "train"}],
                "used_every_tile": False,
            }
        )
    )
    args = ["evaluate", str(run / "checkpoints" / "latest.pt"), "--tiles", str(manifest)]
    args += ["--device", "cpu", "--n-tiles", "100"]
    refused = runner.invoke(app, [*args, "--split", "all", "--out", str(tmp_path / "o1")])
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and f"trained on {len(trained)} of the {len(gdf)} tiles" in lines[0]
    assert "--allow-train-overlap" in lines[0]
    held_out = runner.invoke(app, [*args, "--out", str(tmp_path / "o2")])  # --split test
    assert held_out.exit_code == 0 and "warning" not in held_out.output, held_out.output
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["training_overlap"] == {"latest": 0}
    allowed = runner.invoke(
        app, [*args, "--split", "all", "--allow-train-overlap", "--out", str(tmp_path / "o3")]
    )
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads((tmp_path / "o3" / "summary.json").read_text())
    assert summary["training_overlap"] == {"latest": len(trained)}


def test_ihc_truth_adds_psnr_ssim_and_dab_dice(data, tmp_path) -> None:
    import shutil

    ihc = tmp_path / "ihc"
    shutil.copytree(data["images"], ihc)  # stand-in registered IHC: same names, same size
    out = tmp_path / "eval"
    args = on_folders(data, str(data["a"]), out=out)
    result = runner.invoke(
        app, [*args, "--ihc-truth", str(ihc), "--groups", "all", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    with (out / "tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(0 <= float(r["ssim"]) <= 1 and r["psnr"] and r["dab_dice"] for r in rows)
    table = (out / "table.md").read_text()
    assert "| PSNR (dB) | SSIM | DAB DICE vs real IHC |" in table
    assert "| all tiles |" in table and "| tumour tiles |" not in table  # --groups all
    assert json.loads((out / "summary.json").read_text())["ihc_truth"] == str(ihc)
