"""``histolib experiment``: a tiny grid end to end, resume after a kill, caching, validation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from histolib.errors import ConfigError
from histolib_cli.main import app
from histolib_train.experiment.grid import parse_grid, read_grid, run_name

REPO = Path(__file__).resolve().parents[4]
runner = CliRunner()


def _geojson(path: Path) -> Path:
    """A QuPath-style tumour contour over the first tiles of the tiny H&E slide."""
    from tests.helpers_qupath import feature, polygon, write_json

    tumour = feature(
        polygon(0, 0, 150, 40),
        objectType="annotation",
        classification={"name": "Tumor", "color": [200, 0, 0]},
    )
    return write_json(path, {"type": "FeatureCollection", "features": [tumour]})


def _grid(root: Path, *, val: bool = True, **shared: Any) -> Path:
    """A 2 models x 2 settings grid over the tiny pair (ngf 4, one block, 2 epochs of 2 steps);
    the H&E manifest split by tile into train / val / test (no val part unless ``val``)."""
    from histolib.tileset.split import split_manifests
    from tests.helpers_train import make_tiny_pair

    he, ihc = make_tiny_pair(root, n_mixed=6, n_normal=4)
    split_manifests([he.manifest], test_fraction=0.3, val_fraction=0.3 if val else 0.0, by="tile")
    doc = {
        "he": str(he.manifest.relative_to(root)),  # relative: from the grid file's folder
        "ihc": str(ihc.manifest),
        "he_library": str(he.library),
        "ihc_library": str(ihc.library),
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "n_blocks": 1,
        "ngf": 4,
        "ndf": 4,
        "boxes_per_tile": 4,
        "workers": 0,
        "device": "cpu",
        "log_every": 1,
        "sample_every": 1000,
        **shared,
        "evaluation": {
            "tiles": str(he.manifest),
            "annotations": str(_geojson(root / "tumour.geojson")),
            "n_tiles": 5,
            "seed": 1,
            "panel_count": 2,
        },
        "grid": {
            "axes": {"lambda_cyc": [1, 10]},
            "models": {"roi": {}, "cyclegan16": {"model": "cyclegan", "patch": 16}},
        },
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_grid_runs_end_to_end_and_resumes_after_a_kill(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    from histolib_train.evaluation import evaluator as evaluate_module
    from histolib_train.experiment.runner import run_experiment
    from histolib_train.training import loop as trainer_module

    grid = _grid(tmp_path)
    out = tmp_path / "exp"
    real_train = trainer_module.train
    calls: list[tuple[str, bool]] = []

    def killed_after_half_a_run(cfg, **kwargs):
        calls.append((Path(cfg.out).name, cfg.resume))
        if len(calls) == 2:  # the second run: one epoch of two, then Ctrl-C
            cfg.epochs = 1
            real_train(cfg, **kwargs)
            raise KeyboardInterrupt
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(trainer_module, "train", killed_after_half_a_run)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(grid, out=out, log=lambda m: None)
    first, second = (out / "runs" / name for name, _ in calls)
    assert first.name == "roi-lambda_cyc_1" and second.name == "roi-lambda_cyc_10"
    done_ckpt = first / "checkpoints" / "epoch_2.pt"
    stamp = done_ckpt.stat().st_mtime_ns
    assert (second / "checkpoints" / "latest.pt").is_file()
    assert not (second / "checkpoints" / "epoch_2.pt").exists()

    calls.clear()
    monkeypatch.setattr(
        trainer_module,
        "train",
        lambda cfg, **kw: calls.append((Path(cfg.out).name, cfg.resume)) or real_train(cfg, **kw),
    )
    result = run_experiment(grid, out=out, log=lambda m: None)
    assert [name for name, _ in calls] == [
        "roi-lambda_cyc_10",
        "cyclegan16-lambda_cyc_1",
        "cyclegan16-lambda_cyc_10",
    ]
    assert done_ckpt.stat().st_mtime_ns == stamp  # the finished run was not retrained
    states = {r.spec.name: (r.state, r.status) for r in result.records}
    assert states["roi-lambda_cyc_1"] == ("done", "skipped")
    assert states["roi-lambda_cyc_10"] == ("partial", "resumed")
    with (second / "metrics.csv").open() as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2", "3", "4"]

    # Reports: every run in results.csv, one row per model's best in table.md, the panel.
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == [r.spec.name for r in result.records]
    assert {r["lambda_cyc"] for r in rows} == {"1", "10"}
    assert sum(r["best"] == "True" for r in rows) == 2
    for row in rows:  # every run scored on val; only the selected ones on test
        assert 0.0 <= float(row["val_dice_empty0_mean"]) <= 1.0 and row["status"] != "failed"
        assert (row["test_dice_mean"] != "") == (row["best"] == "True")
    for model in ("roi", "cyclegan16"):
        model_rows = [r for r in rows if r["model"] == model]
        best = max(
            model_rows,
            key=lambda r: (float(r["val_dice_empty0_mean"]), float(r["val_bac_mean"])),
        )
        assert best["best"] == "True"
        assert result.best[model] == best["run"]
    table = (out / "table.md").read_text()
    assert table.count("| roi | roi-lambda_cyc_") == 1
    assert table.count("| cyclegan16 | cyclegan16-lambda_cyc_") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tiles"] == len(summary["tile_ids"]) == 4  # the test part: 4 tiles
    assert summary["best"] == result.best
    from PIL import Image

    with Image.open(out / "panel.png") as panel:
        assert panel.size[0] == 4 * (64 + 4)  # H&E, annotation, roi, cyclegan16
    # Every run was scored on the same val tiles, the selected ones on the same test tiles.
    val_ids = summary["selection"]["val_tile_ids"]
    assert val_ids and not set(val_ids) & set(summary["tile_ids"])
    for record in result.records:
        with (record.run_dir / "evaluation-val" / "tiles.csv").open() as handle:
            assert [r["tile_id"] for r in csv.DictReader(handle)] == val_ids
        if record.spec.name in result.best.values():
            with (record.run_dir / "evaluation" / "tiles.csv").open() as handle:
                assert [r["tile_id"] for r in csv.DictReader(handle)] == summary["tile_ids"]

    # A third invocation: nothing trained, nothing evaluated again, the same table.
    calls.clear()
    scored: list[Any] = []
    real_eval = evaluate_module.evaluate_generators
    monkeypatch.setattr(
        evaluate_module,
        "evaluate_generators",
        lambda *a, **k: scored.append(a) or real_eval(*a, **k),
    )
    cli = runner.invoke(app, ["experiment", str(grid), "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert calls == [] and scored == []
    assert (out / "table.md").read_text() == table
    dry = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--dry-run"])
    assert dry.exit_code == 0 and "4 runs, 4 done" in dry.output
    # The table names the selection part and metric, carries both conventions, the groups,
    # intervals and the paired difference of the two selected runs on test.
    assert "best run by mean dice_empty0 over all" in table and "of the **val** part" in table
    assert "| dice_empty0 on val |" in table and "on the **test** part (4 tiles)" in table
    assert "| DICE | DICE (both empty = 0) |" in table
    assert table.count("| border tiles |") == 2 and "95% bootstrap interval" in table
    assert "| roi | cyclegan16 | dice_empty0 |" in table and "Wilcoxon p" in table
    assert summary["selection"]["part"] == "val" and summary["paired"][0]["n_tiles"] == 4
    # Selecting on test instead: every run is scored on test, and the table says so.
    optimistic = runner.invoke(
        app, ["experiment", str(grid), "--out", str(out), "--select-on-test", "--select-by", "dice"]
    )
    assert optimistic.exit_code == 0, optimistic.output
    table = (out / "table.md").read_text()
    assert "Selected on the reporting set (optimistic)" in table and "| dice on test |" in table
    assert "No finished, evaluated run" not in table  # every run scored on test, then selected
    assert table.count("| roi | roi-lambda_cyc_") == 1
    assert table.count("| cyclegan16 | cyclegan16-lambda_cyc_") == 1


def test_without_a_val_part_the_experiment_refuses_to_select(tmp_path) -> None:
    grid = _grid(tmp_path, val=False)
    result = runner.invoke(app, ["experiment", str(grid), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no val part" in lines[0] and "--select-on-test" in lines[0]
    assert not (tmp_path / "exp").exists()


def test_failed_runs_are_reported_and_the_grid_goes_on(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    from histolib_train.training import loop as trainer_module

    grid = _grid(tmp_path)
    tried: list[str] = []

    def diverges(cfg, **kwargs):
        tried.append(Path(cfg.out).name)
        raise trainer_module.TrainingError("loss cycle became nan at step 1")

    monkeypatch.setattr(trainer_module, "train", diverges)
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", str(grid), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert len(tried) == 4
    with (out / "results.csv").open() as handle:
        assert {r["status"] for r in csv.DictReader(handle)} == {"failed"}
    assert "No finished, evaluated run of: cyclegan16, roi" in (out / "table.md").read_text()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path) -> None:
    grid = _grid(tmp_path)
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cyclegan16-lambda_cyc_10" in result.output and "4 runs, 0 done" in result.output
    assert not out.exists()


def _doc(**grid: Any) -> dict[str, Any]:
    return {
        "he": "he/tiles.parquet",
        "ihc": "/data/ihc/tiles.parquet",
        "he_library": "he/lib.parquet",
        "ihc_library": "ihc/lib.parquet",
        "evaluation": {"tiles": "test/tiles.parquet"},
        "grid": grid or {"models": ["roi"]},
    }


def test_expansion_names_paths_and_per_model_overrides(tmp_path) -> None:
    doc = _doc(
        axes={"n_blocks": [6, 9], "lambda_cyc": [1, 10, 30]},
        models={
            "roi": {},
            "cyclegan8": {"model": "cyclegan", "patch": 8, "axes": {"lambda_cyc": [10]}},
            "ccgan": {"n_blocks": 9, "batch_size": 2},
        },
    )
    grid = parse_grid(doc, path=tmp_path / "g.yaml")
    names = [r.name for r in grid.runs]
    assert len(names) == 6 + 2 + 3
    assert names[:2] == ["roi-n_blocks_6-lambda_cyc_1", "roi-n_blocks_6-lambda_cyc_10"]
    assert "cyclegan8-n_blocks_9-lambda_cyc_10" in names
    assert "ccgan-lambda_cyc_30" in names  # ccgan fixes n_blocks: that axis is dropped
    ccgan = next(r for r in grid.runs if r.model == "ccgan")
    assert ccgan.options["n_blocks"] == 9 and ccgan.options["model"] == "ccgan"
    assert grid.runs[0].options["he"] == str(tmp_path / "he/tiles.parquet")
    assert grid.runs[0].options["ihc"] == "/data/ihc/tiles.parquet"
    assert grid.evaluation.tiles == str(tmp_path / "test/tiles.parquet")
    assert grid.axes == ("n_blocks", "lambda_cyc")
    assert run_name("roi", {"lr": 0.0002, "flip": False}) == "roi-lr_0.0002-flip_false"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(epochz=3), "unknown option 'epochz'"),
        (lambda d: d.update(out="x"), "'out' is set by the experiment"),
        (lambda d: d.pop("evaluation"), "evaluation block"),
        (lambda d: d.update(evaluation={"images": "x"}), "either tiles"),
        (lambda d: d.update(evaluation={"tiles": "t", "n_tiles": 0}), "at least 1"),
        (lambda d: d.update(grid={"models": {"gan": {}}}), "give it a 'model:' option"),
        (lambda d: d.update(grid={"models": ["roi"], "axes": {"n_blocks": []}}), "non-empty"),
        (lambda d: d.update(grid={"models": ["roi"], "axes": {"ngf": [4, 4.0]}}), "repeats"),
        (lambda d: d.update(grid={"models": ["roi"], "axes": {"patch": [8, 12]}}), "'patch'"),
        (lambda d: d.update(grid={"axes": {}}), "models:"),
        (lambda d: d.pop("he"), "'he'"),
    ],
)
def test_bad_grids_name_the_file_and_the_key(tmp_path, change, message) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(ConfigError, match=message) as info:
        parse_grid(doc, path=tmp_path / "grid.yaml")
    assert "grid.yaml" in str(info.value)


def test_unreadable_grid_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such grid file"):
        read_grid(tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed")
    with pytest.raises(ConfigError, match="not a valid YAML"):
        read_grid(bad)
    result = runner.invoke(app, ["experiment", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "bad.yaml" in result.output


def test_the_paper_grid_example_expands_to_the_papers_runs() -> None:
    from histolib_train.experiment.grid import run_config

    grid = read_grid(REPO / "examples" / "paper_grid.yaml")
    assert len(grid.runs) == 6 * 6
    models = {"roi", "cyclegan8", "cyclegan16", "cyclegan32", "ccgan-plain", "ccgan"}
    assert {r.model for r in grid.runs} == models
    assert (grid.evaluation.split, grid.evaluation.labels) == ("test", ["positive", "negative"])
    assert grid.evaluation.n_tiles == 500 and grid.evaluation.balance
    for run in grid.runs:
        cfg = run_config(run, "unused")
        assert (cfg.preset, cfg.epochs, cfg.roi_sampling) == ("authors", 25, "authors")
        assert cfg.batch_size == (2 if run.model == "ccgan" else 8)  # ccgan-plain: 8
        assert cfg.lambda_id == 5  # stated in the grid, for every lambda_cyc
        assert run.settings["n_blocks"] in (6, 9) and run.settings["lambda_cyc"] in (1, 10, 30)


def test_grids_take_presets_samplers_and_roi_only(tmp_path) -> None:
    from histolib_train.experiment.grid import run_config

    doc = _doc(
        axes={"roi_sampling": ["authors", "balanced"]},
        models={"roi": {}, "roi-only": {}, "paper": {"model": "roi", "preset": "paper"}},
    )
    doc["evaluation"] = {"tiles": "t.parquet", "split": "all", "amp": True, "balance": False}
    grid = parse_grid(doc, path=tmp_path / "g.yaml")
    assert [r.name for r in grid.runs] == [
        "roi-roi_sampling_authors",
        "roi-roi_sampling_balanced",
        "roi-only-roi_sampling_authors",
        "roi-only-roi_sampling_balanced",
        "paper-roi_sampling_authors",
        "paper-roi_sampling_balanced",
    ]
    configs = {r.name: run_config(r, tmp_path / r.name) for r in grid.runs}
    assert configs["roi-only-roi_sampling_balanced"].model == "roi-only"
    assert configs["roi-only-roi_sampling_balanced"].roi_sampling == "balanced"
    paper = configs["paper-roi_sampling_authors"]
    assert (paper.preset, paper.epochs, paper.roi_sampling) == ("paper", 20, "authors")
    assert (grid.evaluation.split, grid.evaluation.amp, grid.evaluation.balance) == (
        "all",
        True,
        False,
    )
    doc["evaluation"]["split"] = "val"
    with pytest.raises(ConfigError, match="val is where the experiment selects runs"):
        parse_grid(doc, path=tmp_path / "g.yaml")
    doc["evaluation"]["split"] = "validation"
    with pytest.raises(ConfigError, match="split must be test, val, train, all"):
        parse_grid(doc, path=tmp_path / "g.yaml")
    doc["evaluation"] = {"tiles": "t.parquet"}
    doc["grid"] = {"models": ["roi"], "axes": {"preset": ["authors", "mine"]}}
    with pytest.raises(ConfigError, match="preset must be authors or paper"):
        parse_grid(doc, path=tmp_path / "g.yaml")


def test_huge_grids_and_run_names_with_separators_are_refused(tmp_path) -> None:
    doc = _doc(
        models=["roi"], axes={"seed": list(range(1000)), "lr": [i / 1e5 for i in range(1, 1001)]}
    )
    with pytest.raises(ConfigError, match="more than 1000 runs") as info:
        parse_grid(doc, path=tmp_path / "grid.yaml")  # 10^6 combinations: refused, not expanded
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="path separator"):
        parse_grid(_doc(models={"a/b": {"model": "roi"}}), path=tmp_path / "grid.yaml")
    doc = _doc(models=["roi"], axes={"roi_sampling": ["authors", "bal/anced"]})
    with pytest.raises(ConfigError, match="path separator"):
        parse_grid(doc, path=tmp_path / "grid.yaml")
    (tmp_path / "huge.yaml").write_text(
        yaml.safe_dump(_doc(models=["roi"], axes={"seed": list(range(1000)), "ngf": [4, 8]}))
    )
    dry = runner.invoke(app, ["experiment", str(tmp_path / "huge.yaml"), "--out", "x", "--dry-run"])
    assert dry.exit_code == 1 and "2000 runs" in dry.output
    assert len(dry.output.strip().splitlines()) == 1


def test_checkpoint_choice() -> None:
    from histolib_train.experiment.runner import check_checkpoint_choice

    assert check_checkpoint_choice("final") == "final"
    assert check_checkpoint_choice("epoch_21", 25) == "epoch_21"
    for bad in ("epoch_0", "latest", "epoch_x"):
        with pytest.raises(ConfigError, match="final or epoch_N"):
            check_checkpoint_choice(bad)
    with pytest.raises(ConfigError, match="only 25 epochs"):
        check_checkpoint_choice("epoch_26", 25)
