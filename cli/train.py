"""``histolib train``: train the region-guided CycleGAN (or a CycleGAN baseline)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, err_console, is_tty, out_console
from histolib_cli.options import command_options
from histolib_train.training.config import TrainConfig

#: What train writes in --out (a --resume reads the run folder's own files by design).
RUN_WRITES = ("config.yaml", "checkpoints/*", "metrics.csv", "samples/*", "train_tiles.json", ".*")


@command_options(TrainConfig, not_given=True)
def train_command(
    config: Path | None = typer.Option(
        None, "--config", help="YAML file with any of these options (underscores or dashes)."
    ),
    *,
    values: dict[str, Any],
) -> None:
    """Train the region-guided CycleGAN (H&E <-> IHC) into a run folder.

    Writes OUT/config.yaml (every resolved option), OUT/checkpoints/latest.pt and epoch_N.pt,
    OUT/metrics.csv and OUT/samples/step_N.png. Options come from the defaults, the --preset
    (authors: the authors' code, default; paper: the paper's text), then --config, then the
    command line. A manifest with a split column trains on its train tiles only. Ctrl-C stops
    after the current step with a checkpoint; --resume continues. Started by torchrun
    (`torchrun --nproc_per_node N -m histolib_train train ...`), every process trains one rank
    of a DistributedDataParallel run and rank 0 writes the run folder.
    """
    with cli_errors():
        from histolib_train.training.config import config_for_run
        from histolib_train.training.loop import train

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
        cfg = config_for_run(options, config_file=config)
        console = err_console()
        # Under torchrun only rank 0 writes the run folder, so only it holds the folder's lock.
        writes = cfg.out and os.environ.get("RANK", "0") == "0"
        reads = [cfg.he, cfg.ihc, cfg.he_library, cfg.ihc_library, config]
        lock = (
            output_lock(cfg.out, command="train", inputs=reads, writes=RUN_WRITES)
            if writes
            else contextlib.nullcontext()
        )
        with lock:
            result = train(cfg, show_progress=is_tty(), log=lambda m: console.print(m))
        if result.rank:  # under torchrun, rank 0 reports for every rank
            return
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.last_losses.items())
        where = result.checkpoint or result.run_dir
        out_console().print(
            f"{result.run_dir}: {result.stopped} at step {result.step} of {result.total_steps} "
            f"(epoch {result.epoch}); checkpoint {where}" + (f"; {losses}" if losses else "")
        )


def register(app: typer.Typer) -> None:
    """Add ``histolib train`` to the CLI."""
    app.command("train")(train_command)
