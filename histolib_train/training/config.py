"""The training configuration: presets, YAML files, command-line overrides, validation.

Every option of ``histolib train`` is a field of :class:`TrainConfig`, declared once with its
default, help text, flag and resume strictness (:mod:`histolib.core.options`); the command's
Typer options, the YAML keys, the resume check (:func:`histolib.core.options.strict_fields`)
and the experiment grid's keys all come from these fields.

Presets (``--preset``, recorded in the configuration):

``authors`` (the default)
    What the authors' code (``main.py``, ``src/utils.py``, ``config/config.yml``) does: their
    RoI sampler (k = 8: 8 cancer + 2 normal boxes from a tile with both, 10 from a tile with
    cancer boxes only, 6 normal boxes from a tile without cancer), 25 epochs x 200 steps, the
    learning rate constant for 12 epochs then decayed linearly once per epoch
    (``utils.LambdaLR(25, 0, 12)``: factor ``1 - max(0, epoch - 12) / 13`` in epoch
    ``epoch``, counted from 0), and checkpoints when the authors saved their generators
    (``epoch % 5 == 0``, 0-based: after epochs 1, 6, 11, 16 and 21) and after the last; the
    whole batch flipped on each axis when ``np.random.randn() > 0.5`` (``data_augmentation``,
    p about 0.31 an axis).
``paper``
    The paper's text: balanced RoIs (k = 8: 4 cancer + 4 normal on a tile with both), 20
    epochs, and histolib's earlier schedule: the rate constant for the first half of the steps,
    then decayed linearly to zero at the last step; checkpoints every 5 epochs and the last;
    flips drawn per tile with p = 0.5 an axis (the paper names random flips, no probability).

Both presets train every model on the tiles with at least one cell box, as the authors' code
does (``data_generator`` skips tiles without boxes); ``--include-empty-tiles`` adds the others
(for models without RoI discriminators).

Precedence, lowest first: the field defaults (the authors' values); the preset; with
``resume``, the interrupted run's ``config.yaml``; the YAML file (``--config``); the options
given on the command line. The resolved configuration (every key, ``lambda_cyc`` and
``batch_size`` filled in for the model) is what the trainer uses and writes to
``RUN_DIR/config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from histolib.core.options import (
    build_options,
    check_ranges,
    count_option,
    document_options,
    non_negative_option,
    option,
    options_dict,
    read_yaml_file,
    seed_option,
    spec_map,
)
from histolib.errors import ConfigError
from histolib.slide.mpp import mpp_option
from histolib.tiling.options import MAX_TILE_SIZE

#: The models with RoI discriminators (they need the cell libraries' boxes).
ROI_MODELS = ("roi", "roi-only")
LAMBDA_CYC_DEFAULTS = {
    "roi": 30.0,
    "roi-only": 30.0,
    "cyclegan": 10.0,
    "ccgan": 10.0,
    "ccgan-plain": 10.0,
}
DEFAULT_BATCH_SIZE = 8
# Batch size when none is given: Xu et al. trained their conditional CycleGAN with batch 2
# because of its photo-realism loss; the plain variant (without that loss) trains at the batch
# size of the others.
BATCH_SIZE_DEFAULTS = {"ccgan": 2}
#: Upper bounds of the sizes (a generator of width 512 with 9 blocks already holds ~370 M
#: parameters; beyond these a run fails allocating, or never ends a step).
MAX_WIDTH = 512
MAX_BLOCKS = 64
MAX_BATCH_SIZE = 4096
MAX_BOXES_PER_TILE = 1024
MAX_BUFFER_SIZE = 100_000
#: The values each preset sets (over the field defaults, which are the authors').
PRESETS: dict[str, dict[str, Any]] = {
    "authors": {},
    "paper": {
        "roi_sampling": "balanced",
        "epochs": 20,
        "lr_schedule": "step",
        "lr_decay_start": None,
        "checkpoint_first": 5,
        "flip_rule": "tile",
    },
}


@document_options
@dataclass
class TrainConfig:
    """Every option of a training run (the names of the ``histolib train`` options).

    ``he``/``ihc`` are tile manifests (``.parquet``) or folders of PNG tiles; the libraries
    are cell libraries (``.parquet`` or ``.geojson``) whose ``tile_id`` matches the tiles.
    Strict options (the model, its sizes, losses, sampler, schedule and seed) must stay the
    same when a run is resumed.
    """

    he: str | None = option(
        None,
        help="H&E tiles: a tile manifest (tiles.parquet) or a folder of PNG tiles.",
        cli="--he",
    )
    ihc: str | None = option(
        None, help="IHC tiles: a tile manifest or a folder of PNG tiles.", cli="--ihc"
    )
    he_library: str | None = option(
        None, help="Cell library of the H&E tiles (.parquet or .geojson).", cli="--he-library"
    )
    ihc_library: str | None = option(
        None, help="Cell library of the IHC tiles (.parquet or .geojson).", cli="--ihc-library"
    )
    out: str | None = option(None, help="Run folder.", cli="--out -o")
    preset: Literal["authors", "paper"] = option(
        "authors",
        help="authors (their code: RoI sampler 8+2/10/6, 25 epochs, per-epoch decay from "
        "epoch 12, checkpoints at epochs 1, 6, 11, 16, 21, whole-batch flips) or paper "
        "(balanced RoIs, 20 epochs, decay over the second half of the steps, per-tile flips).",
        cli="--preset",
        strict=True,
    )
    model: Literal["roi", "roi-only", "cyclegan", "ccgan", "ccgan-plain"] = option(
        "roi",
        help="roi (the paper: PatchGAN + RoI discriminators), roi-only (RoI discriminators "
        "instead of the PatchGAN ones, Appendix A), cyclegan (baseline), ccgan (conditional "
        "CycleGAN of Xu et al. 2019) or ccgan-plain (ccgan without its structural and "
        "photo-realism losses).",
        cli="--model",
        strict=True,
    )
    patch: int = option(
        8, help="PatchGAN output grid for 256 px tiles: 8, 16 or 32.", cli="--patch", strict=True
    )
    epochs: int = count_option(25, help="Epochs (authors 25, paper 20).", cli="--epochs")
    steps_per_epoch: int = count_option(
        200, help="Steps an epoch.", cli="--steps-per-epoch", strict=True
    )
    batch_size: int | None = option(
        None,
        help=f"Tiles a domain a step (none: {DEFAULT_BATCH_SIZE}, or 2 for ccgan).",
        cli="--batch-size",
        strict=True,
        ge=2,
        le=MAX_BATCH_SIZE,
    )
    n_blocks: int = non_negative_option(
        6,
        help="Residual blocks of the generators (the paper: 6 or 9).",
        cli="--n-blocks",
        strict=True,
        le=MAX_BLOCKS,
    )
    ngf: int = count_option(64, help="Generator width.", cli="--ngf", strict=True, le=MAX_WIDTH)
    ndf: int = count_option(64, help="Discriminator width.", cli="--ndf", strict=True, le=MAX_WIDTH)
    upsample: Literal["nearest", "transpose"] = option(
        "nearest",
        help="Generator upsampling: nearest (+ conv) or transpose.",
        cli="--upsample",
        strict=True,
    )
    boxes_per_tile: int = count_option(
        8,
        help="k, the cell boxes drawn a tile (see --roi-sampling).",
        cli="--boxes-per-tile",
        strict=True,
        le=MAX_BOXES_PER_TILE,
    )
    roi_sampling: Literal["authors", "balanced"] = option(
        "authors",
        help="RoIs a tile: authors (k cancer + k/4 normal from a tile with both, 5k/4 from a "
        "cancer-only tile, 3k/4 normal from a tile without cancer) or balanced (k/2 + k/2).",
        cli="--roi-sampling",
        strict=True,
    )
    lambda_cyc: float | None = non_negative_option(
        None,
        help="Cycle-loss weight (none: 30 for roi and roi-only, 10 for the others).",
        cli="--lambda-cyc",
        strict=True,
    )
    lambda_id: float = non_negative_option(
        5.0, help="Identity-loss weight.", cli="--lambda-id", strict=True
    )
    lambda_roi: float = non_negative_option(
        1.0, help="RoI-loss weight.", cli="--lambda-roi", strict=True
    )
    lambda_cls: float = non_negative_option(
        1.0, help="ccgan*: cycle-classification loss weight.", cli="--lambda-cls", strict=True
    )
    lambda_ssim: float = non_negative_option(
        1.0, help="ccgan: structural (1 - SSIM) loss weight.", cli="--lambda-ssim", strict=True
    )
    lambda_photo: float = non_negative_option(
        1.0, help="ccgan: photo-realism loss weight.", cli="--lambda-photo", strict=True
    )
    ccgan_condition: Literal["predicted", "positive", "negative"] = option(
        "predicted",
        help="ccgan*: condition of a tile at inference: predicted (by the source domain's "
        "classifier), positive or negative.",
        cli="--ccgan-condition",
    )
    lr: float = option(2e-4, help="Adam learning rate.", cli="--lr", strict=True, gt=0)
    beta1: float = option(0.5, help="Adam beta1.", cli="--beta1", strict=True, ge=0, lt=1)
    beta2: float = option(0.999, help="Adam beta2.", cli="--beta2", strict=True, ge=0, lt=1)
    lr_schedule: Literal["epoch", "step"] = option(
        "epoch",
        help="epoch (the authors' LambdaLR: factor 1 - max(0, e - D) / (epochs - D) in epoch "
        "e, counted from 0, changed once per epoch) or step (1 until epoch D, then linearly "
        "to 0 at the last step), D = --lr-decay-start.",
        cli="--lr-schedule",
        strict=True,
    )
    lr_decay_start: int | None = non_negative_option(
        12,
        help="D, the epoch the decay starts from (authors 12; the paper preset: half the epochs).",
        cli="--lr-decay-start",
        strict=True,
    )
    buffer_size: int = count_option(
        50,
        help="Fakes in the image discriminators' replay buffers.",
        cli="--buffer-size",
        strict=True,
        le=MAX_BUFFER_SIZE,
    )
    flip: bool = option(
        True, help="Random horizontal/vertical flips.", cli="--flip/--no-flip", strict=True
    )
    flip_rule: Literal["batch", "tile"] = option(
        "batch",
        help="batch (the authors' code: the whole batch flipped on each axis when randn() > "
        "0.5, p about 0.31) or tile (each tile on each axis with p = 0.5; the paper preset).",
        cli="--flip-rule",
        strict=True,
    )
    include_empty_tiles: bool = option(
        False,
        help="Also draw tiles without any cell box (by default every model trains on the "
        "tiles with at least one box, as the authors' code does); the RoI models always "
        "need boxes and ignore it.",
        cli="--include-empty-tiles",
        strict=True,
    )
    device: Literal["auto", "cpu", "cuda"] = option(
        "auto", help="auto (CUDA when present), cpu or cuda.", cli="--device"
    )
    amp: bool = option(
        False,
        help="Mixed precision: on CUDA bf16 from compute capability 8.0, else fp16 with loss "
        "scaling.",
        cli="--amp/--no-amp",
    )
    amp_dtype: Literal["auto", "bf16", "fp16"] = option(
        "auto", help="auto, bf16 or fp16 (any device) with --amp.", cli="--amp-dtype"
    )
    channels_last: bool = option(
        False,
        help="Channels-last memory format (see benchmarks/train_step.py).",
        cli="--channels-last/--no-channels-last",
    )
    tf32: bool = option(
        False,
        help="Let float32 matmuls and convolutions run in TF32 on CUDA (off: true float32).",
        cli="--tf32/--no-tf32",
    )
    seed: int = seed_option(0, help="Random seed.", strict=True)
    resume: bool = option(
        False, help="Continue the run in --out from checkpoints/latest.pt.", cli="--resume"
    )
    workers: int = non_negative_option(
        2, help="DataLoader worker processes (0 = in the main process).", cli="--workers"
    )
    log_every: int = count_option(
        10, help="Write the losses to metrics.csv every N steps.", cli="--log-every"
    )
    sample_every: int = count_option(
        500, help="Write samples/step_N.png every N steps.", cli="--sample-every"
    )
    checkpoint_every: int = count_option(
        5, help="Keep checkpoints/epoch_N.pt every N epochs.", cli="--checkpoint-every"
    )
    checkpoint_first: int = count_option(
        1,
        help="The first epoch kept as epoch_N.pt (authors 1: epochs 1, 6, 11...; paper 5).",
        cli="--checkpoint-first",
    )
    max_minutes: float | None = option(
        None,
        help="Stop (and checkpoint) after this many minutes; --resume continues.",
        cli="--max-minutes",
        gt=0,
    )
    mpp: float | None = mpp_option(
        None, help="Resolution (um/px) of PNG-folder tiles, recorded in checkpoints.", cli="--mpp"
    )
    allow_many_workers: bool = option(
        False, help="Accept --workers above 4 x the CPUs (at least 64).", cli="--allow-many-workers"
    )
    tile_size: int | None = option(
        None, help="Tile side in px (read from the tiles).", ge=8, le=MAX_TILE_SIZE
    )

    def __post_init__(self) -> None:
        from histolib.core.parallel import check_workers

        check_ranges(self)
        check_workers(self.workers, allow_many=self.allow_many_workers, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every option (for YAML and checkpoints)."""
        return options_dict(self)

    @property
    def total_steps(self) -> int:
        """Training steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    def keeps_epoch(self, epoch: int) -> bool:
        """Whether ``checkpoints/epoch_<epoch>.pt`` is kept after ``epoch`` epochs (1-based):
        ``checkpoint_first``, every ``checkpoint_every`` epochs after it, and the last."""
        if epoch == self.epochs:
            return True
        return epoch >= self.checkpoint_first and (
            (epoch - self.checkpoint_first) % self.checkpoint_every == 0
        )


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
#: The models ``--model`` takes.
MODELS: tuple[str, ...] = spec_map(TrainConfig)["model"].choices or ()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML training configuration (keys as the option names, ``-`` or ``_``).

    Raises
    ------
    ConfigError
        When the file is missing, not YAML, not a mapping, or has unknown keys.
    """
    data = read_yaml_file(path, what="configuration file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a training configuration must be a YAML mapping", path=path)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"unknown option {key!r}", path=path)
        out[name] = value
    return out


def _preset_of(layers: list[dict[str, Any]], sources: list[str | None]) -> str:
    """The preset the highest layer that names one gives (default ``authors``)."""
    preset = "authors"
    for layer, source in zip(layers, sources, strict=True):
        value = layer.get("preset")
        if value is None:
            continue
        preset = str(value).strip().lower()
        if preset not in PRESETS:
            flag = "--preset" if source is None else "preset"
            raise ConfigError(f"{flag} must be authors or paper, got {value!r}", path=source)
    return preset


def resolve_config(
    *overrides: Mapping[str, Any], sources: tuple[str | None, ...] | None = None
) -> TrainConfig:
    """Merge option dicts over the preset and the defaults (later wins; ``None`` values are
    ignored).

    Parameters
    ----------
    overrides
        Dicts of option name to value, lowest precedence first (e.g. the YAML file, then the
        command line). The preset is the one the highest dict names (default ``authors``).
    sources
        For error messages: the file each dict came from (``None`` for a call or the command
        line).

    Returns
    -------
    TrainConfig
        Validated, with ``lambda_cyc`` and ``batch_size`` filled in for the model.

    Raises
    ------
    ConfigError
        For an unknown option, a value of the wrong type or out of range.
    """
    layers = [
        {str(k).replace("-", "_"): v for k, v in layer.items() if v is not None}
        for layer in overrides
    ]
    given_sources: list[str | None] = list(sources) if sources else [None] * len(layers)
    preset = _preset_of(layers, given_sources)
    cfg = build_options(TrainConfig, PRESETS[preset], *layers, sources=(None, *given_sources))
    origin: dict[str, str | None] = {}
    for layer, source in zip(layers, given_sources, strict=True):
        origin.update(dict.fromkeys(layer, source))
    cfg.preset = preset
    if cfg.batch_size is None:
        cfg.batch_size = BATCH_SIZE_DEFAULTS.get(cfg.model, DEFAULT_BATCH_SIZE)
    if cfg.lambda_cyc is None:
        cfg.lambda_cyc = LAMBDA_CYC_DEFAULTS.get(cfg.model, 10.0)
    validate(cfg, origin=origin)
    return cfg


def validate(cfg: TrainConfig, *, origin: dict[str, str | None] | None = None) -> None:
    """Check what the fields' ranges cannot say: ``--patch`` (8, 16 or 32) and combinations.

    Raises
    ------
    ConfigError
        Naming the option (and its file, when it came from one).
    """
    origin = origin or {}

    def bad(name: str, message: str) -> ConfigError:
        return ConfigError(f"option {name!r}: {message}", path=origin.get(name))

    if cfg.patch not in (8, 16, 32):
        raise bad("patch", f"must be 8, 16 or 32, not {cfg.patch}")
    if cfg.model in ROI_MODELS and cfg.roi_sampling == "authors" and cfg.boxes_per_tile < 4:
        raise bad(
            "boxes_per_tile",
            "must be at least 4 with --roi-sampling authors (a tile without cancer gets "
            "3k/4 boxes)",
        )


def write_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML, atomically."""
    import yaml

    from histolib.core.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_for_run(
    options: Mapping[str, Any], *, config_file: str | Path | None = None
) -> TrainConfig:
    """Resolve the configuration of ``histolib train`` from its options.

    Layers, lowest first: the defaults and the preset; with ``resume`` the interrupted run's
    ``OUT/config.yaml``; the YAML ``config_file``; the explicit ``options`` (``None``
    values mean "not given").

    Raises
    ------
    ConfigError
        For a bad file, an unknown option or an invalid value.
    """
    layers: list[dict[str, Any]] = []
    sources: list[str | None] = []
    file_options = read_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in options.items() if v is not None}
    resume = given.get("resume", file_options.get("resume", False))
    out = given.get("out", file_options.get("out"))
    if resume and out is not None and (Path(out) / "config.yaml").is_file():
        saved_path = Path(out) / "config.yaml"
        saved = read_config_file(saved_path)
        saved.pop("resume", None)
        layers.append(saved)
        sources.append(str(saved_path))
    if file_options:
        layers.append(file_options)
        sources.append(str(config_file))
    layers.append(given)
    sources.append(None)
    return resolve_config(*layers, sources=tuple(sources))
