"""A whole training run: :func:`train`.

Build the data, the run folder (:mod:`histolib_train.training.run_folder`) and the trainer
(:class:`histolib_train.training.trainer.CycleGANTrainer`), resume from the latest checkpoint,
then for each step: set the input, optimise, log the losses, write samples and checkpoints on
their schedule, and stop when the steps are done, the time budget is spent or Ctrl-C asks.
Started by ``torchrun``, every process runs this loop as one rank of a DistributedDataParallel
run (:mod:`histolib_train.training.distributed`); rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from histolib.errors import ConfigError, HistolibError
from histolib_train.models import conditional as cond
from histolib_train.training.config import ROI_MODELS, TrainConfig
from histolib_train.training.distributed import Ranks, session
from histolib_train.training.run_folder import RunFolder, metric_columns
from histolib_train.training.trainer import CycleGANTrainer


class TrainingError(HistolibError):
    """Training stopped: a loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :func:`train` did.

    ``stopped`` is ``"finished"``, ``"time budget"`` or ``"interrupted"``; ``checkpoint`` is
    the last checkpoint written (``None`` when the run was already finished, and on ranks
    other than 0 of a distributed run, which write nothing); ``rank`` is this process's rank.
    """

    run_dir: Path
    step: int
    epoch: int
    total_steps: int
    stopped: str
    checkpoint: Path | None
    last_losses: dict[str, float] = field(default_factory=dict)
    rank: int = 0


def _default_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[dict[str, bool]]:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _unwrap_worker_error(exc: HistolibError) -> HistolibError:
    """A worker's error re-raised by the DataLoader carries the worker traceback: keep the
    original one-line message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    message = last[len(prefix) :] if last.startswith(prefix) else last
    return type(exc)(message)


# ---------------------------------------------------------------------------------------
# Set-up: options, device, data


def _check_options(cfg: TrainConfig) -> None:
    for name in ("he", "ihc", "out"):
        if not getattr(cfg, name):
            raise ConfigError(f"option --{name} is required")
    if cfg.model in ROI_MODELS and not (cfg.he_library and cfg.ihc_library):
        raise ConfigError(
            f"--model {cfg.model} needs --he-library and --ihc-library (the cell boxes)"
        )
    if cond.is_conditional(cfg.model) and not (cfg.he_library and cfg.ihc_library):
        raise ConfigError(
            f"--model {cfg.model} needs --he-library and --ihc-library (the tile conditions: "
            "tiles with cancer boxes or without)"
        )


def _device(cfg: TrainConfig, log: Callable[[str], None]) -> torch.device:
    from histolib_train.device import resolve_device
    from histolib_train.precision import set_tf32

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        set_tf32(device, allow=cfg.tf32)
        log(f"TF32 {'on (--tf32)' if cfg.tf32 else 'off: float32 runs in float32'}")
    if cfg.amp and device.type != "cuda" and cfg.amp_dtype == "auto":
        log("note: --amp applies to CUDA only; training in float32 on the CPU")
    return device


def _load_data(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[Any, Any]:
    """The H&E and IHC tile sets (a manifest's ``train`` part when it has a ``split`` column);
    fills in ``cfg.tile_size`` and ``cfg.mpp`` from them."""
    from histolib_train.training.batches import load_tiles, split_groups

    he = load_tiles(cfg.he, domain="he", library=cfg.he_library, mpp=cfg.mpp, part="train")
    ihc = load_tiles(cfg.ihc, domain="ihc", library=cfg.ihc_library, mpp=cfg.mpp, part="train")
    if he.tile_size != ihc.tile_size:
        raise ConfigError(
            f"H&E tiles are {he.tile_size} px but IHC tiles {ihc.tile_size} px; use one size"
        )
    if he.tile_size % 16:
        raise ConfigError(f"tile size {he.tile_size} px must be a multiple of 16")
    if cfg.tile_size is not None and cfg.tile_size != he.tile_size:
        raise ConfigError(f"tile_size {cfg.tile_size} given but the tiles are {he.tile_size} px")
    if he.mpp is not None and ihc.mpp is not None and abs(he.mpp - ihc.mpp) > 1e-6:
        log(f"warning: H&E tiles at {he.mpp} um/px, IHC at {ihc.mpp} um/px")
    cfg.tile_size = he.tile_size
    if cfg.mpp is None:
        cfg.mpp = he.mpp
    for tiles in (he, ihc):
        required = requires_boxes(cfg) and tiles.has_library
        pos, neg = split_groups(tiles, require_boxes=required)
        if tiles.has_library and (not len(pos) or not len(neg)):
            missing = "with" if not len(pos) else "without"
            log(
                f"warning: no {tiles.domain.upper()} tile {missing} cancer boxes; "
                "batches draw from the other tiles only"
            )
    return he, ihc


def requires_boxes(cfg: TrainConfig) -> bool:
    """Whether batches draw only tiles with at least one cell box: always for the RoI models,
    and for the others unless ``--include-empty-tiles`` (the authors' ``data_generator``
    skips tiles without boxes for every model)."""
    return cfg.model in ROI_MODELS or not cfg.include_empty_tiles


def _warn_unsplit(he: Any, ihc: Any, log: Callable[[str], None]) -> None:
    """One loud line when a source has no ``split`` column: every tile is trained on."""
    unsplit = [str(t.source) for t in (he, ihc) if t.split is None]
    if unsplit:
        log(
            f"WARNING: {' and '.join(unsplit)} ha{'ve' if len(unsplit) > 1 else 's'} no split "
            "column: training uses every tile, so none is held out for evaluation (run "
            "`histolib split` first); train_tiles.json records used_every_tile"
        )


def _make_loader(
    cfg: TrainConfig, he: Any, ihc: Any, *, start: int, device: torch.device, rank: int = 0
) -> Any:
    from histolib_train.training.batches import PairedBatches, make_loader

    batches = PairedBatches(
        he,
        ihc,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        boxes_per_tile=cfg.boxes_per_tile,
        flip=cfg.flip,
        flip_rule=cfg.flip_rule,
        roi_sampling=cfg.roi_sampling,
        rank=rank,
    )
    return make_loader(
        batches,
        start=start,
        stop=cfg.total_steps,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )


def _sample_writer(
    trainer: CycleGANTrainer, he: Any, ihc: Any, run: RunFolder, *, main: bool = True
) -> Callable[[int], None]:
    """``write(step)``: the sample sheet of a few fixed tiles of each domain at ``step``
    (nothing on ranks other than 0)."""
    from histolib_train.training.batches import PURPOSE_SAMPLES, sample_batch, to_device
    from histolib_train.training.samples import render_samples, write_sheet

    if not main:
        return lambda step: None
    cfg = trainer.cfg
    raw = {
        t.domain: sample_batch(
            t,
            step=0,
            seed=cfg.seed,
            batch_size=min(4, cfg.batch_size),
            boxes_per_tile=cfg.boxes_per_tile,
            flip=False,
            purpose=PURPOSE_SAMPLES,
            roi_sampling=cfg.roi_sampling,
        )
        for t in (he, ihc)
    }
    batches = {domain: to_device(batch, "cpu") for domain, batch in raw.items()}
    nets = trainer.inference_generators()

    def write(step: int) -> None:
        sheet = render_samples(nets, batches, device=trainer.device, autocast=trainer.autocast)
        write_sheet(sheet, run.sample_path(step))

    return write


# ---------------------------------------------------------------------------------------
# The loop


@dataclass
class _Progress:
    """Where the loop is: steps done, why it stopped, the last checkpoint and losses."""

    step: int
    stopped: str = "finished"
    checkpoint: Path | None = None
    losses: dict[str, float] = field(default_factory=dict)


def _record_losses(
    losses: dict[str, torch.Tensor], state: _Progress, *, run: RunFolder, steps_per_epoch: int
) -> None:
    """Record the step's losses in ``state``; a NaN or infinite one stops the run.

    Raises
    ------
    TrainingError
        Naming the loss, the step and the checkpoint that is kept.
    """
    names = list(losses)
    values = torch.stack([losses[n].float() for n in names]).tolist()
    state.losses = dict(zip(names, values, strict=True))
    bad = [n for n, v in state.losses.items() if not math.isfinite(v)]
    if not bad:
        return
    kept = (
        f"the last good checkpoint {state.checkpoint or run.latest} is kept"
        if (state.checkpoint or run.latest.is_file())
        else "no checkpoint had been written yet"
    )
    raise TrainingError(
        f"loss {bad[0]} became {state.losses[bad[0]]} at step {state.step + 1} "
        f"(epoch {state.step // steps_per_epoch + 1}); training stopped and {kept}. "
        "Try a lower --lr or training without --amp",
        path=run.path,
    )


def _next_pair(iterator: Iterator[Any], interrupt: dict[str, bool]) -> Any:
    """The next pair of batches; ``None`` when Ctrl-C killed the DataLoader workers."""
    try:
        return next(iterator)
    except HistolibError as exc:  # a bad tile, read in a DataLoader worker
        raise _unwrap_worker_error(exc) from None
    except RuntimeError:
        if interrupt["stop"]:  # DataLoader workers died of the same Ctrl-C
            return None
        raise


def _progress_text(cfg: TrainConfig, epoch: int, losses: dict[str, float]) -> str:
    summary = " ".join(
        f"{k} {losses[k]:.3f}"
        for k in ("loss_G", "D_he", "D_ihc", "D_roi_he", "D_roi_ihc")
        if k in losses
    )
    return f"epoch {min(epoch, cfg.epochs)}/{cfg.epochs} {summary}"


class _NoMetrics:
    """The metrics log of ranks other than 0: writes nothing."""

    def write(self, **_row: Any) -> None:
        """Drop the row."""


def _metrics_log(run: RunFolder, cfg: TrainConfig, ranks: Ranks) -> Any:
    if not ranks.is_main:
        return contextlib.nullcontext(_NoMetrics())
    return run.metrics_log(metric_columns(cfg.model))


def roi_counts(pair: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The RoIs of a step's H&E and IHC batches by class (``rois_cancer``, ``rois_normal``)."""
    labels = torch.cat([torch.as_tensor(pair[d]["box_labels"]) for d in ("he", "ihc")])
    cancer = int((labels == 1).sum())
    return {"rois_cancer": cancer, "rois_normal": len(labels) - cancer}


def _stop_reason(interrupt: dict[str, bool], t0: float, budget: float | None) -> str:
    """Why this process would stop after the current step (``""``: it would go on)."""
    if interrupt["stop"]:
        return "interrupted"
    if budget is not None and time.monotonic() - t0 > budget:
        return "time budget"
    return ""


def _run_steps(
    trainer: CycleGANTrainer,
    loader: Any,
    *,
    run: RunFolder,
    write_samples: Callable[[int], None],
    start: int,
    show_progress: bool,
    ranks: Ranks,
) -> _Progress:
    """Train from step ``start`` until the end, the time budget or Ctrl-C."""
    from histolib.core.progress import make_progress

    cfg, total = trainer.cfg, trainer.total_steps
    state = _Progress(step=start)
    t0 = time.monotonic()
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    with (
        _graceful_interrupt() as interrupt,
        make_progress(disable=not show_progress) as progress,
        _metrics_log(run, cfg, ranks) as metrics,
    ):
        task = progress.add_task(
            f"epoch {start // cfg.steps_per_epoch + 1}/{cfg.epochs}", total=total, completed=start
        )
        iterator = iter(loader)
        while state.step < total:
            pair = _next_pair(iterator, interrupt)
            if pair is None:  # the DataLoader workers died of the Ctrl-C
                state.stopped = "interrupted"
                break
            lr, counts = trainer.lr, roi_counts(pair)
            trainer.set_input(pair["he"], pair["ihc"])
            losses = ranks.mean_losses(trainer.optimize_parameters())
            _record_losses(losses, state, run=run, steps_per_epoch=cfg.steps_per_epoch)
            state.step = step = state.step + 1
            epoch_done, in_epoch = divmod(step, cfg.steps_per_epoch)
            epoch = epoch_done if in_epoch == 0 else epoch_done + 1
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.monotonic() - t0
                metrics.write(
                    step=step,
                    epoch=epoch,
                    lr=lr,
                    losses=state.losses,
                    elapsed=elapsed,
                    counts=counts,
                )
            text = _progress_text(cfg, epoch_done + 1, state.losses)
            progress.update(task, advance=1, description=text)
            if step % cfg.sample_every == 0 or step == total:
                write_samples(step)
            if in_epoch == 0:
                checkpoint = ranks.checkpoint(trainer, step)
                if checkpoint is not None:
                    state.checkpoint = run.save_epoch(checkpoint, epoch=epoch_done, cfg=cfg)
            if step < total:
                stop = ranks.agree(_stop_reason(interrupt, t0, budget))
                if stop:
                    state.stopped = stop
                    break
        del iterator
    return state


def _finish(
    trainer: CycleGANTrainer,
    state: _Progress,
    *,
    run: RunFolder,
    write_samples: Callable[[int], None],
    log: Callable[[str], None],
    ranks: Ranks,
) -> None:
    """After a stop within an epoch: ``latest.pt``, the closing samples, the note."""
    cfg, step = trainer.cfg, state.step
    if state.stopped != "finished" and step % cfg.steps_per_epoch:
        checkpoint = ranks.checkpoint(trainer, step)
        if checkpoint is not None:
            state.checkpoint = run.save_latest(checkpoint)
    if state.stopped == "time budget" and step % cfg.sample_every:
        write_samples(step)  # the samples "at the end" of a run cut by its time budget
    if state.stopped == "interrupted":
        log(f"interrupted at step {step}; {run.latest} saved, --resume continues")
        raise KeyboardInterrupt
    if state.stopped == "time budget":
        log(
            f"time budget reached at step {step} of {trainer.total_steps}; "
            f"--resume continues from {run.latest}"
        )


def train(
    cfg: TrainConfig,
    *,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a model into ``cfg.out`` (or continue it with ``cfg.resume``).

    Parameters
    ----------
    cfg
        Resolved configuration (:func:`histolib_train.training.config.resolve_config`).
    show_progress
        Draw a Rich progress bar with the current losses on stderr.
    log
        Where one-line notes go (default: stderr).

    Started by ``torchrun`` (``RANK``, ``WORLD_SIZE``... set), each process trains one rank of
    a DistributedDataParallel run (:mod:`histolib_train.training.distributed`).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Missing inputs, an existing run without ``--resume``, options that differ on resume.
    TrainingError
        A loss became NaN or infinite (the last good checkpoint is kept).
    ManifestError, ImageError, CheckpointError
        Bad inputs or checkpoint.
    """
    _check_options(cfg)
    with session(cfg.device) as ranks:
        return _train_rank(cfg, ranks, show_progress=show_progress, log=log or _default_log)


def _train_rank(
    cfg: TrainConfig, ranks: Ranks, *, show_progress: bool, log: Callable[[str], None]
) -> TrainResult:
    """:func:`train` in this process (one rank of a distributed run, or the only process)."""
    log = ranks.log(log)
    device = ranks.place(_device(cfg, log))
    he, ihc = _load_data(cfg, log)
    run = RunFolder(cfg.out)
    resume_state = run.resume_state(cfg, log=log)
    _warn_unsplit(he, ihc, log)
    total = cfg.total_steps
    start = 0 if resume_state is None else int(resume_state["step"])
    if start >= total:
        log(f"run already finished ({start} steps done, {total} asked for); nothing to do")
        return TrainResult(
            run.path, start, start // cfg.steps_per_epoch, total, "finished", None, rank=ranks.rank
        )
    trainer = CycleGANTrainer(
        cfg,
        device=device,
        total_steps=total,
        amp=cfg.amp,
        amp_dtype=cfg.amp_dtype,
        channels_last=cfg.channels_last,
    )
    if trainer.precision.enabled:
        log(f"precision: {trainer.precision.describe()}")
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        log(f"resuming {run.path} at step {start} (epoch {start // cfg.steps_per_epoch})")
        note = ranks.resume_note(resume_state)
        if note:
            log(note)
    ranks.attach(trainer, resume_state)
    ranks.barrier()  # every rank has read the run folder before rank 0 writes to it
    if ranks.is_main:
        run.write_config(cfg)
        run.write_training_tiles([he, ihc])
        run.start_metrics(metric_columns(cfg.model), step=start)
    write_samples = _sample_writer(trainer, he, ihc, run, main=ranks.is_main)
    loader = _make_loader(cfg, he, ihc, start=start, device=device, rank=ranks.rank)
    state = _run_steps(
        trainer,
        loader,
        run=run,
        write_samples=write_samples,
        start=start,
        show_progress=show_progress and ranks.is_main,
        ranks=ranks,
    )
    _finish(trainer, state, run=run, write_samples=write_samples, log=log, ranks=ranks)
    return TrainResult(
        run_dir=run.path,
        step=state.step,
        epoch=state.step // cfg.steps_per_epoch,
        total_steps=total,
        stopped=state.stopped,
        checkpoint=state.checkpoint,
        last_losses=state.losses,
        rank=ranks.rank,
    )
