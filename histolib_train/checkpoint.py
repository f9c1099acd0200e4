"""Training checkpoints: atomic writing, validated reading, generator loading.

A checkpoint is a ``torch.save`` dict that loads with ``torch.load(weights_only=True)``::

    {"format": "histolib-cyclegan", "format_version": 1,
     "model": "roi" | "cyclegan" | "ccgan" | "ccgan-plain",
     "config": {...resolved TrainConfig, incl. n_blocks, ngf, upsample, mpp, tile_size...},
     "step": int (steps done), "epoch": int (epochs done),
     "nets": {"G_he2ihc", "G_ihc2he", "D_he", "D_ihc", ["D_roi_he", "D_roi_ihc"],
              ["C_he", "C_ihc"] (classifiers of the conditional models): state_dict},
     "optimizers": {...}, "schedulers": {...}, "scaler": {...},
     "replay": {"he": Tensor, "ihc": Tensor}, "rng": {"torch": Tensor,
     "replay_he": Tensor, "replay_ihc": Tensor}}

Only tensors and plain Python values are stored (no numpy objects), so the safe
``weights_only`` unpickler reads everything, and every tensor is written from the CPU
(:func:`save_checkpoint` moves them), so a checkpoint written on a GPU loads with
``torch.load(path, weights_only=True)`` on a machine without one. No CUDA random state is
stored: training draws nothing from the CUDA generators (weights are initialised on the CPU,
batches and replay buffers have their own CPU generators).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from histolib.core.atomic import atomic_path
from histolib.errors import CheckpointError, ConfigError

FORMAT = "histolib-cyclegan"
FORMAT_VERSION = 1
DIRECTIONS = {"he2ihc": "G_he2ihc", "ihc2he": "G_ihc2he"}
# The classifier of each direction's source domain (conditional models).
SOURCE_CLASSIFIERS = {"he2ihc": "C_he", "ihc2he": "C_ihc"}
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint written after ``epoch`` epochs (1-based)."""
    return f"epoch_{epoch}.pt"


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (in dicts, lists, tuples) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu() if value.device.type != "cpu" else value
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(item) for item in value)
    return value


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` (every tensor moved to the CPU first, see
    :func:`to_cpu`) to a temporary name, then rename onto ``path``."""
    path = Path(path)
    state = to_cpu(state)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its ``checkpoints/latest.pt``).

    Raises
    ------
    CheckpointError
        When neither exists.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / LATEST
        if not candidate.is_file():
            raise CheckpointError(f"run folder has no {CHECKPOINT_DIR}/{LATEST}", path=path)
        return candidate
    if not path.is_file():
        raise CheckpointError("no such checkpoint file", path=path)
    return path


def _check_archive(path: Path) -> None:
    """Tell a text file or a truncated download apart before torch's long messages do.

    ``torch.save`` writes a zip archive (the legacy format: a pickle, first byte 0x80); a copy
    cut short loses the zip's central directory at the end of the file.
    """
    import zipfile

    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint ({exc.strerror})", path=path) from exc
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                "not a readable torch checkpoint (corrupt or truncated: incomplete zip archive)",
                path=path,
            )
    elif not head.startswith(b"\x80"):
        raise CheckpointError(
            "not a readable torch checkpoint (corrupt or truncated: neither a torch.save zip "
            "archive nor a pickle)",
            path=path,
        )


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a histolib checkpoint (``weights_only=True``).

    Parameters
    ----------
    path
        A ``.pt`` file or a run folder (its latest checkpoint).
    map_location
        Where tensors are loaded.

    Returns
    -------
    dict
        The checkpoint dict (see the module docstring).

    Raises
    ------
    CheckpointError
        For a missing, truncated or corrupt file, a file that is not a histolib CycleGAN
        checkpoint, or one written by a newer format version.
    """
    path = resolve_checkpoint_path(path)
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"not a readable torch checkpoint (corrupt or truncated: {reason[:200]})", path=path
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"not a histolib CycleGAN checkpoint (no format {FORMAT!r})", path=path
        )
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is newer than this histolib reads "
            f"({FORMAT_VERSION})",
            path=path,
        )
    for key in ("model", "config", "nets", "step", "epoch"):
        if key not in state:
            raise CheckpointError(f"checkpoint lacks {key!r}", path=path)
    if not isinstance(state["config"], dict) or not isinstance(state["nets"], dict):
        raise CheckpointError("checkpoint 'config' or 'nets' is not a mapping", path=path)
    return state


#: Config numbers a checkpoint must hold as positive finite values (or leave out).
POSITIVE_CONFIG = ("mpp", "tile_size", "n_blocks", "ngf", "ndf")


def check_config_numbers(config: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose config holds a number that is not positive and finite
    (``mpp: nan``): the checkpoint is bad, not an option the user gave."""
    import math

    for key in POSITIVE_CONFIG:
        value = config.get(key)
        if value is None:
            continue
        try:
            good = not isinstance(value, bool) and math.isfinite(value) and value > 0
        except TypeError:
            good = False
        if not good:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise CheckpointError(
                f"bad checkpoint: its config holds {key} = {shown}, not a positive number",
                path=path,
            )


def check_finite_weights(weights: dict[str, Any], *, name: str, path: Path) -> None:
    """Refuse weights holding NaN or infinity (a training run that diverged): every output of
    such a network is meaningless."""
    bad = [
        key
        for key, tensor in weights.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"bad checkpoint: {len(bad)} of the {len(weights)} weight tensors of {name} hold "
            f"NaN or infinite values (first: {bad[0][:80]}); did the training diverge?",
            path=path,
        )


def load_generator(
    path: str | Path, *, direction: str = "he2ihc", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load one trained generator from a checkpoint, ready for inference.

    Parameters
    ----------
    path
        A checkpoint (``checkpoints/latest.pt``, ``epoch_N.pt``) or a run folder.
    direction
        ``"he2ihc"`` (H&E to virtual IHC, the paper's G_XY) or ``"ihc2he"``.
    device
        Device of the returned network.

    Returns
    -------
    tuple
        ``(ResnetGenerator in eval mode, config dict)``; the config holds ``n_blocks``,
        ``ngf``, ``upsample``, ``mpp`` and ``tile_size`` of the training tiles. For the
        conditional models (``ccgan``, ``ccgan-plain``) the network is a
        :class:`histolib_train.models.conditional.ConditionalGenerator` that takes images alone and
        conditions them as ``config["ccgan_condition"]`` says (default ``"predicted"``: the
        category that the source domain's classifier, loaded too, predicts for each image).

    Raises
    ------
    CheckpointError
        For a corrupt file, another kind of checkpoint, or weights that do not fit.
    ConfigError
        For an unknown ``direction``.
    """
    from histolib_train.models import conditional as cond
    from histolib_train.models.networks import ResnetGenerator

    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    path = resolve_checkpoint_path(path)
    state = load_checkpoint(path, map_location="cpu")
    config = dict(state["config"])
    check_config_numbers(config, path)
    weights = state["nets"].get(DIRECTIONS[direction])
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint has no generator {DIRECTIONS[direction]}", path=path)
    check_finite_weights(weights, name=DIRECTIONS[direction], path=path)
    conditional = cond.is_conditional(str(state["model"]))
    try:
        net: torch.nn.Module = ResnetGenerator(
            n_blocks=int(config.get("n_blocks", 6)),
            ngf=int(config.get("ngf", 64)),
            upsample=str(config.get("upsample", "nearest")),
            in_channels=3 + (cond.N_CONDITIONS if conditional else 0),
        )
        net.load_state_dict(weights)
        if conditional:
            condition = str(config.get("ccgan_condition", "predicted"))
            classifier = None
            if condition == "predicted":
                name = SOURCE_CLASSIFIERS[direction]
                if not isinstance(state["nets"].get(name), dict):
                    raise CheckpointError(f"checkpoint has no classifier {name}", path=path)
                classifier = cond.TileClassifier(ndf=int(config.get("ndf", 64)))
                classifier.load_state_dict(state["nets"][name])
            net = cond.ConditionalGenerator(net, classifier=classifier, condition=condition)
    except (RuntimeError, ValueError, TypeError) as exc:
        # torch's message spans lines (which keys are missing or unexpected): keep one line
        reason = " ".join(str(exc).split())
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise CheckpointError(
            f"generator weights do not fit its config (n_blocks {config.get('n_blocks', 6)}, "
            f"ngf {config.get('ngf', 64)}): {reason}",
            path=path,
        ) from exc
    net.to(device)
    net.eval()
    return net, config


def rng_state() -> dict[str, Any]:
    """The global torch CPU RNG state, as a tensor (training uses no CUDA generator)."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved.

    Checkpoints of earlier versions also hold ``cuda``, one state per GPU that was visible:
    those are restored for the GPUs present, as many as both have (a run saved with more GPUs
    visible than now resumes instead of failing).
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    saved = state.get("cuda") or []
    if saved and torch.cuda.is_available():
        for index, cuda_state in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
