"""Training the region-guided CycleGAN (``--model roi``) and the CycleGAN baselines.

:class:`CycleGANTrainer` holds the networks, optimisers, schedulers and replay buffers and
does one training step on a pair of batches; :func:`train` runs a whole training into a run
folder (data, DataLoader, progress, metrics, samples, checkpoints, resume)::

    RUN_DIR/config.yaml              resolved configuration
    RUN_DIR/checkpoints/latest.pt    after every epoch (and on a stop: time budget, Ctrl-C)
    RUN_DIR/checkpoints/epoch_N.pt   every --checkpoint-every epochs and after the last
    RUN_DIR/metrics.csv              every loss every --log-every steps
    RUN_DIR/samples/step_N.png       every --sample-every steps and at the end

One step, in the authors' order: generators (LSGAN + lambda_roi RoI + lambda_cyc cycle +
lambda_id identity), then the H&E and IHC image discriminators (fakes from a replay buffer),
then the two RoI discriminators (current fakes, judged with the boxes and class map of the
tile they were translated from).

The conditional CycleGAN baselines (``--model ccgan`` and ``ccgan-plain``, Xu et al. 2019;
:mod:`histolib_train.models.conditional`) give each generator the tile's category as extra input
channels, add a classifier network per domain (trained last in each step, on real tiles) and
the generator losses lambda_cls cycle-classification (+ lambda_ssim structural and
lambda_photo photo-realism for ``ccgan``).
"""

from __future__ import annotations

import contextlib
import csv
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histolib.errors import ConfigError, HistolibError
from histolib_train.checkpoint import (
    CHECKPOINT_DIR,
    FORMAT,
    FORMAT_VERSION,
    LATEST,
    epoch_checkpoint_name,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from histolib_train.models import conditional as cond
from histolib_train.models.losses import ReplayBuffer, discriminator_loss, l1_loss, lsgan_loss
from histolib_train.models.networks import PatchDiscriminator, ResnetGenerator, RoIDiscriminator
from histolib_train.training.config import TrainConfig, write_config

METRIC_COLUMNS = (
    "step",
    "epoch",
    "lr",
    "loss_G",
    "G_gan",
    "G_roi",
    "cycle",
    "identity",
    "D_he",
    "D_ihc",
    "D_roi_he",
    "D_roi_ihc",
    "elapsed_s",
)
LOSS_NAMES = METRIC_COLUMNS[3:12]
CONDITIONAL_LOSS_NAMES = ("G_cls", "ssim", "photo", "C_he", "C_ihc")
# Options whose change would make a resumed run a different experiment.
STRICT_RESUME_KEYS = (
    "model",
    "patch",
    "steps_per_epoch",
    "batch_size",
    "n_blocks",
    "ngf",
    "ndf",
    "upsample",
    "boxes_per_tile",
    "lambda_cyc",
    "lambda_id",
    "lambda_roi",
    "lambda_cls",
    "lambda_ssim",
    "lambda_photo",
    "lr",
    "beta1",
    "beta2",
    "buffer_size",
    "flip",
    "seed",
)


class TrainingError(HistolibError):
    """Training stopped: a loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :func:`train` did.

    ``stopped`` is ``"finished"``, ``"time budget"`` or ``"interrupted"``; ``checkpoint`` is
    the last checkpoint written (``None`` when the run was already finished).
    """

    run_dir: Path
    step: int
    epoch: int
    total_steps: int
    stopped: str
    checkpoint: Path | None
    last_losses: dict[str, float]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU.

    Raises
    ------
    ConfigError
        When ``cuda`` is asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def metric_columns(model: str) -> tuple[str, ...]:
    """Columns of ``metrics.csv`` for ``model`` (the conditional models log five more)."""
    if cond.is_conditional(model):
        return (*METRIC_COLUMNS[:-1], *CONDITIONAL_LOSS_NAMES, METRIC_COLUMNS[-1])
    return METRIC_COLUMNS


def lr_factor(step: int, total_steps: int) -> float:
    """Learning-rate factor: 1 over the first half, then linearly down to 0 at the end."""
    half = total_steps // 2
    if step < half:
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - half))


def _set_requires_grad(nets: list[torch.nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class CycleGANTrainer:
    """Networks, optimisers, schedulers and replay buffers of one run; one step at a time.

    Parameters
    ----------
    cfg
        Resolved configuration (model, sizes, loss weights, optimiser).
    device
        Where the networks live.
    total_steps
        Steps of the whole run (for the learning-rate decay); read through
        :attr:`total_steps`, which may be changed (e.g. more epochs on resume).
    amp
        Mixed precision on CUDA: bfloat16 autocast where the GPU supports it, else float16
        with loss scaling. Ignored on the CPU.
    channels_last
        Use the channels-last memory format (CUDA).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        device: torch.device,
        total_steps: int,
        amp: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.total_steps = total_steps
        self.roi = cfg.model == "roi"
        self.conditional = cond.is_conditional(cfg.model)
        self.structural = cfg.model in cond.STRUCTURAL_MODELS
        cuda = device.type == "cuda"
        self.amp = bool(amp and cuda)
        self.amp_dtype = (
            torch.bfloat16
            if self.amp and torch.cuda.is_bf16_supported()
            else (torch.float16 if self.amp else None)
        )
        self.channels_last = cuda if channels_last is None else channels_last
        torch.manual_seed(cfg.seed)
        g_in = 3 + (cond.N_CONDITIONS if self.conditional else 0)
        nets: dict[str, torch.nn.Module] = {
            "G_he2ihc": ResnetGenerator(cfg.n_blocks, cfg.ngf, cfg.upsample, in_channels=g_in),
            "G_ihc2he": ResnetGenerator(cfg.n_blocks, cfg.ngf, cfg.upsample, in_channels=g_in),
            "D_he": PatchDiscriminator(grid=cfg.patch, ndf=cfg.ndf),
            "D_ihc": PatchDiscriminator(grid=cfg.patch, ndf=cfg.ndf),
        }
        if self.roi:
            nets["D_roi_he"] = RoIDiscriminator(ndf=cfg.ndf)
            nets["D_roi_ihc"] = RoIDiscriminator(ndf=cfg.ndf)
        if self.conditional:
            nets["C_he"] = cond.TileClassifier(ndf=cfg.ndf)
            nets["C_ihc"] = cond.TileClassifier(ndf=cfg.ndf)
        for net in nets.values():
            net.to(device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
            net.train()
        self.nets = nets
        betas = (cfg.beta1, cfg.beta2)
        g_params = list(nets["G_he2ihc"].parameters()) + list(nets["G_ihc2he"].parameters())
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "G": torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
        }
        for name in nets:
            if name.startswith(("D_", "C_")):
                self.optimizers[name] = torch.optim.Adam(
                    nets[name].parameters(), lr=cfg.lr, betas=betas
                )
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda)
            for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.buffers = {
            "he": ReplayBuffer(cfg.buffer_size, seed=cfg.seed * 2 + 1),
            "ihc": ReplayBuffer(cfg.buffer_size, seed=cfg.seed * 2 + 2),
        }

    def _lr_lambda(self, step: int) -> float:
        return lr_factor(step, self.total_steps)

    def autocast(self) -> Any:
        """The autocast context of this trainer (a no-op without AMP)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in batch.items():
            value = value.to(self.device, non_blocking=True)
            if self.channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    @property
    def lr(self) -> float:
        """Current generator learning rate."""
        return float(self.optimizers["G"].param_groups[0]["lr"])

    def train_step(
        self, he: dict[str, torch.Tensor], ihc: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One optimisation step of every network on an H&E and an IHC batch.

        The batches are :func:`histolib_train.data.batches.sample_batch` dicts (``image``,
        ``class_map``, ``boxes``). Returns the losses (detached scalar tensors; the RoI ones
        only for the RoI model).
        """
        cfg, nets, opt = self.cfg, self.nets, self.optimizers
        a, b = self._to_device(he), self._to_device(ihc)
        real_a, real_b = a["image"], b["image"]
        g_ab, g_ba = nets["G_he2ihc"], nets["G_ihc2he"]
        discs = [net for name, net in nets.items() if name.startswith(("D_", "C_"))]
        scaler = self.scaler
        if self.conditional:
            label_a, label_b = a["label"], b["label"]

            def gen(net: torch.nn.Module, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
                return net(cond.with_condition(x, label))

        else:
            label_a = label_b = None

            def gen(net: torch.nn.Module, x: torch.Tensor, label: Any) -> torch.Tensor:
                return net(x)

        # Generators (the conditional ones keep the source tile's category all along).
        _set_requires_grad(discs, False)
        opt["G"].zero_grad(set_to_none=True)
        with self.autocast():
            fake_b = gen(g_ab, real_a, label_a)
            fake_a = gen(g_ba, real_b, label_b)
            rec_a = gen(g_ba, fake_b, label_a)
            rec_b = gen(g_ab, fake_a, label_b)
            idt_a = gen(g_ba, real_a, label_a)
            idt_b = gen(g_ab, real_b, label_b)
            score_fake_b = nets["D_ihc"](fake_b)
            score_fake_a = nets["D_he"](fake_a)
            if self.roi:
                roi_fake_a = nets["D_roi_he"](fake_a, b["class_map"], b["boxes"])
                roi_fake_b = nets["D_roi_ihc"](fake_b, a["class_map"], a["boxes"])
            if self.conditional:
                cls_fake_b = nets["C_ihc"](fake_b)
                cls_fake_a = nets["C_he"](fake_a)
        losses: dict[str, torch.Tensor] = {}
        losses["G_gan"] = (lsgan_loss(score_fake_b, 1.0) + lsgan_loss(score_fake_a, 1.0)) / 2
        losses["cycle"] = (l1_loss(rec_a, real_a) + l1_loss(rec_b, real_b)) / 2
        losses["identity"] = (l1_loss(idt_a, real_a) + l1_loss(idt_b, real_b)) / 2
        loss_g = (
            losses["G_gan"] + cfg.lambda_cyc * losses["cycle"] + cfg.lambda_id * losses["identity"]
        )
        if self.roi:
            losses["G_roi"] = (lsgan_loss(roi_fake_a, 1.0) + lsgan_loss(roi_fake_b, 1.0)) / 2
            loss_g = loss_g + cfg.lambda_roi * losses["G_roi"]
        if self.conditional:
            losses["G_cls"] = (
                cond.classification_loss(cls_fake_b, label_a)
                + cond.classification_loss(cls_fake_a, label_b)
            ) / 2
            loss_g = loss_g + cfg.lambda_cls * losses["G_cls"]
        if self.structural:
            losses["ssim"] = (
                cond.structural_loss(real_a, fake_b) + cond.structural_loss(real_b, fake_a)
            ) / 2
            losses["photo"] = (
                cond.photorealism_loss(real_a, fake_b) + cond.photorealism_loss(real_b, fake_a)
            ) / 2
            loss_g = loss_g + cfg.lambda_ssim * losses["ssim"] + cfg.lambda_photo * losses["photo"]
        losses["loss_G"] = loss_g
        scaler.scale(loss_g).backward()
        scaler.step(opt["G"])
        _set_requires_grad(discs, True)

        # Image discriminators, fakes from the replay buffers.
        fake_a, fake_b = fake_a.detach(), fake_b.detach()
        for domain, real, fake in (("he", real_a, fake_a), ("ihc", real_b, fake_b)):
            name = f"D_{domain}"
            opt[name].zero_grad(set_to_none=True)
            replay = self.buffers[domain].push_and_pop(fake)
            with self.autocast():
                loss = discriminator_loss(nets[name](real), nets[name](replay))
            scaler.scale(loss).backward()
            scaler.step(opt[name])
            losses[name] = loss

        # RoI discriminators: real tiles with their boxes, current fakes with their source's.
        if self.roi:
            for domain, own, real, fake, source in (
                ("he", a, real_a, fake_a, b),
                ("ihc", b, real_b, fake_b, a),
            ):
                name = f"D_roi_{domain}"
                opt[name].zero_grad(set_to_none=True)
                with self.autocast():
                    loss = discriminator_loss(
                        nets[name](real, own["class_map"], own["boxes"]),
                        nets[name](fake, source["class_map"], source["boxes"]),
                    )
                scaler.scale(loss).backward()
                scaler.step(opt[name])
                losses[name] = loss

        # Classifiers: the category of real tiles.
        if self.conditional:
            for domain, real, label in (("he", real_a, label_a), ("ihc", real_b, label_b)):
                name = f"C_{domain}"
                opt[name].zero_grad(set_to_none=True)
                with self.autocast():
                    loss = cond.classification_loss(nets[name](real), label)
                scaler.scale(loss).backward()
                scaler.step(opt[name])
                losses[name] = loss
        scaler.update()
        for sched in self.schedulers.values():
            sched.step()
        return {k: v.detach() for k, v in losses.items()}

    def state_dict(self) -> dict[str, Any]:
        """Nets, optimisers, schedulers, scaler, replay buffers and RNG states."""
        rng = rng_state(cuda=self.device.type == "cuda")
        replay = {}
        for domain, buf in self.buffers.items():
            state = buf.state_dict()
            replay[domain] = state["images"]
            rng[f"replay_{domain}"] = state["generator"]
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "replay": replay,
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the networks must have the same shapes)."""
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
            # The run may have been given more epochs: re-derive the current rate.
            for group, base in zip(self.optimizers[name].param_groups, sched.base_lrs, strict=True):
                group["lr"] = base * self._lr_lambda(sched.last_epoch)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for domain, buf in self.buffers.items():
            buf.load_state_dict(
                {"images": state["replay"][domain], "generator": state["rng"][f"replay_{domain}"]},
                device=self.device,
            )
        set_rng_state(state["rng"])


# ---------------------------------------------------------------------------------------
# Whole runs.


def _default_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message)


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


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    current = cfg.to_dict()
    differ = [k for k in STRICT_RESUME_KEYS if k in saved and saved[k] != current[k]]
    if differ:
        detail = ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in differ)
        raise ConfigError(
            f"--resume with options that differ from the interrupted run ({detail}); "
            "drop them or start a new run folder",
            path=path,
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows after ``step`` (written after the checkpoint that is being resumed)."""
    from histolib.core.atomic import write_text

    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    lines = [",".join(r) for r in kept]
    write_text(path, "\n".join(lines) + "\n")


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


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


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
    from histolib.core.atomic import ensure_writable_dir
    from histolib_train.data.batches import (
        PURPOSE_SAMPLES,
        PairedBatches,
        load_tiles,
        make_loader,
        sample_batch,
        split_groups,
    )
    from histolib_train.training.samples import render_samples, write_sheet

    log = log or _default_log
    for name in ("he", "ihc", "out"):
        if not getattr(cfg, name):
            raise ConfigError(f"option --{name} is required")
    if cfg.model == "roi" and not (cfg.he_library and cfg.ihc_library):
        raise ConfigError("--model roi needs --he-library and --ihc-library (the cell boxes)")
    if cond.is_conditional(cfg.model) and not (cfg.he_library and cfg.ihc_library):
        raise ConfigError(
            f"--model {cfg.model} needs --he-library and --ihc-library (the tile conditions: "
            "tiles with cancer boxes or without)"
        )
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.amp and device.type != "cuda":
        log("note: --amp applies to CUDA only; training in float32 on the CPU")

    he = load_tiles(cfg.he, domain="he", library=cfg.he_library, mpp=cfg.mpp)
    ihc = load_tiles(cfg.ihc, domain="ihc", library=cfg.ihc_library, mpp=cfg.mpp)
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
        pos, neg = split_groups(tiles, require_boxes=cfg.model == "roi")
        if tiles.has_library and (not len(pos) or not len(neg)):
            missing = "with" if not len(pos) else "without"
            log(
                f"warning: no {tiles.domain.upper()} tile {missing} cancer boxes; "
                "batches draw from the other tiles only"
            )

    run_dir = ensure_writable_dir(cfg.out)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    latest = ckpt_dir / LATEST
    resume_state = None
    if latest.is_file():
        if not cfg.resume:
            raise ConfigError(
                "run folder already holds a training run; pass --resume to continue it or "
                "choose another --out",
                path=run_dir,
            )
        resume_state = load_checkpoint(latest)
        _check_resume_config(resume_state["config"], cfg, latest)
    elif cfg.resume:
        log(f"no checkpoint in {run_dir} yet; starting a new run")

    total = cfg.total_steps
    start = 0 if resume_state is None else int(resume_state["step"])
    if start >= total:
        log(f"run already finished ({start} steps done, {total} asked for); nothing to do")
        return TrainResult(
            run_dir, start, start // cfg.steps_per_epoch, total, "finished", None, {}
        )
    trainer = CycleGANTrainer(cfg, device=device, total_steps=total, amp=cfg.amp)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        log(f"resuming {run_dir} at step {start} (epoch {start // cfg.steps_per_epoch})")
    write_config(cfg, run_dir / "config.yaml")
    metrics_path = run_dir / "metrics.csv"
    _truncate_metrics(metrics_path, start)
    columns = metric_columns(cfg.model)
    loss_names = columns[3:-1]
    if not metrics_path.is_file() or metrics_path.stat().st_size == 0:
        metrics_path.write_text(",".join(columns) + "\n", encoding="utf-8")

    def checkpoint(step: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": cfg.model,
            "config": cfg.to_dict(),
            "step": step,
            "epoch": step // cfg.steps_per_epoch,
            **trainer.state_dict(),
        }

    sample_n = min(4, cfg.batch_size)
    sample_batches = {
        t.domain: sample_batch(
            t,
            step=0,
            seed=cfg.seed,
            batch_size=sample_n,
            boxes_per_tile=cfg.boxes_per_tile,
            flip=False,
            purpose=PURPOSE_SAMPLES,
        )
        for t in (he, ihc)
    }

    sample_nets = trainer.nets
    if cond.is_conditional(cfg.model):
        # The sheets show what inference does (by default each tile conditioned on the
        # category that the classifier of its domain predicts).
        sample_nets = {
            **trainer.nets,
            "G_he2ihc": cond.ConditionalGenerator(
                trainer.nets["G_he2ihc"],
                classifier=trainer.nets["C_he"],
                condition=cfg.ccgan_condition,
            ),
            "G_ihc2he": cond.ConditionalGenerator(
                trainer.nets["G_ihc2he"],
                classifier=trainer.nets["C_ihc"],
                condition=cfg.ccgan_condition,
            ),
        }

    def write_samples(step: int) -> None:
        sheet = render_samples(
            sample_nets, sample_batches, device=device, autocast=trainer.autocast
        )
        write_sheet(sheet, run_dir / "samples" / f"step_{step}.png")

    batches = PairedBatches(
        he,
        ihc,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        boxes_per_tile=cfg.boxes_per_tile,
        flip=cfg.flip,
    )
    loader = make_loader(
        batches, start=start, stop=total, workers=cfg.workers, pin_memory=device.type == "cuda"
    )
    t0 = time.monotonic()
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    last_ckpt: Path | None = None
    last_losses: dict[str, float] = {}
    step = start
    stopped = "finished"
    from histolib.core.progress import make_progress

    with (
        _graceful_interrupt() as interrupt,
        make_progress(disable=not show_progress) as progress,
        metrics_path.open("a", newline="", encoding="utf-8") as metrics_fh,
    ):
        task = progress.add_task(
            f"epoch {step // cfg.steps_per_epoch + 1}/{cfg.epochs}", total=total, completed=start
        )
        writer = csv.writer(metrics_fh)
        iterator = iter(loader)
        while step < total:
            try:
                pair = next(iterator)
            except HistolibError as exc:  # a bad tile, read in a DataLoader worker
                raise _unwrap_worker_error(exc) from None
            except RuntimeError:
                if interrupt["stop"]:  # DataLoader workers died of the same Ctrl-C
                    break
                raise
            lr = trainer.lr
            losses = trainer.train_step(pair["he"], pair["ihc"])
            names = list(losses)
            values = torch.stack([losses[n].float() for n in names]).tolist()
            last_losses = dict(zip(names, values, strict=True))
            bad = [n for n, v in last_losses.items() if not math.isfinite(v)]
            if bad:
                kept = (
                    f"the last good checkpoint {last_ckpt or latest} is kept"
                    if (last_ckpt or latest.is_file())
                    else "no checkpoint had been written yet"
                )
                raise TrainingError(
                    f"loss {bad[0]} became {last_losses[bad[0]]} at step {step + 1} "
                    f"(epoch {step // cfg.steps_per_epoch + 1}); training stopped and {kept}. "
                    "Try a lower --lr or training without --amp",
                    path=run_dir,
                )
            step += 1
            epoch_done, in_epoch = divmod(step, cfg.steps_per_epoch)
            if step % cfg.log_every == 0 or step == total:
                row = [str(step), str(epoch_done if in_epoch == 0 else epoch_done + 1), _fmt(lr)]
                row += [_fmt(last_losses.get(n)) for n in loss_names]
                row.append(f"{time.monotonic() - t0:.3f}")
                writer.writerow(row)
                metrics_fh.flush()
            summary = " ".join(
                f"{k} {last_losses[k]:.3f}"
                for k in ("loss_G", "D_he", "D_ihc", "D_roi_he", "D_roi_ihc")
                if k in last_losses
            )
            progress.update(
                task,
                advance=1,
                description=f"epoch {min(epoch_done + 1, cfg.epochs)}/{cfg.epochs} {summary}",
            )
            if step % cfg.sample_every == 0 or step == total:
                write_samples(step)
            if in_epoch == 0:
                state = checkpoint(step)
                last_ckpt = save_checkpoint(state, latest)
                if epoch_done % cfg.checkpoint_every == 0 or epoch_done == cfg.epochs:
                    save_checkpoint(state, ckpt_dir / epoch_checkpoint_name(epoch_done))
            if step < total and interrupt["stop"]:
                stopped = "interrupted"
                break
            if step < total and budget is not None and time.monotonic() - t0 > budget:
                stopped = "time budget"
                break
        del iterator
    if stopped != "finished" and step % cfg.steps_per_epoch:
        last_ckpt = save_checkpoint(checkpoint(step), latest)
    if stopped == "time budget" and step % cfg.sample_every:
        write_samples(step)  # the samples "at the end" of a run cut by its time budget
    if stopped == "interrupted":
        log(f"interrupted at step {step}; {latest} saved, --resume continues")
        raise KeyboardInterrupt
    if stopped == "time budget":
        log(f"time budget reached at step {step} of {total}; --resume continues from {latest}")
    return TrainResult(
        run_dir=run_dir,
        step=step,
        epoch=step // cfg.steps_per_epoch,
        total_steps=total,
        stopped=stopped,
        checkpoint=last_ckpt,
        last_losses=last_losses,
    )
