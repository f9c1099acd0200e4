"""``histolib train`` end to end: run folder, YAML config, resume, errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from histolib_cli.main import app  # noqa: E402
from tests.helpers_train import train_inputs  # noqa: E402

pytestmark = pytest.mark.torch


def test_train_writes_the_run_folder(pair, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "ngf: 8\nndf: 8\nn-blocks: 2\nbatch_size: 4\nboxes_per_tile: 4\n"
        "steps_per_epoch: 2\nepochs: 3\nworkers: 0\nlog_every: 1\nsample_every: 3\n"
    )
    args = ["train", *train_inputs(pair), "--out", str(run), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--epochs", "2", "--device", "cpu", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "finished at step 4 of 4" in result.output
    saved = (run / "config.yaml").read_text()
    for line in ("ngf: 8", "n_blocks: 2", "epochs: 2", "seed: 4", "lambda_cyc: 30.0"):
        assert line in saved.splitlines()
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["loss_G"] and rows[0]["D_roi_ihc"]
    # The authors' checkpoint epochs (1, 6, 11, ...) and the last.
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "epoch_2.pt", "latest.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_3.png", "step_4.png"]
    from PIL import Image

    with Image.open(run / "samples" / "step_4.png") as sheet:
        # 3 columns (tile, translation, reconstruction), 4 H&E + 4 IHC rows of 64 px tiles.
        assert sheet.size == (3 * 66 + 2, 8 * 66 + 2)

    # More epochs on resume: only what the run folder lacks is trained.
    again = CliRunner().invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "3"])
    assert again.exit_code == 0, again.output
    assert "finished at step 6 of 6" in again.output
    assert (run / "checkpoints" / "epoch_3.pt").is_file()


def test_bad_inputs_give_one_line_errors(pair, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "o")
    missing = runner.invoke(
        app,
        ["train", *train_inputs(pair)[2:], "--he", str(tmp_path / "none.parquet"), "--out", out],
    )
    assert missing.exit_code == 1
    assert missing.output.startswith("error:") and "none.parquet: no such" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1
    no_out = runner.invoke(app, ["train", *train_inputs(pair)])
    assert no_out.exit_code == 1 and "--out is required" in no_out.output
    bad_model = runner.invoke(app, ["train", *train_inputs(pair), "--out", out, "--model", "unet"])
    assert bad_model.exit_code == 1 and "--model must be roi, roi-only" in bad_model.output
    bad_rule = runner.invoke(
        app, ["train", *train_inputs(pair), "--out", out, "--roi-sampling", "x"]
    )
    assert (
        bad_rule.exit_code == 1 and "--roi-sampling must be authors or balanced" in bad_rule.output
    )
    assert not Path(out).exists()


def test_train_as_a_subprocess(pair, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "histolib_cli.main",
        "train",
        *train_inputs(pair),
        "--out",
        str(run),
    ]
    tiny = ["--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-size", "2"]
    tiny += ["--epochs", "1", "--steps-per-epoch", "1", "--workers", "1", "--device", "cpu"]
    done = subprocess.run([*cmd, *tiny], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (run / "checkpoints" / "latest.pt").is_file()
    again = subprocess.run([*cmd, *tiny], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error:") and "--resume" in again.stderr
    assert "Traceback" not in again.stderr


def test_preset_and_overrides_reach_config_yaml(pair, tmp_path: Path) -> None:
    import yaml

    run = tmp_path / "run"
    args = ["train", *train_inputs(pair), "--out", str(run), "--preset", "paper"]
    args += ["--roi-sampling", "authors", "--model", "roi-only", "--epochs", "1"]
    args += ["--steps-per-epoch", "1", "--ngf", "4", "--ndf", "4", "--n-blocks", "1"]
    args += ["--batch-size", "2", "--workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["preset"], saved["roi_sampling"], saved["model"]) == (
        "paper",
        "authors",
        "roi-only",
    )
    assert (saved["lr_schedule"], saved["lr_decay_start"], saved["epochs"]) == ("step", None, 1)
    assert saved["checkpoint_first"] == 5 and saved["batch_size"] == 2
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["config"]["preset"] == "paper" and "D_he" not in state["nets"]
    # the preset is strict on resume
    again = CliRunner().invoke(app, ["train", "--out", str(run), "--resume", "--preset", "authors"])
    assert again.exit_code == 1 and "preset 'paper' -> 'authors'" in again.output


@pytest.mark.parametrize(("rule", "counts"), [("balanced", (8, 24)), ("authors", (16, 16))])
def test_roi_sampling_reaches_the_sampler(pair, tmp_path: Path, rule: str, counts) -> None:
    """Batches of 2 mixed tiles (2 cancer + 2 normal boxes) and 2 normal-only tiles a domain,
    k = 4: balanced draws 2 + 2 and 4 normal a tile (8 cancer, 24 normal over both domains),
    the authors' rule 4 + 1 and 3 normal (16 and 16). metrics.csv logs every step's counts."""
    run = tmp_path / "run"
    tiny = ["--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--batch-size", "4"]
    tiny += ["--boxes-per-tile", "4", "--epochs", "1", "--steps-per-epoch", "3"]
    tiny += ["--workers", "0", "--device", "cpu", "--log-every", "1"]
    args = ["train", *train_inputs(pair), "--out", str(run), *tiny, "--roi-sampling", rule]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["rois_cancer"]), int(r["rois_normal"])) for r in rows] == [counts] * 3
