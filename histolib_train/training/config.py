"""The training configuration: defaults, YAML files, command-line overrides, validation.

Precedence: built-in defaults < the YAML file (``--config``) < options given on the command
line. The resolved configuration (every key, ``lambda_cyc`` filled in for the model) is what
the trainer uses and writes to ``RUN_DIR/config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError
from histolib_train.precision import AMP_DTYPES

MODELS = ("roi", "cyclegan", "ccgan", "ccgan-plain")
DEVICES = ("auto", "cpu", "cuda")
LAMBDA_CYC_DEFAULTS = {"roi": 30.0, "cyclegan": 10.0, "ccgan": 10.0, "ccgan-plain": 10.0}
# Batch size when none is given: Xu et al. trained their conditional CycleGAN with batch 2.
BATCH_SIZE_DEFAULTS = {"ccgan": 2, "ccgan-plain": 2}
CCGAN_CONDITIONS = ("predicted", "positive", "negative")


@dataclass
class TrainConfig:
    """Every option of a training run (the names of the ``histolib train`` options).

    ``he``/``ihc`` are tile manifests (``.parquet``) or folders of PNG tiles; the libraries
    are cell libraries (``.parquet`` or ``.geojson``) whose ``tile_id`` matches the tiles.
    """

    he: str | None = None
    ihc: str | None = None
    he_library: str | None = None
    ihc_library: str | None = None
    out: str | None = None
    model: str = "roi"
    patch: int = 8
    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 8
    n_blocks: int = 6
    ngf: int = 64
    ndf: int = 64
    upsample: str = "nearest"
    boxes_per_tile: int = 8
    lambda_cyc: float | None = None
    lambda_id: float = 5.0
    lambda_roi: float = 1.0
    lambda_cls: float = 1.0
    lambda_ssim: float = 1.0
    lambda_photo: float = 1.0
    ccgan_condition: str = "predicted"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    buffer_size: int = 50
    flip: bool = True
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"
    channels_last: bool = False
    seed: int = 0
    resume: bool = False
    workers: int = 2
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 5
    max_minutes: float | None = None
    mpp: float | None = None
    tile_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every option (for YAML and checkpoints)."""
        return dataclasses.asdict(self)

    @property
    def total_steps(self) -> int:
        """Training steps of the whole run."""
        return self.epochs * self.steps_per_epoch


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _keys_of_type(name: str) -> frozenset[str]:
    """The options annotated ``name`` or ``name | None`` in :class:`TrainConfig`."""
    return frozenset(
        f.name for f in dataclasses.fields(TrainConfig) if str(f.type) in (name, f"{name} | None")
    )


_INT_KEYS = _keys_of_type("int")
_FLOAT_KEYS = _keys_of_type("float")
_BOOL_KEYS = _keys_of_type("bool")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML training configuration (keys as the option names, ``-`` or ``_``).

    Raises
    ------
    ConfigError
        When the file is missing, not YAML, not a mapping, or has unknown keys.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such configuration file", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConfigError(f"not a valid YAML file ({reason})", path=path) from exc
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


def _coerce(name: str, value: Any, *, source: str | None) -> Any:
    if value is None:
        return None
    try:
        if name in _BOOL_KEYS:
            if isinstance(value, bool):
                return value
            raise TypeError
        if name in _INT_KEYS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if name in _FLOAT_KEYS:
            if isinstance(value, bool):
                raise TypeError
            result = float(value)
            if not math.isfinite(result):
                raise TypeError
            return result
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"option {name!r} has an invalid value {value!r}", path=source) from exc


def resolve_config(
    *overrides: dict[str, Any], sources: tuple[str | None, ...] | None = None
) -> TrainConfig:
    """Merge option dicts over the defaults (later wins; ``None`` values are ignored).

    Parameters
    ----------
    overrides
        Dicts of option name to value, lowest precedence first (e.g. the YAML file, then the
        command line).
    sources
        For error messages: the file each dict came from (``None`` for the command line).

    Returns
    -------
    TrainConfig
        Validated, with ``lambda_cyc`` filled in for the model.

    Raises
    ------
    ConfigError
        For an unknown option, a value of the wrong type or out of range.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str | None] = {}
    for i, layer in enumerate(overrides):
        source = sources[i] if sources else None
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"unknown option {key!r}", path=source)
            if value is None:
                continue
            merged[name] = _coerce(name, value, source=source)
            origin[name] = source
    cfg = TrainConfig(**merged)
    if "batch_size" not in merged and cfg.model in BATCH_SIZE_DEFAULTS:
        cfg.batch_size = BATCH_SIZE_DEFAULTS[cfg.model]
    if cfg.lambda_cyc is None:
        cfg.lambda_cyc = LAMBDA_CYC_DEFAULTS.get(cfg.model, 10.0)
    validate(cfg, origin=origin)
    return cfg


def validate(cfg: TrainConfig, *, origin: dict[str, str | None] | None = None) -> None:
    """Check ranges and choices.

    Raises
    ------
    ConfigError
        Naming the option (and its file, when it came from one).
    """
    origin = origin or {}

    def bad(name: str, message: str) -> ConfigError:
        return ConfigError(f"option {name!r}: {message}", path=origin.get(name))

    if cfg.model not in MODELS:
        raise bad("model", f"must be one of {', '.join(MODELS)}, not {cfg.model!r}")
    if cfg.patch not in (8, 16, 32):
        raise bad("patch", f"must be 8, 16 or 32, not {cfg.patch}")
    if cfg.upsample not in ("nearest", "transpose"):
        raise bad("upsample", f"must be nearest or transpose, not {cfg.upsample!r}")
    if cfg.device not in DEVICES:
        raise bad("device", f"must be one of {', '.join(DEVICES)}, not {cfg.device!r}")
    if cfg.amp_dtype not in AMP_DTYPES:
        raise bad("amp_dtype", f"must be one of {', '.join(AMP_DTYPES)}, not {cfg.amp_dtype!r}")
    positive = (
        "epochs",
        "steps_per_epoch",
        "batch_size",
        "ngf",
        "ndf",
        "log_every",
        "sample_every",
    )
    for name in (*positive, "boxes_per_tile", "buffer_size", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise bad(name, "must be at least 1")
    if cfg.batch_size < 2:
        raise bad("batch_size", "must be at least 2 (half tiles with cancer, half without)")
    if cfg.n_blocks < 0:
        raise bad("n_blocks", "must be at least 0")
    if cfg.workers < 0:
        raise bad("workers", "must be at least 0")
    if cfg.seed < 0:
        raise bad("seed", "must be at least 0")
    if cfg.ccgan_condition not in CCGAN_CONDITIONS:
        raise bad(
            "ccgan_condition",
            f"must be one of {', '.join(CCGAN_CONDITIONS)}, not {cfg.ccgan_condition!r}",
        )
    for name in (
        "lambda_cyc",
        "lambda_id",
        "lambda_roi",
        "lambda_cls",
        "lambda_ssim",
        "lambda_photo",
    ):
        if getattr(cfg, name) < 0:
            raise bad(name, "must not be negative")
    if cfg.lr <= 0:
        raise bad("lr", "must be positive")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise bad(name, "must be in [0, 1)")
    if cfg.max_minutes is not None and cfg.max_minutes <= 0:
        raise bad("max_minutes", "must be positive")
    if cfg.mpp is not None and cfg.mpp <= 0:
        raise bad("mpp", "must be positive")


def write_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML, atomically."""
    import yaml

    from histolib.core.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_for_run(
    options: dict[str, Any], *, config_file: str | Path | None = None
) -> TrainConfig:
    """Resolve the configuration of ``histolib train`` from its options.

    Layers, lowest first: the defaults; with ``resume`` the interrupted run's
    ``OUT/config.yaml``; the YAML ``config_file``; the explicit ``options`` (``None`` values
    mean "not given").

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
