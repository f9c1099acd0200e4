"""Run a grid: train every combination (resuming), evaluate on one held-out set, keep the best.

Folder ``OUT``::

    OUT/runs/<run>/                 the trainer's run folder (config.yaml, checkpoints/, ...)
    OUT/runs/<run>/evaluation-val/  that run's evaluation on the val part (selection)
    OUT/runs/<run>/evaluation/      its evaluation on the test part, for the selected runs
                                    (tiles.csv, summary.json, table.md, panel.png) and
                                    key.json, the cache key of its scores
    OUT/results.csv                 every run: settings, state, mean +- std DICE / BAC per part
    OUT/table.md                    Table 1 layout: the selected run of each model on test
    OUT/summary.json                everything above, the tile ids of the held-out set
    OUT/panel.png                   Fig. 3 layout: the best run of each model

A run is finished when its final checkpoint ``checkpoints/epoch_<epochs>.pt`` exists: it is
not trained again. A run with only ``checkpoints/latest.pt`` was interrupted and continues
from it (the trainer's resume). A finished run whose ``config.yaml`` differs from the grid in
an option that defines the experiment is refused (remove its folder or use another OUT).

Selection protocol: every finished run is scored on the ``val`` part of the evaluation
manifest (``histolib split --val-fraction``); each model's best run by ``select_by`` (default
``dice_empty0``, which gives nothing for a blank tile) is kept; only the kept runs are scored on
the ``test`` part, and only those figures are reported. Without a ``val`` part the experiment
refuses to select, unless ``select_on_test`` (then every run is scored on test, the best kept
there, and the table says the figures are optimistic).

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
VAL_DIR = "evaluation-val"
KEY_FILE = "key.json"
#: ``--checkpoint`` values besides ``epoch_N``.
FINAL = "final"
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
    val_scores: dict[str, Any] | None = None
    use_checkpoint: str = FINAL

    @property
    def checkpoint(self) -> Path:
        """The checkpoint scored: the final one (``final``) or ``epoch_N``'s."""
        from histolib_train.checkpoint import CHECKPOINT_DIR

        if self.use_checkpoint == FINAL:
            return final_checkpoint(self.run_dir, self.epochs)
        return Path(self.run_dir) / CHECKPOINT_DIR / f"{self.use_checkpoint}.pt"

    @property
    def finished(self) -> bool:
        """Whether the final checkpoint exists."""
        return final_checkpoint(self.run_dir, self.epochs).is_file()


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did; ``best`` maps each model to its best run's name."""

    out: Path
    grid: Grid
    records: list[RunRecord]
    best: dict[str, str] = field(default_factory=dict)
    tile_ids: list[str] = field(default_factory=list)
    dry_run: bool = False
    #: How the runs were selected: part, metric, optimistic, n_tiles, val_tile_ids, checkpoint.
    selection: dict[str, Any] = field(default_factory=dict)


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


def check_checkpoint_choice(choice: str, epochs: int | None = None) -> str:
    """``final`` or ``epoch_N`` (N >= 1, at most ``epochs`` when given).

    Raises
    ------
    ConfigError
        For anything else.
    """
    import re

    match = re.fullmatch(r"epoch_(\d+)", choice)
    if choice != FINAL and (match is None or int(match.group(1)) < 1):
        raise ConfigError(f"--checkpoint must be final or epoch_N, not {choice!r}")
    if match and epochs is not None and int(match.group(1)) > epochs:
        raise ConfigError(f"--checkpoint {choice}: the run trains only {epochs} epochs")
    return choice


def plan_experiment(grid: Grid, out: str | Path, *, checkpoint: str = FINAL) -> list[RunRecord]:
    """The runs of ``grid`` in ``out/runs`` with the state each is found in; ``checkpoint``
    (``final`` or ``epoch_N``) is the checkpoint each finished run is scored with."""
    records = []
    for spec in grid.runs:
        run_dir = Path(out) / RUNS_DIR / spec.name
        cfg = run_config(spec, run_dir)
        check_checkpoint_choice(checkpoint, cfg.epochs)
        state = run_state(run_dir, cfg.epochs)
        records.append(RunRecord(spec, run_dir, cfg.epochs, state, use_checkpoint=checkpoint))
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


def has_val_part(spec: EvaluationSpec) -> bool:
    """Whether the evaluation manifest's ``split`` column has a ``val`` part (a folder of
    tiles has none)."""
    from histolib.tileset.manifest import read_manifest

    if spec.tiles is None:
        return False
    gdf, _ = read_manifest(spec.tiles)
    return "split" in gdf.columns and bool((gdf["split"].astype(str) == "val").any())


def load_eval_tiles(spec: EvaluationSpec, *, part: str | None = None) -> list[Any]:
    """The H&E tiles with their masks of ``part`` (default: ``spec.split``, the reporting
    part), drawn once (seeded) for every run."""
    from histolib_train.evaluation.tiles import load_folder_tiles, load_manifest_tiles

    if spec.tiles is not None:
        return load_manifest_tiles(
            spec.tiles,
            annotations=spec.annotations,
            positive_classes=spec.positive_classes,
            labels=spec.labels,
            split=part or spec.split,
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


def _cached_scores(record: RunRecord, key: str, folder: Path) -> dict[str, Any] | None:
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
    part: str = "test",
) -> None:
    """Score every finished run on ``tiles`` of ``part`` (cached per run in
    ``<run>/evaluation``, ``<run>/evaluation-val`` for ``val``): ``record.scores`` (test) or
    ``record.val_scores``. A run that trained on some of ``tiles`` is refused."""
    from histolib.core.atomic import write_text
    from histolib_train.device import resolve_device
    from histolib_train.evaluation.evaluator import evaluate_generators, precision_name
    from histolib_train.transfer.generator import load_transfer_generator

    tiles_key = tiles_fingerprint(tiles)
    device = str(resolve_device(device))
    precision = precision_name(device, spec.amp)
    attr = "val_scores" if part == "val" else "scores"
    for record in (r for r in records if r.finished):
        if not record.checkpoint.is_file():
            raise ConfigError(
                f"{record.use_checkpoint}.pt was not saved by this run (see its "
                "--checkpoint-every)",
                path=record.checkpoint.parent,
            )
        folder = record.run_dir / (VAL_DIR if part == "val" else EVAL_DIR)
        key = _cache_key(record.checkpoint, tiles_key, device=device, precision=precision)
        scores = _cached_scores(record, key, folder)
        if scores is not None:
            setattr(record, attr, scores)
            record.evaluated = "cached"
            continue
        log(f"evaluating {record.spec.name} on {len(tiles)} {part} tiles")
        generator, _ = load_transfer_generator(
            record.checkpoint, direction=DIRECTION, device=device, amp=spec.amp
        )
        summary = evaluate_generators(
            {record.spec.name: generator},
            tiles,
            out=folder,
            batch_size=spec.batch_size,
            panel_count=spec.panel_count,
            progress=progress,
        )
        setattr(record, attr, summary["checkpoints"][record.spec.name])
        record.evaluated = "new"
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

    from histolib_train.evaluation.report import panel_tiles, write_panel
    from histolib_train.transfer.generator import load_transfer_generator

    index = panel_tiles(tiles, max(0, count))
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
    select_by: str = "dice_empty0",
    select_on_test: bool = False,
    checkpoint: str = FINAL,
) -> ExperimentResult:
    """Train, resume and evaluate every run of a grid; select on val, report on test.

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
    select_by
        The mean over all tiles each model's best run is selected by
        (:data:`~histolib_train.experiment.report.SELECT_METRICS`).
    select_on_test
        Select on the reporting (test) part when the manifest has no ``val`` part; the table
        then says its figures are optimistic.
    checkpoint
        ``final`` (the checkpoint after the last epoch, default) or ``epoch_N``.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ConfigError
        A bad grid, a finished run trained with other options, no ``val`` part without
        ``select_on_test``.
    KeyboardInterrupt
        On Ctrl-C: finished runs are kept and a re-run resumes the interrupted one.
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib_train.experiment import report

    log = log or _default_log
    report.check_select_by(select_by)
    check_checkpoint_choice(checkpoint)
    grid = read_grid(grid_path)
    out = Path(out)
    records = plan_experiment(grid, out, checkpoint=checkpoint)
    if dry_run:
        return ExperimentResult(out, grid, records, dry_run=True)
    spec = grid.evaluation
    select_part = "test" if select_on_test else "val"
    if not select_on_test and not has_val_part(spec):
        raise ConfigError(
            "no val part to select runs on (a folder of tiles has none): `histolib split "
            "--val-fraction F` the evaluation manifest, or pass --select-on-test (optimistic "
            "figures)",
            path=spec.tiles or spec.images,
        )
    ensure_writable_dir(out)
    tiles = load_eval_tiles(spec)  # before training: a bad set fails fast
    val_tiles = None if select_on_test else load_eval_tiles(spec, part="val")
    device = spec.device or str(grid.shared.get("device") or "auto")
    train_runs(records, progress=progress, log=log)
    _check_overlap(records, [*tiles, *(val_tiles or [])], log=log)
    kw: dict[str, Any] = {"device": device, "progress": progress, "log": log}
    if val_tiles is not None:
        evaluate_runs(records, val_tiles, spec, part="val", **kw)
    else:  # selection on the reporting part: every run must be scored on it first
        evaluate_runs(records, tiles, spec, **kw)
    best = report.select_best(records, metric=select_by, part=select_part)
    if val_tiles is not None:
        evaluate_runs(list(best.values()), tiles, spec, **kw)
    result = ExperimentResult(
        out, grid, records, {m: r.spec.name for m, r in best.items()}, [t.tile_id for t in tiles]
    )
    result.selection = {
        "part": select_part,
        "metric": select_by,
        "optimistic": select_on_test,
        "n_tiles": len(tiles) if val_tiles is None else len(val_tiles),
        "val_tile_ids": None if val_tiles is None else [t.tile_id for t in val_tiles],
        "checkpoint": checkpoint,
    }
    report.write_reports(result)
    write_best_panel(
        out / "panel.png", best, tiles, count=spec.panel_count, device=device, amp=spec.amp
    )
    return result


def _check_overlap(records: Sequence[RunRecord], tiles: Sequence[Any], *, log: Any) -> None:
    """Refuse to score a run on tiles it trained on; say once which runs have no record."""
    from histolib_train.evaluation.evaluator import check_training_overlap

    runs = {r.spec.name: r.run_dir for r in records if r.finished}
    found = check_training_overlap(runs, tiles, warn=False)
    unknown = [name for name, n in found.items() if n is None]
    if unknown:
        log(
            f"warning: no record of the training tiles of {len(unknown)} run(s) "
            f"({unknown[0]}...): overlap with the scored tiles not checked"
        )


def _default_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message, markup=False)
