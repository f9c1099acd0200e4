"""histolib_train.transfer.cluster without a cluster: a task's window settings, input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from histolib.errors import CheckpointError, InputError
from histolib_train.transfer.cluster import transfer_slides, window_settings
from histolib_train.transfer.options import TransferOptions


def test_window_settings_come_from_the_checkpoint_unless_given() -> None:
    options = TransferOptions()
    assert window_settings({"mpp": 1.0, "tile_size": 128}, options) == (1.0, 128, 32, [])
    assert window_settings({"mpp": 0.5, "tile_size": 512}, options)[1:3] == (512, 64)
    given = TransferOptions(mpp=0.25, tile_size=64, overlap=8)
    assert window_settings({"mpp": 1.0, "tile_size": 128}, given) == (0.25, 64, 8, [])


def test_a_checkpoint_without_mpp_runs_at_half_a_micron_and_says_so() -> None:
    mpp, size, overlap, notes = window_settings({}, TransferOptions())
    assert (mpp, size, overlap) == (0.5, 256, 64)
    assert notes == ["the checkpoint records no mpp; running at 0.5 um/px (set --mpp)"]


def test_missing_inputs_are_refused_before_any_cluster_is_reached(tmp_path: Path) -> None:
    checkpoint = tmp_path / "roi.pt"
    checkpoint.write_bytes(b"")
    never = "tcp://127.0.0.1:1"
    with pytest.raises(InputError, match="no such slide file"):
        transfer_slides(
            [(tmp_path / "none.svs", tmp_path / "v.tif")],
            checkpoint=checkpoint,
            scheduler=never,
        )
    with pytest.raises(CheckpointError, match=r"none\.pt: no such checkpoint"):
        transfer_slides(
            [(checkpoint, tmp_path / "v.tif")],
            checkpoint=tmp_path / "none.pt",
            scheduler=never,
        )
