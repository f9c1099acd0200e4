"""The region-guided CycleGAN (``--model roi``) and the CycleGAN baselines as one trainer.

:class:`CycleGANTrainer` holds the networks, optimisers, schedulers and replay buffers of one
run, like pytorch-CycleGAN's ``BaseModel``: :meth:`~CycleGANTrainer.set_input` takes a pair of
batches, :meth:`~CycleGANTrainer.optimize_parameters` does one training step,
:meth:`~CycleGANTrainer.state_dict` / :meth:`~CycleGANTrainer.load_state_dict` save and restore
everything a resumed run needs. The run itself (data, run folder, metrics, samples,
checkpoints, stopping) is :func:`histolib_train.training.loop.train`.

One step, in the authors' order: generators (LSGAN + lambda_roi RoI + lambda_cyc cycle +
lambda_id identity), then the H&E and IHC image discriminators (fakes from a replay buffer),
then the two RoI discriminators (current fakes, judged with the boxes and class map of the
tile they were translated from). ``--model roi-only`` (the paper's Appendix A) has the RoI
discriminators alone: no image discriminators, no LSGAN image term.

The learning rate follows :func:`schedule_factor`: the authors' per-epoch ``LambdaLR`` or a
per-step linear decay (``--lr-schedule``); the schedulers are stepped every step with the
factor of that step, so an epoch schedule changes the rate exactly at epoch boundaries.

The conditional CycleGAN baselines (``--model ccgan`` and ``ccgan-plain``, Xu et al. 2019;
:mod:`histolib_train.models.conditional`) give each generator the tile's category as extra input
channels, add a classifier network per domain (trained last in each step, on real tiles) and
the generator losses lambda_cls cycle-classification (+ lambda_ssim structural and
lambda_photo photo-realism for ``ccgan``).
"""

from __future__ import annotations

from typing import Any

import torch

from histolib_train.checkpoint import FORMAT, FORMAT_VERSION, rng_state, set_rng_state
from histolib_train.models import conditional as cond
from histolib_train.models.losses import ReplayBuffer, discriminator_loss, l1_loss, lsgan_loss
from histolib_train.models.networks import PatchDiscriminator, ResnetGenerator, RoIDiscriminator
from histolib_train.precision import amp_precision
from histolib_train.training.batches import to_device
from histolib_train.training.config import ROI_MODELS, TrainConfig

Batch = dict[str, torch.Tensor]


def lr_factor(step: int, total_steps: int, *, decay_start: int | None = None) -> float:
    """Step schedule: factor 1 until step ``decay_start`` (default: half the steps), then
    linearly down to 0 at ``total_steps``."""
    start = total_steps // 2 if decay_start is None else decay_start
    if step < start:
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - start))


def epoch_lr_factor(epoch: int, epochs: int, decay_start: int) -> float:
    """The authors' ``utils.LambdaLR(epochs, 0, decay_start).step(epoch)``: factor
    ``1 - max(0, epoch - decay_start) / (epochs - decay_start)`` in epoch ``epoch`` (from 0);
    1 throughout when the decay would start after the last epoch."""
    if epoch <= decay_start:
        return 1.0
    return max(0.0, 1.0 - (epoch - decay_start) / max(1, epochs - decay_start))


def schedule_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate factor of ``cfg.lr_schedule`` during step ``step`` (from 0) of a run
    of ``total_steps`` steps: ``epoch`` changes once per epoch (the authors'), ``step`` every
    step. ``cfg.lr_decay_start`` None starts the decay after half the epochs (half the steps
    for ``step``)."""
    spe = cfg.steps_per_epoch
    if cfg.lr_schedule == "epoch":
        epochs = max(1, total_steps // spe)
        start = epochs // 2 if cfg.lr_decay_start is None else cfg.lr_decay_start
        return epoch_lr_factor(step // spe, epochs, start)
    start = None if cfg.lr_decay_start is None else cfg.lr_decay_start * spe
    return lr_factor(step, total_steps, decay_start=start)


def _set_requires_grad(nets: list[torch.nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def build_networks(cfg: TrainConfig) -> dict[str, torch.nn.Module]:
    """The networks of ``cfg.model`` (generators, discriminators, classifiers), untrained.

    ``roi`` has PatchGAN and RoI discriminators in both domains, ``roi-only`` RoI
    discriminators alone (Appendix A), the others PatchGAN ones (and classifiers for ccgan*).
    """
    conditional = cond.is_conditional(cfg.model)
    g_in = 3 + (cond.N_CONDITIONS if conditional else 0)
    nets: dict[str, torch.nn.Module] = {
        "G_he2ihc": ResnetGenerator(cfg.n_blocks, cfg.ngf, cfg.upsample, in_channels=g_in),
        "G_ihc2he": ResnetGenerator(cfg.n_blocks, cfg.ngf, cfg.upsample, in_channels=g_in),
    }
    if cfg.model != "roi-only":
        nets["D_he"] = PatchDiscriminator(grid=cfg.patch, ndf=cfg.ndf)
        nets["D_ihc"] = PatchDiscriminator(grid=cfg.patch, ndf=cfg.ndf)
    if cfg.model in ROI_MODELS:
        nets["D_roi_he"] = RoIDiscriminator(ndf=cfg.ndf)
        nets["D_roi_ihc"] = RoIDiscriminator(ndf=cfg.ndf)
    if conditional:
        nets["C_he"] = cond.TileClassifier(ndf=cfg.ndf)
        nets["C_ihc"] = cond.TileClassifier(ndf=cfg.ndf)
    return nets


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
    amp, amp_dtype
        Mixed precision (:func:`histolib_train.precision.amp_precision`): on CUDA bfloat16
        autocast from compute capability 8.0, else float16 with loss scaling; ``amp_dtype``
        ``bf16`` or ``fp16`` forces one (on the CPU too). ``auto`` on the CPU: float32.
    channels_last
        Use the channels-last memory format (off by default: ``benchmarks/train_step.py``
        measures it; InstanceNorm makes tensors contiguous again after each convolution).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        device: torch.device,
        total_steps: int,
        amp: bool = False,
        amp_dtype: str = "auto",
        channels_last: bool = False,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.total_steps = total_steps
        self.roi = cfg.model in ROI_MODELS
        self.image_critics = cfg.model != "roi-only"
        self.conditional = cond.is_conditional(cfg.model)
        self.structural = cfg.model in cond.STRUCTURAL_MODELS
        self.precision = amp_precision(device, amp=amp, amp_dtype=amp_dtype)
        self.amp, self.amp_dtype = self.precision.enabled, self.precision.dtype
        self.channels_last = bool(channels_last)
        torch.manual_seed(cfg.seed)
        self.nets = build_networks(cfg)
        for net in self.nets.values():
            net.to(device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
            net.train()
        # What each network's own training step calls: the network, or in a distributed run
        # its DistributedDataParallel wrapper (histolib_train.training.distributed).
        self.train_nets: dict[str, torch.nn.Module] = dict(self.nets)
        betas = (cfg.beta1, cfg.beta2)
        g_params = [*self.nets["G_he2ihc"].parameters(), *self.nets["G_ihc2he"].parameters()]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "G": torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
        }
        for name in self.critic_names:
            self.optimizers[name] = torch.optim.Adam(
                self.nets[name].parameters(), lr=cfg.lr, betas=betas
            )
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda)
            for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scaler)
        self.buffers = {
            "he": ReplayBuffer(cfg.buffer_size, seed=cfg.seed * 2 + 1),
            "ihc": ReplayBuffer(cfg.buffer_size, seed=cfg.seed * 2 + 2),
        }

    @property
    def critic_names(self) -> list[str]:
        """The networks trained against the generators: discriminators and classifiers."""
        return [name for name in self.nets if name.startswith(("D_", "C_"))]

    def _lr_lambda(self, step: int) -> float:
        return schedule_factor(self.cfg, step, self.total_steps)

    def autocast(self) -> Any:
        """The autocast context of this trainer (a no-op without AMP)."""
        return self.precision.autocast()

    def _to_device(self, batch: Batch) -> Batch:
        return to_device(batch, self.device, channels_last=self.channels_last)

    @property
    def lr(self) -> float:
        """Current generator learning rate."""
        return float(self.optimizers["G"].param_groups[0]["lr"])

    # -- one step --------------------------------------------------------------------------

    def set_input(self, he: Batch, ihc: Batch) -> None:
        """Take an H&E and an IHC batch (:func:`histolib_train.training.batches.sample_batch`
        dicts: ``image``, ``class_map``, ``boxes``; ``label`` for the conditional models),
        copied to the device and normalised there
        (:func:`histolib_train.training.batches.to_device`)."""
        self.input_a, self.input_b = self._to_device(he), self._to_device(ihc)
        self.real_a, self.real_b = self.input_a["image"], self.input_b["image"]
        self.label_a = self.input_a["label"] if self.conditional else None
        self.label_b = self.input_b["label"] if self.conditional else None

    def _generate(self, net: torch.nn.Module, x: torch.Tensor, label: Any) -> torch.Tensor:
        # The conditional generators keep the source tile's category all along.
        return net(cond.with_condition(x, label)) if self.conditional else net(x)

    def forward(self) -> None:
        """Translations, reconstructions and identity mappings of the current batches."""
        g_ab, g_ba = self.train_nets["G_he2ihc"], self.train_nets["G_ihc2he"]
        self.fake_b = self._generate(g_ab, self.real_a, self.label_a)
        self.fake_a = self._generate(g_ba, self.real_b, self.label_b)
        self.rec_a = self._generate(g_ba, self.fake_b, self.label_a)
        self.rec_b = self._generate(g_ab, self.fake_a, self.label_b)
        self.idt_a = self._generate(g_ba, self.real_a, self.label_a)
        self.idt_b = self._generate(g_ab, self.real_b, self.label_b)

    def _generator_scores(self) -> dict[str, torch.Tensor]:
        """What the critics say about the current fakes."""
        nets, a, b = self.nets, self.input_a, self.input_b
        scores = {}
        if self.image_critics:
            scores = {"ihc": nets["D_ihc"](self.fake_b), "he": nets["D_he"](self.fake_a)}
        if self.roi:
            scores["roi_he"] = nets["D_roi_he"](self.fake_a, b["class_map"], b["boxes"])
            scores["roi_ihc"] = nets["D_roi_ihc"](self.fake_b, a["class_map"], a["boxes"])
        if self.conditional:
            scores["cls_ihc"] = nets["C_ihc"](self.fake_b)
            scores["cls_he"] = nets["C_he"](self.fake_a)
        return scores

    def _generator_losses(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every generator loss term and their weighted sum ``loss_G``."""
        cfg = self.cfg
        real_a, real_b, fake_a, fake_b = self.real_a, self.real_b, self.fake_a, self.fake_b
        losses: dict[str, torch.Tensor] = {}
        loss_g: Any = 0.0  # roi-only: no image discriminator, no G_gan term
        if self.image_critics:
            losses["G_gan"] = (lsgan_loss(scores["ihc"], 1.0) + lsgan_loss(scores["he"], 1.0)) / 2
            loss_g = losses["G_gan"]
        losses["cycle"] = (l1_loss(self.rec_a, real_a) + l1_loss(self.rec_b, real_b)) / 2
        losses["identity"] = (l1_loss(self.idt_a, real_a) + l1_loss(self.idt_b, real_b)) / 2
        loss_g = loss_g + cfg.lambda_cyc * losses["cycle"] + cfg.lambda_id * losses["identity"]
        if self.roi:
            roi = lsgan_loss(scores["roi_he"], 1.0) + lsgan_loss(scores["roi_ihc"], 1.0)
            losses["G_roi"] = roi / 2
            loss_g = loss_g + cfg.lambda_roi * losses["G_roi"]
        if self.conditional:
            losses["G_cls"] = (
                cond.classification_loss(scores["cls_ihc"], self.label_a)
                + cond.classification_loss(scores["cls_he"], self.label_b)
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
        return losses

    def _step(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        """Back-propagate ``loss`` and step the optimiser ``name``."""
        self.optimizers[name].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizers[name])
        return loss

    def optimize_generators(self) -> dict[str, torch.Tensor]:
        """Both generators in one step, the critics frozen; returns the generator losses."""
        critics = [self.nets[name] for name in self.critic_names]
        _set_requires_grad(critics, False)
        with self.autocast():
            self.forward()
            scores = self._generator_scores()
        losses = self._generator_losses(scores)
        self._step("G", losses["loss_G"])
        _set_requires_grad(critics, True)
        return losses

    def optimize_discriminators(self) -> dict[str, torch.Tensor]:
        """The H&E and IHC image discriminators: real tiles against replayed fakes."""
        losses = {}
        for domain, real, fake in (
            ("he", self.real_a, self.fake_a),
            ("ihc", self.real_b, self.fake_b),
        ):
            name = f"D_{domain}"
            replay = self.buffers[domain].push_and_pop(fake.detach())
            net = self.train_nets[name]
            with self.autocast():
                loss = discriminator_loss(net(real), net(replay))
            losses[name] = self._step(name, loss)
        return losses

    def optimize_roi_discriminators(self) -> dict[str, torch.Tensor]:
        """The RoI discriminators: real tiles with their boxes, current fakes with their
        source tile's boxes."""
        a, b = self.input_a, self.input_b
        losses = {}
        for domain, own, real, fake, source in (
            ("he", a, self.real_a, self.fake_a, b),
            ("ihc", b, self.real_b, self.fake_b, a),
        ):
            name, net = f"D_roi_{domain}", self.train_nets[f"D_roi_{domain}"]
            with self.autocast():
                loss = discriminator_loss(
                    net(real, own["class_map"], own["boxes"]),
                    net(fake.detach(), source["class_map"], source["boxes"]),
                )
            losses[name] = self._step(name, loss)
        return losses

    def optimize_classifiers(self) -> dict[str, torch.Tensor]:
        """The classifiers of the conditional models: the category of real tiles."""
        losses = {}
        for domain, real, label in (
            ("he", self.real_a, self.label_a),
            ("ihc", self.real_b, self.label_b),
        ):
            name = f"C_{domain}"
            with self.autocast():
                loss = cond.classification_loss(self.train_nets[name](real), label)
            losses[name] = self._step(name, loss)
        return losses

    def optimize_parameters(self) -> dict[str, torch.Tensor]:
        """One optimisation step of every network on the batches of :meth:`set_input`.

        Returns the losses (detached scalar tensors; the RoI ones only for the RoI model, the
        classification ones only for the conditional models).
        """
        losses = self.optimize_generators()
        if self.image_critics:
            losses.update(self.optimize_discriminators())
        if self.roi:
            losses.update(self.optimize_roi_discriminators())
        if self.conditional:
            losses.update(self.optimize_classifiers())
        self.scaler.update()
        for sched in self.schedulers.values():
            sched.step()
        return {k: v.detach() for k, v in losses.items()}

    def train_step(self, he: Batch, ihc: Batch) -> dict[str, torch.Tensor]:
        """:meth:`set_input` then :meth:`optimize_parameters`."""
        self.set_input(he, ihc)
        return self.optimize_parameters()

    # -- inference and state ---------------------------------------------------------------

    def inference_generators(self) -> dict[str, torch.nn.Module]:
        """The nets with the generators as inference runs them (the conditional ones condition
        each tile on the category the classifier of its domain predicts, by default)."""
        if not self.conditional:
            return self.nets
        nets = dict(self.nets)
        for gen, clf in (("G_he2ihc", "C_he"), ("G_ihc2he", "C_ihc")):
            nets[gen] = cond.ConditionalGenerator(
                self.nets[gen], classifier=self.nets[clf], condition=self.cfg.ccgan_condition
            )
        return nets

    def state_dict(self) -> dict[str, Any]:
        """Nets, optimisers, schedulers, scaler, replay buffers and RNG states."""
        rng = rng_state()
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

    def checkpoint(self, step: int) -> dict[str, Any]:
        """The checkpoint after ``step`` steps (:mod:`histolib_train.checkpoint` format)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.cfg.model,
            "config": self.cfg.to_dict(),
            "step": step,
            "epoch": step // self.cfg.steps_per_epoch,
            **self.state_dict(),
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
