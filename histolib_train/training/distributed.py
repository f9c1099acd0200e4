"""Training on several processes (GPUs or CPU cores) with DistributedDataParallel.

``torchrun --nproc_per_node N -m histolib_train train ...`` (or ``histolib train`` started by
``torchrun``) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
in every process it starts; :func:`session` reads them and joins the process group (``nccl``
on CUDA, ``gloo`` on the CPU). Without them, or with a world of one, training runs in this
process alone and nothing here changes what it does. In a distributed run:

- each rank trains on its own device (``cuda:LOCAL_RANK`` on CUDA) and draws its own batches
  (:func:`histolib_train.training.batches.batch_rng`: a function of seed, rank, domain and step;
  rank 0 draws what a one-process run draws), so the global batch is ``N x --batch-size`` a
  domain;
- every network is wrapped in its own ``DistributedDataParallel`` for the step that trains it
  (generators together in the generator step, each critic in its own step; the critics the
  generator step consults are called unwrapped, with their weights frozen), so gradients are
  averaged over the ranks before every optimiser step and the weights stay identical. Every
  parameter of a network takes part in its step, so no unused-parameter search is needed. The
  generators and PatchGANs use InstanceNorm; the RoI discriminator's BatchNorm (the authors')
  normalises each rank's batch on its own, as one GPU does its batch, and its running
  statistics (unused in training) are rank 0's, broadcast at each of its steps;
- each rank keeps its own replay buffers (seeded by rank);
- the losses logged are the means over the ranks; the decision to stop (time budget, Ctrl-C,
  a NaN loss) is taken by all ranks together;
- only rank 0 writes ``config.yaml``, ``train_tiles.json``, ``metrics.csv`` (its own batches'
  RoI counts), samples and checkpoints. A checkpoint
  holds rank 0's state as a one-process run's does, plus under ``ranks`` every rank's digest of
  its parameters (checked equal when it is written) and the replay buffers and RNG states of ranks
  1..N-1, so a resumed run (every rank loads the checkpoint) continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from histolib.errors import ConfigError, HistolibError

#: Stop reasons, in the order in which one rank's overrides another's.
STOP_REASONS = ("", "time budget", "interrupted")
#: Replay-buffer seeds of rank r are the trainer's plus r times this.
RANK_SEED_STRIDE = 1_000_003


class RankDivergenceError(HistolibError):
    """The ranks of a distributed run no longer hold the same weights."""


@dataclass(frozen=True)
class RankEnv:
    """Where this process stands in a ``torchrun`` launch (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1


def _env_int(environ: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def detect_env(environ: dict[str, str] | None = None) -> RankEnv:
    """The rank, world size and local rank ``torchrun`` set (a world of one when it did not).

    Raises
    ------
    ConfigError
        For values that are not integers or a rank outside the world.
    """
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"bad torchrun environment: RANK {rank}, WORLD_SIZE {world}")
    return RankEnv(rank=rank, world_size=world, local_rank=local)


def weights_digest(nets: dict[str, torch.nn.Module]) -> str:
    """SHA-256 of every parameter of ``nets`` (names and bytes, in name order; buffers such
    as BatchNorm running statistics are left out)."""
    digest = hashlib.sha256()
    for name in sorted(nets):
        for key, value in nets[name].named_parameters():
            digest.update(f"{name}.{key}:{value.dtype}:{tuple(value.shape)}".encode())
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


class Ranks:
    """The processes of one training run, as the loop uses them; a world of one is a no-op.

    Parameters
    ----------
    env
        This process's place (:func:`detect_env`).
    """

    def __init__(self, env: RankEnv) -> None:
        self.env = env
        self.device: torch.device | None = None

    @property
    def rank(self) -> int:
        """This process's rank (0 alone)."""
        return self.env.rank

    @property
    def world_size(self) -> int:
        """How many processes train."""
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.env.rank == 0

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` on rank 0, a log that prints nothing on the others."""
        return log if self.is_main else _silent

    def place(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for CUDA in a distributed run, else
        ``device``.

        Raises
        ------
        ConfigError
            When this node has fewer CUDA devices than ranks.
        """
        if self.env.distributed and device.type == "cuda":
            count = torch.cuda.device_count()
            if self.env.local_rank >= count:
                raise ConfigError(
                    f"rank {self.rank} needs cuda:{self.env.local_rank} but this machine has "
                    f"{count} CUDA device(s); start at most {count} processes a node"
                )
            device = torch.device("cuda", self.env.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        return device

    # -- the trainer ----------------------------------------------------------------------

    def attach(self, trainer: Any, resume_state: dict[str, Any] | None) -> None:
        """Give this rank its own replay buffers (restored from ``resume_state`` where it
        holds them) and wrap the trainer's networks in DistributedDataParallel."""
        if not self.env.distributed:
            return
        if self.rank:
            saved = _rank_entry(resume_state, self.rank)
            if saved is not None:
                _restore_rank(trainer, saved)
            elif resume_state is None:
                _seed_buffers(trainer, self.rank)
        from torch.nn.parallel import DistributedDataParallel

        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        trainer.train_nets = {
            name: DistributedDataParallel(net, device_ids=ids) for name, net in trainer.nets.items()
        }

    def resume_note(self, resume_state: dict[str, Any]) -> str | None:
        """A note when the checkpoint was written by another number of ranks (their replay
        buffers cannot all be restored), else None."""
        saved = resume_state.get("ranks")
        saved_world = len(saved) if isinstance(saved, list) else 1
        if saved_world == self.world_size:
            return None
        return (
            f"note: the checkpoint was written by {saved_world} process(es), this run has "
            f"{self.world_size}; ranks without a saved replay buffer start from rank 0's"
        )

    def checkpoint(self, trainer: Any, step: int) -> dict[str, Any] | None:
        """The checkpoint after ``step`` steps on rank 0 (None on the others, which send it
        their replay buffers, RNG states and weight digests).

        Raises
        ------
        RankDivergenceError
            On rank 0, when a rank's weights differ from rank 0's.
        """
        state = trainer.checkpoint(step)
        if not self.env.distributed:
            return state
        import torch.distributed as dist

        mine: dict[str, Any] = {"weights": weights_digest(trainer.nets)}
        if self.rank:
            mine["replay"], mine["rng"] = state["replay"], state["rng"]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(mine, gathered, dst=0)
        if not self.is_main:
            return None
        assert gathered is not None
        differ = [r for r, entry in enumerate(gathered) if entry["weights"] != mine["weights"]]
        if differ:
            raise RankDivergenceError(
                f"after step {step} rank(s) {differ} hold other weights than rank 0; the "
                "ranks must run the same histolib and options"
            )
        state["ranks"] = gathered
        return state

    # -- one step -------------------------------------------------------------------------

    def mean_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The losses averaged over the ranks (as they are alone)."""
        if not self.env.distributed or not losses:
            return losses
        import torch.distributed as dist

        names = list(losses)
        stacked = torch.stack([losses[n].detach().float() for n in names])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= self.world_size
        return dict(zip(names, stacked.unbind(), strict=True))

    def agree(self, reason: str) -> str:
        """The stop reason of all ranks: the strongest any rank gives (see
        :data:`STOP_REASONS`; ``""`` goes on)."""
        if not self.env.distributed:
            return reason
        import torch.distributed as dist

        code = torch.tensor([STOP_REASONS.index(reason)], device=self.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        return STOP_REASONS[int(code.item())]

    def barrier(self) -> None:
        """Wait for every rank (nothing alone)."""
        if self.env.distributed:
            import torch.distributed as dist

            if self.device is not None and self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def _rank_entry(state: dict[str, Any] | None, rank: int) -> dict[str, Any] | None:
    """The saved replay buffers and RNG state of ``rank`` in a checkpoint, if it has them."""
    if state is None:
        return None
    ranks = state.get("ranks")
    if not isinstance(ranks, list) or rank >= len(ranks):
        return None
    entry = ranks[rank]
    return entry if isinstance(entry, dict) and "replay" in entry and "rng" in entry else None


def _restore_rank(trainer: Any, entry: dict[str, Any]) -> None:
    from histolib_train.checkpoint import set_rng_state

    for domain, buf in trainer.buffers.items():
        buf.load_state_dict(
            {"images": entry["replay"][domain], "generator": entry["rng"][f"replay_{domain}"]},
            device=trainer.device,
        )
    set_rng_state(entry["rng"])


def _seed_buffers(trainer: Any, rank: int) -> None:
    """Fresh replay buffers whose draws are this rank's own (rank 0 keeps the trainer's)."""
    from histolib_train.models.losses import ReplayBuffer

    for k, domain in enumerate(sorted(trainer.buffers)):
        seed = trainer.cfg.seed * 2 + 1 + k + RANK_SEED_STRIDE * rank
        trainer.buffers[domain] = ReplayBuffer(trainer.buffers[domain].size, seed=seed)


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Ranks]:
    """The ranks of this training run: joins the ``torchrun`` process group (``nccl`` when
    ``device_name`` resolves to CUDA, else ``gloo``) for the run and leaves it afterwards.

    A process group that is already initialised (a caller's) is used as it is and left open.

    Raises
    ------
    ConfigError
        For a malformed torchrun environment, or one without ``MASTER_ADDR`` / ``MASTER_PORT``.
    """
    env = detect_env()
    if not env.distributed:
        yield Ranks(env)
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE is {env.world_size} but {' and '.join(missing)} are not set; "
                "start distributed training with torchrun"
            )
        from histolib_train.device import resolve_device

        backend = "nccl" if resolve_device(device_name).type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    try:
        yield Ranks(env)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
