"""histolib_train.training.distributed alone: the torchrun environment, rank-seeded batches,
and a world of one that changes nothing (2-rank runs: tests/integration/test_train_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from histolib.errors import ConfigError  # noqa: E402
from histolib_train.training import distributed  # noqa: E402
from histolib_train.training.batches import (  # noqa: E402
    PairedBatches,
    batch_rng,
    load_tiles,
    sample_batch,
    split_groups,
)
from histolib_train.training.config import resolve_config  # noqa: E402
from histolib_train.training.distributed import RankEnv, Ranks, detect_env  # noqa: E402
from histolib_train.training.loop import train  # noqa: E402
from histolib_train.training.trainer import CycleGANTrainer  # noqa: E402
from tests.helpers_train import quiet, tiny_options  # noqa: E402

pytestmark = pytest.mark.torch


def test_the_torchrun_environment_is_read() -> None:
    assert detect_env({}) == RankEnv(rank=0, world_size=1, local_rank=0)
    env = detect_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert env == RankEnv(rank=3, world_size=4, local_rank=1) and env.distributed
    assert detect_env({"RANK": "1", "WORLD_SIZE": "2"}).local_rank == 1
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        detect_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="RANK 2, WORLD_SIZE 2"):
        detect_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_each_rank_draws_its_own_batches_and_rank_0_the_single_process_ones(pair) -> None:
    he, _ = pair
    tiles = load_tiles(he.manifest, domain="he", library=he.library)
    split_groups(tiles, require_boxes=True)
    # Rank 0 keeps the generator of a one-process run: old runs resume unchanged.
    legacy = np.random.default_rng([7, 0, 0, 5])
    assert batch_rng(7, "he", 5).random() == legacy.random()
    assert batch_rng(7, "he", 5, rank=1).random() != batch_rng(7, "he", 5).random()
    drawn = {
        rank: [
            sample_batch(tiles, step=s, seed=7, batch_size=4, boxes_per_tile=2, rank=rank)
            for s in range(6)
        ]
        for rank in (0, 1)
    }
    single = [sample_batch(tiles, step=s, seed=7, batch_size=4, boxes_per_tile=2) for s in range(6)]
    for a, b in zip(drawn[0], single, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    differ = [
        not torch.equal(a["boxes"], b["boxes"]) or not torch.equal(a["flips"], b["flips"])
        for a, b in zip(drawn[0], drawn[1], strict=True)
    ]
    assert sum(differ) >= 5
    again = sample_batch(tiles, step=3, seed=7, batch_size=4, boxes_per_tile=2, rank=1)
    assert all(torch.equal(again[k], drawn[1][3][k]) for k in again)
    paired = PairedBatches(tiles, tiles, seed=7, batch_size=4, boxes_per_tile=2, rank=1)
    assert torch.equal(paired[3]["he"]["boxes"], drawn[1][3]["boxes"])


def test_a_world_of_one_changes_nothing(pair, tmp_path: Path) -> None:
    he, ihc = pair
    cfg = resolve_config(tiny_options(he, ihc, tmp_path / "run"))
    ranks = Ranks(RankEnv())
    assert ranks.is_main and ranks.log(quiet) is quiet
    assert ranks.place(torch.device("cpu")) == torch.device("cpu")
    trainer = CycleGANTrainer(cfg, device=torch.device("cpu"), total_steps=4)
    ranks.attach(trainer, None)
    assert trainer.train_nets == trainer.nets  # no DDP wrappers
    losses = {"a": torch.tensor(1.5), "b": torch.tensor(2.0)}
    assert ranks.mean_losses(losses) is losses
    assert ranks.agree("time budget") == "time budget" and ranks.agree("") == ""
    state = ranks.checkpoint(trainer, 0)
    assert state is not None and "ranks" not in state and state["step"] == 0
    ranks.barrier()


def test_a_checkpoint_of_another_world_size_is_noted() -> None:
    two = Ranks(RankEnv(rank=1, world_size=2, local_rank=1))
    assert not two.is_main and two.log(quiet) is not quiet
    assert two.resume_note({"ranks": [{"weights": "a"}, {"weights": "a"}]}) is None
    note = two.resume_note({"step": 3})  # written by one process
    assert note is not None and "written by 1 process(es), this run has 2" in note


def test_weights_digest_sees_every_parameter_and_ignores_buffers(pair, tmp_path: Path) -> None:
    he, ihc = pair
    cfg = resolve_config(tiny_options(he, ihc, tmp_path / "run"))
    nets = CycleGANTrainer(cfg, device=torch.device("cpu"), total_steps=4).nets
    digest = distributed.weights_digest(nets)
    assert digest == distributed.weights_digest(dict(nets))
    roi = nets["D_roi_he"]
    bn = next(m for m in roi.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 1.0  # running statistics differ between ranks: not compared
    assert distributed.weights_digest(nets) == digest
    with torch.no_grad():
        last = list(nets["G_ihc2he"].parameters())[-1]
        last.view(-1)[0] += 1e-6
    assert distributed.weights_digest(nets) != digest


def test_a_world_without_a_master_address_is_refused(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    he, ihc = pair
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT are not set"):
        train(resolve_config(tiny_options(he, ihc, tmp_path / "run")), log=quiet)
    assert not (tmp_path / "run").exists()
