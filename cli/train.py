"""``histolib train``: train the region-guided CycleGAN (or a CycleGAN baseline)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, err_console, is_tty, out_console


def train_command(
    he: Path | None = typer.Option(
        None, "--he", help="H&E tiles: a tile manifest (tiles.parquet) or a folder of PNG tiles."
    ),
    ihc: Path | None = typer.Option(
        None, "--ihc", help="IHC tiles: a tile manifest or a folder of PNG tiles."
    ),
    he_library: Path | None = typer.Option(
        None, "--he-library", help="Cell library of the H&E tiles (.parquet or .geojson)."
    ),
    ihc_library: Path | None = typer.Option(
        None, "--ihc-library", help="Cell library of the IHC tiles (.parquet or .geojson)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML file with any of these options (underscores or dashes)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="roi (the paper, default), cyclegan (baseline), ccgan (conditional CycleGAN of "
        "Xu et al. 2019) or ccgan-plain (ccgan without its structural and photo-realism losses).",
    ),
    patch: int | None = typer.Option(
        None, "--patch", help="PatchGAN output grid for 256 px tiles: 8 (default), 16, 32."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default 20)."),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="Steps an epoch (default 200)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Tiles a domain a step (default 8; 2 for ccgan*)."
    ),
    n_blocks: int | None = typer.Option(
        None, "--n-blocks", help="Residual blocks of the generators: 6 (default) or 9."
    ),
    ngf: int | None = typer.Option(None, "--ngf", help="Generator width (default 64)."),
    ndf: int | None = typer.Option(None, "--ndf", help="Discriminator width (default 64)."),
    upsample: str | None = typer.Option(
        None, "--upsample", help="Generator upsampling: nearest (default, + conv) or transpose."
    ),
    boxes_per_tile: int | None = typer.Option(
        None, "--boxes-per-tile", help="Cell boxes sampled a tile (default 8)."
    ),
    lambda_cyc: float | None = typer.Option(
        None, "--lambda-cyc", help="Cycle-loss weight (default 30 for roi, 10 for the others)."
    ),
    lambda_id: float | None = typer.Option(
        None, "--lambda-id", help="Identity-loss weight (default 5)."
    ),
    lambda_roi: float | None = typer.Option(
        None, "--lambda-roi", help="RoI-loss weight (default 1)."
    ),
    lambda_cls: float | None = typer.Option(
        None, "--lambda-cls", help="ccgan*: cycle-classification loss weight (default 1)."
    ),
    lambda_ssim: float | None = typer.Option(
        None, "--lambda-ssim", help="ccgan: structural (1 - SSIM) loss weight (default 1)."
    ),
    lambda_photo: float | None = typer.Option(
        None, "--lambda-photo", help="ccgan: photo-realism loss weight (default 1)."
    ),
    ccgan_condition: str | None = typer.Option(
        None,
        "--ccgan-condition",
        help="ccgan*: condition of a tile at inference: predicted (by the source domain's "
        "classifier, default), positive or negative.",
    ),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default 2e-4)."),
    flip: bool | None = typer.Option(
        None,
        "--flip/--no-flip",
        help="Random horizontal/vertical flips (default on).",
        show_default=False,
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (default: CUDA when present), cpu or cuda."
    ),
    amp: bool | None = typer.Option(
        None,
        "--amp/--no-amp",
        help="Mixed precision (default off): on CUDA bf16 from compute capability 8.0, "
        "else fp16 with loss scaling.",
        show_default=False,
    ),
    amp_dtype: str | None = typer.Option(
        None, "--amp-dtype", help="auto (default), bf16 or fp16 (any device) with --amp."
    ),
    channels_last: bool | None = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Channels-last memory format (default off; see benchmarks/train_step.py).",
        show_default=False,
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default 0)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from checkpoints/latest.pt."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="DataLoader worker processes (0 = in the main process) (default 2).",
    ),
    log_every: int | None = typer.Option(
        None, "--log-every", help="Write the losses to metrics.csv every N steps (default 10)."
    ),
    sample_every: int | None = typer.Option(
        None, "--sample-every", help="Write samples/step_N.png every N steps (default 500)."
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Keep checkpoints/epoch_N.pt every N epochs (default 5)."
    ),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        help="Stop (and checkpoint) after this many minutes; --resume continues.",
    ),
    mpp: float | None = typer.Option(
        None, "--mpp", help="Resolution (um/px) of PNG-folder tiles, recorded in checkpoints."
    ),
) -> None:
    """Train the region-guided CycleGAN (H&E <-> IHC) into a run folder.

    Writes OUT/config.yaml, OUT/checkpoints/latest.pt and epoch_N.pt, OUT/metrics.csv and
    OUT/samples/step_N.png. Options come from the defaults, then --config, then the command
    line. Ctrl-C stops after the current step with a checkpoint; --resume continues. Started
    by torchrun (`torchrun --nproc_per_node N -m histolib_train train ...`), every process
    trains one rank of a DistributedDataParallel run and rank 0 writes the run folder.
    """
    with cli_errors():
        from histolib_train.training.config import config_for_run
        from histolib_train.training.loop import train

        options = {
            "he": he,
            "ihc": ihc,
            "he_library": he_library,
            "ihc_library": ihc_library,
            "out": out,
            "model": model,
            "patch": patch,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "n_blocks": n_blocks,
            "ngf": ngf,
            "ndf": ndf,
            "upsample": upsample,
            "boxes_per_tile": boxes_per_tile,
            "lambda_cyc": lambda_cyc,
            "lambda_id": lambda_id,
            "lambda_roi": lambda_roi,
            "lambda_cls": lambda_cls,
            "lambda_ssim": lambda_ssim,
            "lambda_photo": lambda_photo,
            "ccgan_condition": ccgan_condition,
            "lr": lr,
            "flip": flip,
            "device": device,
            "amp": amp,
            "amp_dtype": amp_dtype,
            "channels_last": channels_last,
            "seed": seed,
            "resume": resume or None,
            "workers": workers,
            "log_every": log_every,
            "sample_every": sample_every,
            "checkpoint_every": checkpoint_every,
            "max_minutes": max_minutes,
            "mpp": mpp,
        }
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        cfg = config_for_run(options, config_file=config)
        console = err_console()
        # Under torchrun only rank 0 writes the run folder, so only it holds the folder's lock.
        writes = cfg.out and os.environ.get("RANK", "0") == "0"
        lock = output_lock(cfg.out, command="train") if writes else contextlib.nullcontext()
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
