"""The run folder of a training run: what is written where, and when.

::

    RUN_DIR/config.yaml              resolved configuration
    RUN_DIR/checkpoints/latest.pt    after every epoch (and on a stop: time budget, Ctrl-C)
    RUN_DIR/checkpoints/epoch_N.pt   at --checkpoint-first, every --checkpoint-every epochs
                                     after it, and after the last
    RUN_DIR/metrics.csv              every loss every --log-every steps
    RUN_DIR/samples/step_N.png       every --sample-every steps and at the end
    RUN_DIR/train_tiles.json         the tiles the run trained on (see
                                     :func:`read_training_tiles`)

A folder that holds a run is continued only with ``--resume`` and the same experiment options
(:data:`STRICT_RESUME_KEYS`); rows of ``metrics.csv`` written after the resumed checkpoint are
dropped, so a resumed run's metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from histolib.core.options import strict_fields
from histolib.errors import ConfigError
from histolib_train.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    epoch_checkpoint_name,
    load_checkpoint,
    save_checkpoint,
)
from histolib_train.models import conditional as cond
from histolib_train.training.config import ROI_MODELS, TrainConfig, write_config

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.csv"
SAMPLES_DIR = "samples"
#: The record of the tiles a run trained on: ``{"tile_ids": [...], "sources": [{"path",
#: "sha256", "split"}], "used_every_tile": bool}`` (``split`` None when a manifest had no split
#: column, so every tile was used). Tile ids are the manifests' ``tile_id``; for a folder of
#: tiles, the file's path relative to the folder without its suffix.
TRAINING_TILES_NAME = "train_tiles.json"

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
CONDITIONAL_LOSS_NAMES = ("G_cls", "ssim", "photo", "C_he", "C_ihc")
#: The RoI models also log the RoIs of the step's H&E and IHC batches by class (what
#: ``--roi-sampling`` drew; in a distributed run, rank 0's batches).
ROI_COUNT_COLUMNS = ("rois_cancer", "rois_normal")
#: Options whose change would make a resumed run a different experiment: the fields of
#: :class:`TrainConfig` declared ``strict=True``.
STRICT_RESUME_KEYS = strict_fields(TrainConfig)


def metric_columns(model: str) -> tuple[str, ...]:
    """Columns of ``metrics.csv`` for ``model`` (the conditional models log five more losses,
    the RoI models their RoI counts)."""
    if cond.is_conditional(model):
        return (*METRIC_COLUMNS[:-1], *CONDITIONAL_LOSS_NAMES, METRIC_COLUMNS[-1])
    if model in ROI_MODELS:
        return (*METRIC_COLUMNS[:-1], *ROI_COUNT_COLUMNS, METRIC_COLUMNS[-1])
    return METRIC_COLUMNS


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume with experiment options that differ from the saved run's.

    Raises
    ------
    ConfigError
        Naming every option that differs, old -> new.
    """
    current = cfg.to_dict()
    differ = [k for k in STRICT_RESUME_KEYS if k in saved and saved[k] != current[k]]
    if differ:
        detail = ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in differ)
        raise ConfigError(
            f"--resume with options that differ from the interrupted run ({detail}); "
            "drop them or start a new run folder",
            path=path,
        )


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint (``RUN/checkpoints/x.pt`` -> ``RUN``)."""
    path = Path(checkpoint)
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def read_training_tiles(run_dir: str | Path) -> set[str] | None:
    """The ids of the tiles a run trained on, from ``RUN/train_tiles.json``.

    Returns None for a run folder without the record (a run made before it was written).

    Raises
    ------
    ConfigError
        When the record exists but is not valid JSON with a ``tile_ids`` list.
    """
    import json

    path = Path(run_dir) / TRAINING_TILES_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = data["tile_ids"]
        if not isinstance(ids, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ConfigError("not a training-tiles record (JSON with tile_ids)", path=path) from None
    return {str(i) for i in ids}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def training_tiles_record(tile_sets: Sequence[Any]) -> dict[str, Any]:
    """The :data:`TRAINING_TILES_NAME` record of the tile sets a run draws from
    (:class:`histolib_train.training.batches.TileSet`, after ``split_groups``).

    A folder's ``sha256`` is None (a folder has no one file to hash); ``used_every_tile`` is
    true when a source had no ``split`` column (or is a folder), so none of its tiles is held
    out.
    """
    ids: list[str] = []
    sources = []
    for tiles in tile_sets:
        ids += tiles.drawn_ids()
        path = Path(tiles.source)
        sources.append(
            {
                "path": str(path.resolve()),
                "sha256": None if path.is_dir() else file_sha256(path),
                "split": tiles.split,
            }
        )
    return {
        "tile_ids": ids,
        "sources": sources,
        "used_every_tile": any(s["split"] is None for s in sources),
    }


def truncate_metrics(path: Path, step: int) -> None:
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


def _fmt(value: float | None) -> str:
    if isinstance(value, int):
        return str(value)
    return "" if value is None else repr(float(value))


class MetricsLog:
    """Rows of ``metrics.csv``: step, epoch, lr, the loss columns (empty where a model has
    no such loss), the RoI counts of the RoI models, elapsed seconds."""

    def __init__(self, fh: TextIO, columns: tuple[str, ...]) -> None:
        self._fh = fh
        self._writer = csv.writer(fh)
        self._loss_names = columns[3:-1]

    def write(
        self,
        *,
        step: int,
        epoch: int,
        lr: float,
        losses: dict[str, float],
        elapsed: float,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Append one row and flush it (``counts``: the :data:`ROI_COUNT_COLUMNS`)."""
        values = {**losses, **(counts or {})}
        row = [str(step), str(epoch), _fmt(lr)]
        row += [_fmt(values.get(n)) for n in self._loss_names]
        row.append(f"{elapsed:.3f}")
        self._writer.writerow(row)
        self._fh.flush()


class RunFolder:
    """The files of one training run (see the module docstring).

    Parameters
    ----------
    path
        The run folder (``--out``); created when missing.
    """

    def __init__(self, path: str | Path) -> None:
        from histolib.core.atomic import ensure_writable_dir

        self.path = ensure_writable_dir(path)
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self.latest = self.checkpoint_dir / LATEST
        self.config_path = self.path / CONFIG_NAME
        self.metrics_path = self.path / METRICS_NAME
        self.samples_dir = self.path / SAMPLES_DIR

    def resume_state(self, cfg: TrainConfig, *, log: Callable[[str], None]) -> dict | None:
        """The latest checkpoint to continue from (``None``: a new run).

        Raises
        ------
        ConfigError
            When the folder holds a run and ``cfg.resume`` is off, or the experiment options
            differ from the saved run's.
        CheckpointError
            For a corrupt latest checkpoint.
        """
        if not self.latest.is_file():
            if cfg.resume:
                log(f"no checkpoint in {self.path} yet; starting a new run")
            return None
        if not cfg.resume:
            raise ConfigError(
                "run folder already holds a training run; pass --resume to continue it or "
                "choose another --out",
                path=self.path,
            )
        state = load_checkpoint(self.latest)
        check_resume_config(state["config"], cfg, self.latest)
        return state

    def write_config(self, cfg: TrainConfig) -> None:
        """Write ``config.yaml`` (the resolved configuration)."""
        write_config(cfg, self.config_path)

    def write_training_tiles(self, tile_sets: Sequence[Any]) -> Path:
        """Write ``train_tiles.json`` (:func:`training_tiles_record`), atomically."""
        import json

        from histolib.core.atomic import write_text

        path = self.path / TRAINING_TILES_NAME
        write_text(path, json.dumps(training_tiles_record(tile_sets), indent=1) + "\n")
        return path

    def start_metrics(self, columns: tuple[str, ...], *, step: int) -> None:
        """Keep the rows up to ``step`` of ``metrics.csv``; write its header when new."""
        truncate_metrics(self.metrics_path, step)
        if not self.metrics_path.is_file() or self.metrics_path.stat().st_size == 0:
            self.metrics_path.write_text(",".join(columns) + "\n", encoding="utf-8")

    @contextmanager
    def metrics_log(self, columns: tuple[str, ...]) -> Iterator[MetricsLog]:
        """Append rows to ``metrics.csv`` (opened once for the whole loop)."""
        with self.metrics_path.open("a", newline="", encoding="utf-8") as fh:
            yield MetricsLog(fh, columns)

    def sample_path(self, step: int) -> Path:
        """``samples/step_N.png``."""
        return self.samples_dir / f"step_{step}.png"

    def save_latest(self, state: dict[str, Any]) -> Path:
        """Write ``checkpoints/latest.pt``."""
        return save_checkpoint(state, self.latest)

    def save_epoch(self, state: dict[str, Any], *, epoch: int, cfg: TrainConfig) -> Path:
        """After epoch ``epoch``: ``latest.pt``, and ``epoch_N.pt`` when
        :meth:`TrainConfig.keeps_epoch` says so. Returns ``latest.pt``."""
        latest = self.save_latest(state)
        if cfg.keeps_epoch(epoch):
            save_checkpoint(state, self.checkpoint_dir / epoch_checkpoint_name(epoch))
        return latest
