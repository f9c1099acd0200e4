"""``histolib train``: train the region-guided CycleGAN (or a CycleGAN baseline)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, err_console, is_tty, out_console
from histolib_cli.options import field_option, given_values
from histolib_train.training.config import TrainConfig

#: What train writes in --out (a --resume reads the run folder's own files by design).
RUN_WRITES = ("config.yaml", "checkpoints/*", "metrics.csv", "samples/*", "train_tiles.json", ".*")


def _given(name: str) -> Any:
    """The option of field ``name`` of :class:`TrainConfig`, None when not given (it then
    comes from --config, the preset or the default)."""
    return field_option(TrainConfig, name, not_given=True)


def train_command(
    config: Path | None = typer.Option(
        None, "--config", help="YAML file with any of these options (underscores or dashes)."
    ),
    he: str | None = _given("he"),
    ihc: str | None = _given("ihc"),
    he_library: str | None = _given("he_library"),
    ihc_library: str | None = _given("ihc_library"),
    out: str | None = _given("out"),
    preset: str | None = _given("preset"),
    model: str | None = _given("model"),
    patch: int | None = _given("patch"),
    epochs: int | None = _given("epochs"),
    steps_per_epoch: int | None = _given("steps_per_epoch"),
    batch_size: int | None = _given("batch_size"),
    n_blocks: int | None = _given("n_blocks"),
    ngf: int | None = _given("ngf"),
    ndf: int | None = _given("ndf"),
    upsample: str | None = _given("upsample"),
    boxes_per_tile: int | None = _given("boxes_per_tile"),
    roi_sampling: str | None = _given("roi_sampling"),
    lambda_cyc: float | None = _given("lambda_cyc"),
    lambda_id: float | None = _given("lambda_id"),
    lambda_roi: float | None = _given("lambda_roi"),
    lambda_cls: float | None = _given("lambda_cls"),
    lambda_ssim: float | None = _given("lambda_ssim"),
    lambda_photo: float | None = _given("lambda_photo"),
    ccgan_condition: str | None = _given("ccgan_condition"),
    lr: float | None = _given("lr"),
    beta1: float | None = _given("beta1"),
    beta2: float | None = _given("beta2"),
    lr_schedule: str | None = _given("lr_schedule"),
    lr_decay_start: int | None = _given("lr_decay_start"),
    buffer_size: int | None = _given("buffer_size"),
    flip: bool | None = _given("flip"),
    flip_rule: str | None = _given("flip_rule"),
    include_empty_tiles: bool | None = _given("include_empty_tiles"),
    device: str | None = _given("device"),
    amp: bool | None = _given("amp"),
    amp_dtype: str | None = _given("amp_dtype"),
    channels_last: bool | None = _given("channels_last"),
    tf32: bool | None = _given("tf32"),
    seed: int | None = _given("seed"),
    resume: bool | None = _given("resume"),
    workers: int | None = _given("workers"),
    log_every: int | None = _given("log_every"),
    sample_every: int | None = _given("sample_every"),
    checkpoint_every: int | None = _given("checkpoint_every"),
    checkpoint_first: int | None = _given("checkpoint_first"),
    max_minutes: float | None = _given("max_minutes"),
    mpp: float | None = _given("mpp"),
    allow_many_workers: bool | None = _given("allow_many_workers"),
) -> None:
    """Train the region-guided CycleGAN (H&E <-> IHC) into a run folder.

    Writes OUT/config.yaml (every resolved option), OUT/checkpoints/latest.pt and epoch_N.pt,
    OUT/metrics.csv, OUT/samples/step_N.png and OUT/train_tiles.json (the tiles drawn).
    Options come from the defaults, the --preset
    (authors: the authors' code, default; paper: the paper's text), then --config, then the
    command line. A manifest with a split column trains on its train tiles only. Ctrl-C stops
    after the current step with a checkpoint; --resume continues. Started by torchrun
    (`torchrun --nproc_per_node N -m histolib_train train ...`), every process trains one rank
    of a DistributedDataParallel run and rank 0 writes the run folder.
    """
    values = given_values(TrainConfig, locals(), not_given=True)
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
