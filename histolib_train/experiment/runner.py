"""Run a grid: train every combination (resuming), evaluate on one held-out set, keep the best.

Folder ``OUT``::

    OUT/runs/<run>/                 the trainer's run folder (config.yaml, checkpoints/, ...)
    OUT/runs/<run>/evaluation/      that run's evaluation (tiles.csv, summary.json, table.md,
                                    panel.png) and key.json, the cache key of its scores
    OUT/results.csv                 every run: settings, state, mean +- std DICE / BAC
    OUT/table.md                    Table 1 layout: the best run of each model
    OUT/summary.json                everything above, the tile ids of the held-out set
    OUT/panel.png                   Fig. 3 layout: the best run of each model

A run is finished when its final checkpoint ``checkpoints/epoch_<epochs>.pt`` exists: it is
not trained again. A run with only ``checkpoints/latest.pt`` was interrupted and continues
from it (the trainer's resume). A finished run whose ``config.yaml`` differs from the grid in
an option that defines the experiment is refused (remove its folder or use another OUT).

A run's scores are cached under a key made of its checkpoint (path, size, mtime), the
held-out tiles (ids, pixels, masks), the device and the precision (float32 unless the
evaluation block says ``amp: true``): a re-run evaluates only new or retrained runs. The
held-out set is drawn once per invocation, seeded (``evaluation.seed``), so every run is scored
on the same tiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError
from histolib_train.experiment.grid import EvaluationSpec, Grid, RunSpec, read_grid, run_config

RUNS_DIR = "runs"
EVAL_DIR = "evaluation"
KEY_FILE = "key.json"
DIRECTION = "he2ihc"


@dataclass
class RunRecord:
    """One run of the grid and what happened to it.

    ``state`` is what was found before this invocation: ``done``, ``partial`` or ``new``.
    ``status`` is what this invocation did: ``pending`` (dry run), ``skipped`` (already done),
    ``trained``, ``resumed``, ``stopped`` (time budget: not finished, not evaluated) or
    ``failed`` (a NaN loss). ``scores`` is the evaluation summary (``all``, ``tumour_tiles``)
    and ``evaluated`` is ``cached`` or ``new``.
    """

    spec: RunSpec
    run_dir: Path
    epochs: int
    state: str
    status: str = "pending"
    note: str = ""
    scores: dict[str, Any] | None = None
    evaluated: str = ""

    @property
    def checkpoint(self) -> Path:
        """The final checkpoint of the run (exists once it is finished)."""
        return final_checkpoint(self.run_dir, self.epochs)

    @property
    def finished(self) -> bool:
        """Whether the final checkpoint exists."""
        return self.checkpoint.is_file()


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did; ``best`` maps each model to its best run's name."""

    out: Path
    grid: Grid
    records: list[RunRecord]
    best: dict[str, str] = field(default_factory=dict)
    tile_ids: list[str] = field(default_factory=list)
    dry_run: bool = False


def final_checkpoint(run_dir: Path, epochs: int) -> Path:
    """``run_dir/checkpoints/epoch_<epochs>.pt``: the trainer writes it after the last epoch."""
    from histolib_train.checkpoint import CHECKPOINT_DIR, epoch_checkpoint_name

    return Path(run_dir) / CHECKPOINT_DIR / epoch_checkpoint_name(epochs)


def run_state(run_dir: Path, epochs: int) -> str:
    """``done`` (final checkpoint), ``partial`` (only latest.pt) or ``new``."""
    from histolib_train.checkpoint import CHECKPOINT_DIR, LATEST

    if final_checkpoint(run_dir, epochs).is_file():
        return "done"
    if (Path(run_dir) / CHECKPOINT_DIR / LATEST).is_file():
        return "partial"
    return "new"


def stale_options(run_dir: Path, options: dict[str, Any]) -> list[str]:
    """Options that define the experiment and differ between ``run_dir/config.yaml`` and
    ``options`` (the trainer's ``STRICT_RESUME_KEYS``); empty when there is no config.yaml."""
    import yaml

    from histolib_train.training.run_folder import STRICT_RESUME_KEYS

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    current = options
    return [k for k in STRICT_RESUME_KEYS if k in saved and saved[k] != current.get(k)]


def plan_experiment(grid: Grid, out: str | Path) -> list[RunRecord]:
    """The runs of ``grid`` in ``out/runs`` with the state each is found in."""
    records = []
    for spec in grid.runs:
        run_dir = Path(out) / RUNS_DIR / spec.name
        cfg = run_config(spec, run_dir)
        records.append(RunRecord(spec, run_dir, cfg.epochs, run_state(run_dir, cfg.epochs)))
    return records


def _train_one(record: RunRecord, *, progress: bool, log: Callable[[str], None]) -> None:
    """Train or resume one run; a NaN loss marks it failed and the grid goes on."""
    from histolib_train.training import loop as trainer_module

    cfg = run_config(record.spec, record.run_dir)
    try:
        result = trainer_module.train(cfg, show_progress=progress, log=log)
    except trainer_module.TrainingError as exc:
        record.status, record.note = "failed", str(exc)
        log(f"warning: {record.spec.name} failed: {exc}")
        return
    if result.stopped != "finished" or not record.finished:
        record.status = "stopped"
        record.note = f"{result.stopped} at step {result.step} of {result.total_steps}"
        return
    record.status = "resumed" if record.state == "partial" else "trained"


def train_runs(
    records: Sequence[RunRecord], *, progress: bool = False, log: Callable[[str], None]
) -> None:
    """Train every run that is not finished (in grid order), skipping the finished ones.

    Raises
    ------
    ConfigError
        When a finished run was trained with options that differ from the grid's.
    KeyboardInterrupt
        On Ctrl-C (the trainer has saved the current run's latest.pt).
    """
    for index, record in enumerate(records, start=1):
        cfg = run_config(record.spec, record.run_dir)
        differ = stale_options(record.run_dir, cfg.to_dict())
        if differ:
            raise ConfigError(
                f"run was trained with other {', '.join(differ)} than the grid asks; remove "
                "the folder or choose another --out",
                path=record.run_dir,
            )
        if record.finished:
            record.status = "skipped"
            continue
        verb = "resuming" if record.state == "partial" else "training"
        log(f"[{index}/{len(records)}] {verb} {record.spec.name}")
        _train_one(record, progress=progress, log=log)


def load_eval_tiles(spec: EvaluationSpec) -> list[Any]:
    """The held-out H&E tiles with their masks, drawn once (seeded) for every run."""
    from histolib_train.evaluation.tiles import load_folder_tiles, load_manifest_tiles

    if spec.tiles is not None:
        return load_manifest_tiles(
            spec.tiles,
            annotations=spec.annotations,
            positive_classes=spec.positive_classes,
            labels=spec.labels,
            split=spec.split,
            n_tiles=spec.n_tiles,
            seed=spec.seed,
            balance=spec.balance,
        )
    return load_folder_tiles(
        spec.images,  # type: ignore[arg-type]
        spec.masks,  # type: ignore[arg-type]
        n_tiles=spec.n_tiles,
        seed=spec.seed,
        balance=spec.balance,
    )


def tiles_fingerprint(tiles: Sequence[Any]) -> str:
    """A digest of the held-out set: tile ids, pixels and masks."""
    digest = hashlib.sha256()
    for tile in tiles:
        digest.update(tile.tile_id.encode() + b"\0")
        digest.update(hashlib.sha1(tile.rgb.tobytes()).digest())
        digest.update(hashlib.sha1(tile.mask.tobytes()).digest())
    return digest.hexdigest()


def _cache_key(checkpoint: Path, tiles_key: str, *, device: str, precision: str) -> str:
    stat = checkpoint.stat()
    text = (
        f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{DIRECTION}|{tiles_key}|"
        f"{device}|{precision}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_scores(record: RunRecord, key: str) -> dict[str, Any] | None:
    folder = record.run_dir / EVAL_DIR
    try:
        cached = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
        if cached.get("key") != key:
            return None
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return summary["checkpoints"][record.spec.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_runs(
    records: Sequence[RunRecord],
    tiles: Sequence[Any],
    spec: EvaluationSpec,
    *,
    device: str,
    progress: bool = False,
    log: Callable[[str], None],
) -> None:
    """Score every finished run on ``tiles`` (cached per run in ``<run>/evaluation``)."""
    from histolib.core.atomic import write_text
    from histolib_train.device import resolve_device
    from histolib_train.evaluation.evaluator import evaluate_generators, precision_name
    from histolib_train.transfer.generator import load_transfer_generator

    tiles_key = tiles_fingerprint(tiles)
    device = str(resolve_device(device))
    precision = precision_name(device, spec.amp)
    for record in records:
        if not record.finished:
            continue
        key = _cache_key(record.checkpoint, tiles_key, device=device, precision=precision)
        scores = _cached_scores(record, key)
        if scores is not None:
            record.scores, record.evaluated = scores, "cached"
            continue
        log(f"evaluating {record.spec.name} on {len(tiles)} tiles")
        generator, _ = load_transfer_generator(
            record.checkpoint, direction=DIRECTION, device=device, amp=spec.amp
        )
        folder = record.run_dir / EVAL_DIR
        summary = evaluate_generators(
            {record.spec.name: generator},
            tiles,
            out=folder,
            batch_size=spec.batch_size,
            panel_count=spec.panel_count,
            progress=progress,
        )
        record.scores, record.evaluated = summary["checkpoints"][record.spec.name], "new"
        write_text(
            folder / KEY_FILE, json.dumps({"key": key, "checkpoint": str(record.checkpoint)})
        )
        del generator


def write_best_panel(
    path: Path,
    best: dict[str, RunRecord],
    tiles: Sequence[Any],
    *,
    count: int,
    device: str,
    amp: bool = False,
) -> Path | None:
    """Fig. 3 layout for the best run of each model (the evaluation's panel writer)."""
    import numpy as np

    from histolib_train.evaluation.report import write_panel
    from histolib_train.experiment.report import panel_indices
    from histolib_train.transfer.generator import load_transfer_generator

    index = panel_indices(tiles, count)
    if not index or not best:
        return None
    chosen = [tiles[i] for i in index]
    batch = np.stack([t.rgb for t in chosen])
    fakes = {}
    for model, record in best.items():
        generator, _ = load_transfer_generator(
            record.checkpoint, direction=DIRECTION, device=device, amp=amp
        )
        fakes[model] = list(np.asarray(generator(batch)))
        del generator
    return write_panel(path, chosen, fakes)


def run_experiment(
    grid_path: str | Path,
    *,
    out: str | Path,
    dry_run: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Train, resume and evaluate every run of a grid; write the reports of the best.

    Parameters
    ----------
    grid_path
        The GRID.yaml (:mod:`histolib_train.experiment.grid`).
    out
        The experiment folder (created).
    dry_run
        Only expand the grid and report each run's state; nothing is trained or written.
    progress
        Rich progress bars on stderr.
    log
        Where one-line notes go (default: stderr).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ConfigError
        A bad grid, or a finished run trained with other options.
    KeyboardInterrupt
        On Ctrl-C: finished runs are kept and a re-run resumes the interrupted one.
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib_train.experiment import report

    log = log or _default_log
    grid = read_grid(grid_path)
    out = Path(out)
    records = plan_experiment(grid, out)
    if dry_run:
        return ExperimentResult(out, grid, records, dry_run=True)
    ensure_writable_dir(out)
    tiles = load_eval_tiles(grid.evaluation)  # before training: a bad set fails fast
    device = grid.evaluation.device or str(grid.shared.get("device") or "auto")
    train_runs(records, progress=progress, log=log)
    evaluate_runs(records, tiles, grid.evaluation, device=device, progress=progress, log=log)
    best = report.select_best(records)
    result = ExperimentResult(
        out, grid, records, {m: r.spec.name for m, r in best.items()}, [t.tile_id for t in tiles]
    )
    report.write_reports(result)
    count = grid.evaluation.panel_count
    write_best_panel(
        out / "panel.png", best, tiles, count=count, device=device, amp=grid.evaluation.amp
    )
    return result


def _default_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message, markup=False)
