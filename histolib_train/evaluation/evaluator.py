"""Running an evaluation: generators scored on tiles, per-checkpoint caching, the reports.

The core, :func:`evaluate_generators`, takes any callable ``(N, H, W, 3) uint8 -> same`` per
model name, so a "perfect" or a blank generator can be scored like a checkpoint;
:func:`run_evaluation` loads checkpoints and tiles and calls it (``histolib evaluate``).

Per-checkpoint results are cached in ``out/cache`` so that a re-run with the same checkpoint
file and tiles does not run that model again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import ensure_writable_dir, write_text
from histolib.errors import ConfigError, InputError
from histolib_train.evaluation.options import EvaluateOptions
from histolib_train.evaluation.report import (
    panel_tiles,
    table_markdown,
    write_csv,
    write_figures_and_html,
    write_panel,
    write_summary,
)
from histolib_train.evaluation.scoring import (
    CONVENTION,
    PAPER_TARGET,
    GeneratorFn,
    real_ihc_statistics,
    score_generator,
    summarise,
)
from histolib_train.evaluation.tiles import EvalTile


def _cache_key(name: str, fingerprint: str, tiles: Sequence[EvalTile]) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for tile in tiles:
        digest.update(tile.tile_id.encode() + b"\0")
        digest.update(hashlib.sha1(tile.mask.tobytes()).digest())
        if tile.ihc is not None:
            digest.update(hashlib.sha1(tile.ihc.tobytes()).digest())
    return f"{name}:{digest.hexdigest()[:24]}"


def _cache_file(cache_dir: Path, name: str) -> Path:
    return cache_dir / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".json")


def _cached_rows(cache_file: Path, key: str) -> list[dict[str, Any]] | None:
    """The rows cached under ``key``; None when absent, unreadable or of another key."""
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return None
    return cached["rows"] if isinstance(cached, dict) and cached.get("key") == key else None


def _empty_summary(n_tiles: int) -> dict[str, Any]:
    return {
        "n_tiles": n_tiles,
        "convention": CONVENTION,
        "mask": "histolib.stain.dab_mask(histolib.stain.separate(rgb).d), default parameters",
        "paper_target": {
            k: {m: {"mean": v[0], "std": v[1]} for m, v in d.items()}
            for k, d in PAPER_TARGET.items()
        },
        "checkpoints": {},
    }


def evaluate_generators(
    generators: Mapping[str, GeneratorFn],
    tiles: Sequence[EvalTile],
    *,
    out: str | Path,
    batch_size: int = 8,
    real_ihc: Sequence[Any] | None = None,
    panel_count: int = 4,
    fingerprints: Mapping[str, str] | None = None,
    progress: bool = False,
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score each generator on ``tiles`` and write the reports into ``out``.

    Parameters
    ----------
    generators
        Model name -> callable ``(N, H, W, 3) uint8 -> same`` (a checkpoint's generator or any
        stand-in).
    tiles
        H&E tiles with their expert masks.
    out
        Output folder: ``tiles.csv``, ``summary.json``, ``table.md``, ``panel.png``.
    batch_size
        Tiles per generator call.
    real_ihc
        Optional ``(tile_id, rgb)`` real IHC tiles: their DAB-mask statistics as a sanity row.
    panel_count
        Tiles (rows) in ``panel.png``.
    fingerprints
        Model name -> a string identifying the model (e.g. checkpoint path, size, mtime): when
        given, that model's per-tile results are cached in ``out/cache`` and reused by a
        re-run over the same tiles.
    progress
        Show a Rich progress bar.
    groups
        The groups of tiles reported and drawn (``all``, ``tumour``, ``border``; default all
        three; ``summary.json`` always holds every group).

    Returns
    -------
    dict
        The summary written to ``summary.json``: per model and group the mean, std and 95 %
        bootstrap interval of every score (:mod:`histolib_train.evaluation.stats`), and
        ``paired``: every pair of models compared on the same tiles.
    """
    from histolib.core.progress import make_progress
    from histolib_train.evaluation.scoring import group_keys
    from histolib_train.evaluation.stats import paired_comparisons, resampling_for

    if not tiles:
        raise InputError("no tiles to evaluate")
    if not generators:
        raise ConfigError("no model to evaluate")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    out = ensure_writable_dir(out)
    all_rows: list[dict[str, Any]] = []
    summary = _empty_summary(len(tiles))
    summary["groups"] = group_keys(groups)
    resampling = resampling_for([t.slide_id for t in tiles])
    summary["interval"] = resampling.as_dict()
    rows_by_model: dict[str, list[dict[str, Any]]] = {}
    panel_index = panel_tiles(tiles, panel_count)
    panel_batch = np.stack([tiles[i].rgb for i in panel_index]) if panel_index else None
    panel_fakes: dict[str, Any] = {}
    with make_progress(disable=not progress) as bar:
        for name, generator in generators.items():
            fingerprint = (fingerprints or {}).get(name)
            key = None if fingerprint is None else _cache_key(name, fingerprint, tiles)
            cache_file = _cache_file(out / "cache", name)
            rows = None if key is None else _cached_rows(cache_file, key)
            if rows is None:
                task = bar.add_task(f"evaluate {name}", total=len(tiles))
                rows = score_generator(
                    generator,
                    tiles,
                    batch_size=batch_size,
                    on_batch=lambda n, task=task: bar.advance(task, n),
                )
                if key is not None:
                    cache_file.parent.mkdir(exist_ok=True)
                    write_text(cache_file, json.dumps({"key": key, "rows": rows}))
            for row in rows:
                row["checkpoint"] = name
            all_rows.extend(rows)
            rows_by_model[name] = rows
            summary["checkpoints"][name] = summarise(rows, resampling=resampling)
            if panel_batch is not None:
                panel_fakes[name] = list(np.asarray(generator(panel_batch)))
    summary["paired"] = paired_comparisons(rows_by_model, resampling)
    if real_ihc:
        summary["real_ihc"] = real_ihc_statistics(real_ihc)
    write_csv(out / "tiles.csv", all_rows)
    write_summary(out / "summary.json", summary)
    write_text(out / "table.md", table_markdown(summary))
    if panel_index:
        write_panel(out / "panel.png", [tiles[i] for i in panel_index], panel_fakes)
    write_figures_and_html(out, summary, all_rows)
    return summary


def _tail(path: Path, depth: int) -> str:
    """The last ``depth`` parts of ``path`` (without a ``.pt`` suffix), joined by ``/``."""
    parts = path.with_suffix("").parts if path.suffix == ".pt" else path.parts
    return "/".join(parts[-depth:])


def checkpoint_labels(checkpoints: Sequence[str]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` or ``PATH`` arguments -> unique ``(name, path)`` pairs.

    A bare path is named by the shortest trailing part of its path that is unique among the
    checkpoints (``runs/a/checkpoints/latest.pt`` and ``runs/b/...`` -> ``a/...``).
    """
    pairs: list[tuple[str | None, Path]] = []
    for spec in checkpoints:
        name, sep, rest = str(spec).partition("=")
        if sep and name and not Path(spec).exists():
            pairs.append((name, Path(rest)))
        else:
            pairs.append((None, Path(spec)))
    paths = [p.resolve() for _, p in pairs]
    labels: list[str] = []
    for (name, _), path in zip(pairs, paths, strict=True):
        if name:
            labels.append(name)
            continue
        n_parts = len(path.with_suffix("").parts if path.suffix == ".pt" else path.parts)
        for depth in range(1, n_parts + 1):
            label = _tail(path, depth)
            if not any(q != path and _tail(q, depth) == label for q in paths):
                break
        labels.append(label)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two checkpoints have the same name: {labels}")
    return list(zip(labels, [p for _, p in pairs], strict=True))


def check_training_overlap(
    runs: Mapping[str, Path],
    tiles: Sequence[EvalTile],
    *,
    allow: bool = False,
    warn: bool = True,
) -> dict[str, int | None]:
    """How many of ``tiles`` each run trained on (None: the run has no record of it).

    ``runs`` maps a model name to a checkpoint or run folder; its run's ``train_tiles.json``
    (:func:`histolib_train.training.run_folder.read_training_tiles`) names the tiles. Runs
    without a record are named in one :class:`UnknownTrainingTilesWarning` (unless not
    ``warn``: the caller says it).

    Raises
    ------
    ConfigError
        When a run trained on some of ``tiles`` and ``allow`` is false, naming how many.
    """
    import warnings

    from histolib_train.evaluation.tiles import UnknownTrainingTilesWarning
    from histolib_train.training.run_folder import read_training_tiles, run_dir_of

    ids = {t.tile_id for t in tiles}
    found: dict[str, int | None] = {}
    for name, path in runs.items():
        path = Path(path)
        trained = read_training_tiles(path if path.is_dir() else run_dir_of(path))
        found[name] = None if trained is None else len(ids & trained)
        if found[name] and not allow:
            raise ConfigError(
                f"{name} trained on {found[name]} of the {len(ids)} tiles to score; score "
                "held-out tiles (histolib split, --split test) or pass --allow-train-overlap "
                "to histolib evaluate",
                path=path,
            )
    unknown = [name for name, n in found.items() if n is None]
    if unknown and warn:
        warnings.warn(
            f"no record of the training tiles of {', '.join(unknown)} (train_tiles.json): "
            "overlap with the scored tiles not checked",
            UnknownTrainingTilesWarning,
            stacklevel=2,
        )
    return found


def precision_name(device: str, amp: bool) -> str:
    """``bf16`` when the generators run under bf16 autocast (``amp`` on CUDA), else ``fp32``."""
    return "bf16" if amp and str(device).startswith("cuda") else "fp32"


def run_evaluation(
    checkpoints: Sequence[str],
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    annotations: str | Path | None = None,
    real_ihc: str | Path | None = None,
    ihc_truth: str | Path | None = None,
    options: EvaluateOptions = EvaluateOptions(),
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate checkpoints (files or run folders) on a manifest or an images/masks folder pair.

    Parameters
    ----------
    checkpoints
        Checkpoint files or run folders, optionally named ``NAME=PATH``.
    out
        The output folder (tiles.csv, summary.json, table.md, figures, report.html, cache/).
    manifest, annotations
        A tile manifest of held-out H&E tiles and, optionally, the contours that label them
        (default: the manifest's).
    images, masks
        Instead of a manifest: a folder of H&E tiles and one of expert masks (same names).
    real_ihc
        Real IHC tiles (manifest or folder): the mask-statistics row.
    ihc_truth
        Registered real IHC of the same tiles (manifest or folder; paired by
        :func:`~histolib_train.evaluation.tiles.attach_ihc_truth`): every tile is also scored
        against its real IHC (PSNR, SSIM and the DICE of the two DAB masks).
    options
        How tiles are drawn and scored (:class:`EvaluateOptions`: ``split``, ``labels``,
        ``balance``, ``n_tiles``, ``seed``, ``device``, ``amp``, ``groups``...).
    progress
        Show a progress bar.

    The held-out tiles are drawn by :func:`~histolib_train.evaluation.tiles.load_manifest_tiles`
    or :func:`~histolib_train.evaluation.tiles.load_folder_tiles`; the generators run in float32
    unless ``options.amp`` (bf16 autocast on CUDA). A checkpoint's cached scores are reused only
    for the same checkpoint file, direction, device, precision and tiles. A checkpoint whose
    run recorded its training tiles is refused tiles it trained on unless
    ``options.allow_train_overlap`` (:func:`check_training_overlap`).

    Raises
    ------
    ConfigError
        For a missing or contradictory tile source, or a device that is not available.
    CheckpointError
        For a corrupt checkpoint or one of another kind.
    """
    from histolib_train.checkpoint import resolve_checkpoint_path
    from histolib_train.device import resolve_device
    from histolib_train.evaluation.scoring import group_keys
    from histolib_train.evaluation.tiles import (
        attach_ihc_truth,
        load_folder_tiles,
        load_manifest_tiles,
        load_real_ihc,
    )
    from histolib_train.precision import set_tf32
    from histolib_train.transfer.generator import load_transfer_generator

    if (manifest is None) == (images is None):
        raise ConfigError("give either --tiles MANIFEST or --images DIR with --masks DIR")
    if images is not None and masks is None:
        raise ConfigError("--images needs --masks DIR (the expert masks, same file names)")
    o = options
    groups = o.group_names
    group_keys(groups)  # a bad --groups fails before any model is loaded
    torch_device = str(resolve_device(o.device))
    set_tf32(torch_device, allow=False)  # fp32 is float32, not TF32, on CUDA
    precision = precision_name(torch_device, o.amp)
    named = checkpoint_labels(checkpoints)
    generators: dict[str, GeneratorFn] = {}
    fingerprints: dict[str, str] = {}
    for name, path in named:
        resolved = resolve_checkpoint_path(path)
        generator, _ = load_transfer_generator(
            resolved, direction=o.direction, device=torch_device, amp=o.amp
        )
        generators[name] = generator
        stat = resolved.stat()
        fingerprints[name] = (
            f"{resolved.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{o.direction}|"
            f"{torch_device}|{precision}"
        )
    draw = dict(n_tiles=o.n_tiles, seed=o.seed, balance=o.balance)
    if manifest is not None:
        tiles = load_manifest_tiles(
            manifest,
            annotations=annotations,
            positive_classes=o.positive_classes,
            labels=o.label_filter,
            split=o.split,
            **draw,  # type: ignore[arg-type]
        )
    else:
        tiles = load_folder_tiles(images, masks, **draw)  # type: ignore[arg-type]
    overlap = check_training_overlap(dict(named), tiles, allow=o.allow_train_overlap)
    if ihc_truth is not None:
        tiles = attach_ihc_truth(tiles, ihc_truth)
    real = load_real_ihc(real_ihc, n_tiles=o.n_tiles, seed=o.seed) if real_ihc else None
    summary = evaluate_generators(
        generators,
        tiles,
        out=out,
        batch_size=o.batch_size,
        real_ihc=real,
        fingerprints=fingerprints,
        progress=progress,
        groups=groups,
    )
    summary["training_overlap"] = overlap
    summary["ihc_truth"] = None if ihc_truth is None else str(ihc_truth)
    summary["checkpoint_paths"] = {name: str(path) for name, path in named}
    summary["selection"] = {
        "source": str(manifest if manifest is not None else images),
        "split": o.split if manifest is not None else None,
        "labels": list(o.label_filter) if manifest is not None and o.label_filter else None,
        "balance": o.balance,
        "n_tiles": o.n_tiles,
        "seed": o.seed,
    }
    summary["inference"] = {"device": torch_device, "precision": precision}
    write_summary(Path(out) / "summary.json", summary)
    return summary
