"""GRID.yaml: shared training options, an evaluation block, and models x axes to expand.

Layout (every key of the top level except ``evaluation`` and ``grid`` is a
:class:`~histolib_train.training.config.TrainConfig` option, as in ``histolib train --config``)::

    he: data/he/tiles.parquet            # relative paths: from the grid file's folder
    ihc: data/ihc/tiles.parquet
    he_library: data/he/library.parquet
    ihc_library: data/ihc/library.parquet
    preset: authors                      # or paper; any option (roi_sampling...) can be an axis
    evaluation:                          # ONE held-out set for every run
      tiles: data/he/tiles.parquet       # or images: DIR and masks: DIR
      annotations: data/contours/        # default: recorded in the manifest
      split: test                        # the manifest's held-out part (the default)
      n_tiles: 500                       # half positive, half negative (balance: true)
      seed: 0
      labels: [positive, negative]       # the default
    grid:
      axes:                              # every combination, for every model
        n_blocks: [6, 9]
        lambda_cyc: [1, 10, 30]
      models:                            # name: options of that model (model: defaults to name)
        roi: {}
        roi-only: {}                     # Appendix A: RoI discriminators alone
        cyclegan16: {model: cyclegan, patch: 16}
        ccgan: {axes: {n_blocks: [6]}}   # batch 2 unless given

Per model: its options override the shared ones; its ``axes`` replace the shared axes of the same
name; an option that a model fixes (``ccgan: {n_blocks: 9}``) drops that axis for the model.
``models`` may also be a list of model names. ``out`` and ``resume`` are set by the experiment.
A run is named ``<model>-<axis>_<value>-...`` (axes in the order written); a model name or an
axis value with a path separator (``/``, ``\\``) is refused, as is a grid of more than
:data:`MAX_RUNS` runs (counted before anything is expanded).

The identity-loss weight λ_id is not tied to λ_cyc: it is the ``lambda_id`` option (5, the
authors' value, unless the grid, a model or an axis sets it), and every row of ``results.csv``
and ``table.md`` states the λ_id its run used.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.core.options import read_yaml_file
from histolib.errors import ConfigError
from histolib_train.evaluation.tiles import DEFAULT_LABELS, SPLIT_PARTS
from histolib_train.training.config import MODELS, TrainConfig, resolve_config

#: The most runs a grid may expand to (a larger one is refused before it is expanded).
MAX_RUNS = 1000
#: Options the experiment sets itself.
RESERVED = ("out", "resume")
#: Options that are paths, resolved from the grid file's folder.
PATH_OPTIONS = ("he", "ihc", "he_library", "ihc_library")
EVAL_PATHS = ("tiles", "images", "masks", "annotations")
EVAL_KEYS = (
    *EVAL_PATHS,
    "positive_classes",
    "labels",
    "n_tiles",
    "seed",
    "split",
    "balance",
    "batch_size",
    "device",
    "amp",
    "panel_count",
)
_OPTION_NAMES = frozenset(TrainConfig.__dataclass_fields__)


@dataclass(frozen=True)
class RunSpec:
    """One combination: ``options`` are its TrainConfig options (without out / resume)."""

    name: str
    model: str
    settings: dict[str, Any]
    options: dict[str, Any]


@dataclass
class EvaluationSpec:
    """The held-out set of every run (``histolib evaluate`` options)."""

    tiles: str | None = None
    images: str | None = None
    masks: str | None = None
    annotations: str | None = None
    positive_classes: list[str] | None = None
    labels: list[str] | None = field(default_factory=lambda: list(DEFAULT_LABELS))
    n_tiles: int | None = 500
    seed: int = 0
    split: str = "test"
    balance: bool = True
    batch_size: int = 8
    device: str | None = None
    amp: bool = False
    panel_count: int = 4


@dataclass
class Grid:
    """An expanded grid: the runs in order, and every axis name (for the results table)."""

    path: Path
    shared: dict[str, Any]
    evaluation: EvaluationSpec
    runs: list[RunSpec]
    axes: tuple[str, ...] = field(default_factory=tuple)


def format_value(value: Any) -> str:
    """A setting as it appears in a run name: ``6``, ``0.5``, ``true``, ``nearest``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return re.sub(r"[^A-Za-z0-9.+]+", "-", str(value)).strip("-") or "x"


def run_name(model: str, settings: Mapping[str, Any], *, path: Path | None = None) -> str:
    """``<model>-<axis>_<value>-...`` (the run folder's name; ConfigError when it cannot name a
    folder, such as a model named ``..``)."""
    from histolib.core.names import check_name

    for raw in (model, *(v for v in settings.values() if isinstance(v, str))):
        if "/" in raw or "\\" in raw:
            raise ConfigError(
                f"run name part {raw!r} contains a path separator; it cannot name a folder",
                path=path,
            )
    parts = [format_value(model)] + [f"{k}_{format_value(v)}" for k, v in settings.items()]
    return check_name("-".join(parts), what="run name", path=path, error=ConfigError)


def _option_names(data: Mapping[str, Any], *, where: str, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in RESERVED:
            raise ConfigError(f"{where}: {name!r} is set by the experiment, drop it", path=path)
        if name not in _OPTION_NAMES:
            raise ConfigError(f"{where}: unknown option {key!r}", path=path)
        out[name] = value
    return out


def _resolve_paths(options: dict[str, Any], keys: tuple[str, ...], base: Path) -> None:
    for key in keys:
        value = options.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            options[key] = str(base / value)
        elif isinstance(value, str) and value:
            options[key] = str(Path(value).expanduser())


def _axes(data: Any, *, where: str, path: Path) -> dict[str, list[Any]]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: axes must be a mapping of option to list of values", path=path)
    axes = _option_names(data, where=where, path=path)
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axis {name!r} must be a non-empty list", path=path)
        if len({format_value(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: axis {name!r} repeats a value", path=path)
    return axes


def _models(data: Any, *, path: Path) -> dict[str, dict[str, Any]]:
    if isinstance(data, list):
        data = {str(name): {} for name in data}
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("grid: models must be a non-empty mapping (or list) of models", path=path)
    models: dict[str, dict[str, Any]] = {}
    for name, options in data.items():
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise ConfigError(f"grid: model {name!r} must map to its options", path=path)
        options = dict(options)
        if "model" not in options:
            if str(name) not in MODELS:
                raise ConfigError(
                    f"grid: model {name!r} is not one of {', '.join(MODELS)}: give it "
                    "a 'model:' option",
                    path=path,
                )
            options["model"] = str(name)
        models[str(name)] = options
    return models


def _evaluation(data: Any, *, path: Path) -> EvaluationSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(
            "grid file needs an evaluation block (tiles: MANIFEST or images: + masks:)", path=path
        )
    unknown = [k for k in data if str(k).replace("-", "_") not in EVAL_KEYS]
    if unknown:
        raise ConfigError(f"evaluation: unknown key {unknown[0]!r}", path=path)
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    _resolve_paths(values, EVAL_PATHS, path.parent)
    for key in ("labels", "positive_classes"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    try:
        spec = EvaluationSpec(**values)
        spec.seed, spec.batch_size = int(spec.seed), int(spec.batch_size)
        spec.panel_count = int(spec.panel_count)
        spec.n_tiles = None if spec.n_tiles is None else int(spec.n_tiles)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"evaluation: invalid value ({exc})", path=path) from None
    if (spec.tiles is None) == (spec.images is None) or (spec.images and not spec.masks):
        raise ConfigError(
            "evaluation: give either tiles: MANIFEST or images: DIR with masks: DIR", path=path
        )
    if (spec.n_tiles is not None and spec.n_tiles < 1) or spec.batch_size < 1:
        raise ConfigError("evaluation: n_tiles and batch_size must be at least 1", path=path)
    if spec.split not in SPLIT_PARTS:
        raise ConfigError(
            f"evaluation: split must be {', '.join(SPLIT_PARTS)}, not {spec.split!r}", path=path
        )
    if spec.split == "val":
        raise ConfigError(
            "evaluation: split names the reporting part (test); val is where the experiment "
            "selects runs",
            path=path,
        )
    for key in ("balance", "amp"):
        if not isinstance(getattr(spec, key), bool):
            raise ConfigError(f"evaluation: {key} must be true or false", path=path)
    return spec


def _check_size(
    models: Mapping[str, Mapping[str, Any]], shared_axes: Mapping[str, list], *, path: Path
) -> None:
    """Refuse a grid of more than :data:`MAX_RUNS` runs, counted from the axes' lengths."""
    total = 0
    for model, entry in models.items():
        own = entry.get("axes") if isinstance(entry.get("axes"), Mapping) else {}
        axes = {**shared_axes, **{str(k).replace("-", "_"): v for k, v in own.items()}}
        fixed = {str(k).replace("-", "_") for k in entry if k != "axes"}
        sizes = [len(v) for k, v in axes.items() if k not in fixed and isinstance(v, list)]
        total += math.prod(sizes)
        if total > MAX_RUNS:
            raise ConfigError(
                f"grid expands to {total} runs or more (counted up to model {model!r}), "
                f"more than {MAX_RUNS} runs; split it into smaller grids",
                path=path,
            )


def parse_grid(data: Any, *, path: str | Path) -> Grid:
    """Expand a grid (the parsed YAML) into its runs, validating every run's configuration.

    Raises
    ------
    ConfigError
        Naming ``path`` and the key, for any invalid or missing part.
    """
    path = Path(path)
    if not isinstance(data, Mapping):
        raise ConfigError("a grid file must be a YAML mapping", path=path)
    body = dict(data)
    evaluation = _evaluation(body.pop("evaluation", None), path=path)
    grid = body.pop("grid", None)
    if not isinstance(grid, Mapping) or "models" not in grid:
        raise ConfigError("grid file needs a grid: block with models:", path=path)
    unknown = [k for k in grid if k not in ("models", "axes")]
    if unknown:
        raise ConfigError(f"grid: unknown key {unknown[0]!r} (models, axes)", path=path)
    shared = _option_names(body, where="shared options", path=path)
    _resolve_paths(shared, PATH_OPTIONS, path.parent)
    for key in ("he", "ihc"):
        if not shared.get(key):
            raise ConfigError(f"grid file needs the training option {key!r}", path=path)
    shared_axes = _axes(grid.get("axes"), where="grid axes", path=path)
    models = _models(grid["models"], path=path)
    _check_size(models, shared_axes, path=path)
    runs: list[RunSpec] = []
    axis_names: list[str] = []
    for model, entry in models.items():
        entry = dict(entry)
        axes = {**shared_axes, **_axes(entry.pop("axes", None), where=f"model {model}", path=path)}
        options = _option_names(entry, where=f"model {model}", path=path)
        _resolve_paths(options, PATH_OPTIONS, path.parent)
        axes = {k: v for k, v in axes.items() if k not in options}
        axis_names += [k for k in axes if k not in axis_names]
        for values in itertools.product(*axes.values()):
            settings = dict(zip(axes, values, strict=True))
            merged = {**shared, **options, **settings}
            name = run_name(model, settings, path=path)
            resolve_config(merged, {"out": "."}, sources=(str(path), None))
            runs.append(RunSpec(name, model, settings, merged))
    names = [r.name for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"two runs would share the folder {clash[0]!r}", path=path)
    return Grid(path, shared, evaluation, runs, tuple(axis_names))


def read_grid(path: str | Path) -> Grid:
    """Read and expand a GRID.yaml.

    Raises
    ------
    ConfigError
        When the file is missing, not YAML, or invalid (see :func:`parse_grid`).
    """
    data = read_yaml_file(path, what="grid file")
    return parse_grid(data, path=path)


def run_config(spec: RunSpec, run_dir: str | Path) -> TrainConfig:
    """The resolved training configuration of a run in ``run_dir`` (with resume on)."""
    return resolve_config(spec.options, {"out": str(run_dir), "resume": True})
