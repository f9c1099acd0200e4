"""Distributed training on the CPU: 2 gloo ranks on loopback started by torchrun.

Both ranks end with the same weights (each rank's digest is in the checkpoint), rank 0 alone
writes, each rank keeps its own replay buffer, and a 2-rank run stopped after its first step and
resumed gives the losses and weights of the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from histolib_train.checkpoint import load_checkpoint  # noqa: E402
from histolib_train.training.config import (  # noqa: E402
    TrainConfig,
    config_for_run,
    resolve_config,
)
from histolib_train.training.distributed import weights_digest  # noqa: E402
from histolib_train.training.loop import train  # noqa: E402
from histolib_train.training.trainer import build_networks  # noqa: E402
from tests.helpers_train import quiet, read_metrics, tiny_options  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

TINY = ["--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-size", "2"]
TINY += ["--boxes-per-tile", "4", "--epochs", "1", "--steps-per-epoch", "3", "--workers", "1"]
TINY += ["--device", "cpu", "--log-every", "1", "--seed", "3"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(module: str, pair, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m MODULE train ...`` on loopback (gloo)."""
    he, ihc = pair
    inputs = ["--he", str(he.manifest), "--ihc", str(ihc.manifest)]
    inputs += ["--he-library", str(he.library), "--ihc-library", str(ihc.library)]
    config = out.parent / "buffer.yaml"
    config.write_text("buffer_size: 3\n")  # full after the first step: its history matters
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", module, "train", *inputs, "--out", str(out), "--config", str(config), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def _losses(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


def test_two_gloo_ranks_train_one_model_and_resume_exactly(pair, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    done = _torchrun("histolib_cli.main", pair, straight)  # `histolib train` under torchrun
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if "finished at step 3 of 3" in line]
    assert len(summaries) == 1, done.stdout  # rank 0 reports, rank 1 does not
    rows = read_metrics(straight)
    assert [r["step"] for r in rows] == ["1", "2", "3"]  # one writer
    assert json.loads((straight / "train_tiles.json").read_text())["tile_ids"]
    state = load_checkpoint(straight / "checkpoints" / "latest.pt")
    ranks = state["ranks"]
    assert len(ranks) == 2 and ranks[0]["weights"] == ranks[1]["weights"]
    nets = build_networks(TrainConfig(**state["config"]))
    for name, net in nets.items():
        net.load_state_dict(state["nets"][name])
    assert weights_digest(nets) == ranks[0]["weights"]  # the digests are of these weights
    own, other = state["replay"], ranks[1]["replay"]
    assert own["he"].shape == other["he"].shape == (3, 3, 64, 64)
    assert not torch.equal(own["he"], other["he"])  # each rank its own batches and buffer
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == [
        "epoch_1.pt",
        "latest.pt",
    ]

    stepped = tmp_path / "stepped"
    first = _torchrun("histolib_train", pair, stepped, "--max-minutes", "1e-9")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "time budget at step 1 of 3" in first.stdout
    assert len(load_checkpoint(stepped / "checkpoints" / "latest.pt")["ranks"]) == 2
    alone = tmp_path / "alone"
    shutil.copytree(stepped, alone)  # the 2-rank run, continued by one process
    cfg = config_for_run({"out": str(alone), "resume": True, "max_minutes": 100.0})
    assert train(cfg, log=quiet).stopped == "finished"
    assert [r["step"] for r in read_metrics(alone)] == ["1", "2", "3"]
    rest = _torchrun("histolib_train", pair, stepped, "--resume", "--max-minutes", "100")
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "finished at step 3 of 3" in rest.stdout
    assert _losses(read_metrics(stepped)) == _losses(rows)
    resumed = load_checkpoint(stepped / "checkpoints" / "latest.pt")
    for name, weights in state["nets"].items():
        assert all(torch.equal(weights[k], resumed["nets"][name][k]) for k in weights), name
    assert resumed["ranks"][1]["weights"] == ranks[1]["weights"]

    # One process alone draws rank 0's batches only: its first loss is not the 2-rank mean.
    he, ihc = pair
    single = tiny_options(he, ihc, tmp_path / "single", batch_size=2, boxes_per_tile=4)
    single.update(epochs=1, steps_per_epoch=1, buffer_size=3)
    train(resolve_config(single), log=quiet)
    assert read_metrics(tmp_path / "single")[0]["loss_G"] != rows[0]["loss_G"]
