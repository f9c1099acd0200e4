"""Held-out tiles: a ``split`` column (``train`` / ``val`` / ``test``) in tile manifests.

The ``test`` part is what results are reported on; the optional ``val`` part
(``val_fraction > 0``) is what a grid of runs selects its best run on, so that the reported
figures are not those the selection was made on. ``val`` is drawn like ``test`` (the same
``by``), from what ``test`` left, after it.

Two ways to split (docs/formats.md, docs/fidelity.md):

``by="slide"`` (the default)
    Whole slides go to the test part, so no slide gives tiles to both parts (tiles of one slide
    are correlated: a tile-level split leaks). Slides are chosen so that the test fraction of
    TILES is close to the target: for 64 seeded random orders of the slides, slides are added
    greedily while that brings the test tile count closer to the target, and the order with the
    smallest distance wins (the first one on ties). Each part gets at least one slide; a
    manifest of a single slide cannot be split this way (:class:`~histolib.errors.ConfigError`:
    use ``by="tile"``). Each manifest is split on its own slides (an H&E and an IHC cohort
    each keep their test fraction).

``by="tile"``
    The authors' split: scikit-learn's ``train_test_split(tiles, test_size=0.1,
    random_state=42)``, re-implemented with numpy (scikit-learn is not a dependency) along the
    code path scikit-learn takes: ``ceil(test_size * n)`` test tiles, the first of
    ``numpy.random.RandomState(seed).permutation(n)``. The tiles are taken in ``tile_id``
    order (so a manifest's row order does not matter), not in the authors' file-listing order,
    and the result has not been compared with scikit-learn's: do not expect bit-identical
    tiles.

Re-running with the same settings is idempotent: when the recomputed column equals the one in
the file, the file is not touched. A manifest that already holds a different split keeps it
(reported as ``kept``) unless ``force=True``. The settings are recorded in the manifest's
metadata under ``params["split"]``; every other parameter is kept as it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ManifestError

SPLIT_COLUMN = "split"
PARTS = ("train", "val", "test")
SPLIT_BY = ("slide", "tile")
DEFAULT_SEED = 42
#: Seeded slide orders tried by the slide split; the closest to the target fraction wins.
SLIDE_ORDERS = 64


@dataclass
class ManifestSplit:
    """What :func:`split_manifests` did to one manifest.

    ``status`` is ``written`` (new or replaced split), ``unchanged`` (the same split was already
    there: file untouched) or ``kept`` (a different split was there and ``force`` was not
    given: file untouched, the counts are those of the kept split). ``tiles``, ``slides`` and
    ``labels`` count per part (``labels[part][label]``).
    """

    path: Path
    status: str
    by: str
    seed: int
    test_fraction: float
    tiles: dict[str, int] = field(default_factory=dict)
    slides: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    note: str = ""

    val_fraction: float = 0.0

    @property
    def achieved_fraction(self) -> float:
        """Fraction of the tiles in the test part."""
        return self.part_fraction("test")

    def part_fraction(self, part: str) -> float:
        """Fraction of the tiles in ``part``."""
        total = sum(self.tiles.values())
        return self.tiles.get(part, 0) / total if total else 0.0


def check_test_fraction(test_fraction: float) -> float:
    """Return ``test_fraction`` as a float when it is in (0, 1).

    Raises
    ------
    ConfigError
        When it is not a finite number strictly between 0 and 1.
    """
    try:
        value = float(test_fraction)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--test-fraction must be a number, not {test_fraction!r}") from exc
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(f"--test-fraction must be between 0 and 1 (exclusive), not {value}")
    return value


def check_val_fraction(val_fraction: float, test_fraction: float) -> float:
    """Return ``val_fraction`` as a float when it is in [0, 1) and leaves room for training.

    Raises
    ------
    ConfigError
        When it is not a finite number in [0, 1), or ``val_fraction + test_fraction >= 1``.
    """
    try:
        value = float(val_fraction)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--val-fraction must be a number, not {val_fraction!r}") from exc
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"--val-fraction must be in [0, 1), not {value}")
    if value + float(test_fraction) >= 1.0:
        raise ConfigError(
            f"--val-fraction {value} + --test-fraction {test_fraction} leave no training tile"
        )
    return value


def split_tiles(n_tiles: int, *, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask of ``n_tiles`` tiles, as ``train_test_split`` draws it.

    ``ceil(test_fraction * n_tiles)`` tiles are test: the first ones of
    ``RandomState(seed).permutation(n_tiles)``.

    Raises
    ------
    ConfigError
        When a part would be empty.
    """
    n_test = math.ceil(check_test_fraction(test_fraction) * n_tiles)
    if n_tiles - n_test < 1:
        raise ConfigError(
            f"{n_tiles} tile(s) with --test-fraction {test_fraction} leave no training tile"
        )
    permutation = np.random.RandomState(seed).permutation(n_tiles)
    mask = np.zeros(n_tiles, dtype=bool)
    mask[permutation[:n_test]] = True
    return mask


def _greedy(counts: np.ndarray, order: np.ndarray, target: float) -> np.ndarray:
    """Test-slide mask from adding slides in ``order`` while that nears ``target`` tiles."""
    chosen = np.zeros(len(counts), dtype=bool)
    total = 0
    for index in order:
        if abs(total + counts[index] - target) < abs(total - target):
            chosen[index] = True
            total += int(counts[index])
    if not chosen.any():  # every slide is far bigger than the target: the closest one alone
        chosen[order[int(np.argmin(np.abs(counts[order] - target)))]] = True
    if chosen.all():  # leave at least one slide for training: drop the smallest test slide
        chosen[order[int(np.argmin(counts[order]))]] = False
    return chosen


def split_slides(tile_counts: dict[str, int], *, test_fraction: float, seed: int) -> set[str]:
    """Slides of the test part: their tiles' share close to ``test_fraction``.

    Parameters
    ----------
    tile_counts
        Slide id -> number of tiles (the order does not matter: slides are sorted by id).
    test_fraction
        Target fraction of the TILES in the test part.
    seed
        Seed of the slide orders tried.

    Raises
    ------
    ConfigError
        With fewer than two slides.
    """
    fraction = check_test_fraction(test_fraction)
    slides = sorted(tile_counts)
    if len(slides) < 2:
        raise ConfigError(f"--by slide needs at least 2 slides, found {len(slides)}; use --by tile")
    counts = np.array([int(tile_counts[s]) for s in slides], dtype=np.int64)
    target = fraction * float(counts.sum())
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_gap = math.inf
    for _ in range(SLIDE_ORDERS):
        chosen = _greedy(counts, rng.permutation(len(slides)), target)
        gap = abs(float(counts[chosen].sum()) - target)
        if gap < best_gap:
            best, best_gap = chosen, gap
    assert best is not None
    return {s for s, is_test in zip(slides, best, strict=True) if is_test}


def _held_out(gdf: Any, rows: np.ndarray, *, fraction: float, by: str, seed: int) -> np.ndarray:
    """Boolean mask over ``rows`` (indices into ``gdf``) of one held-out part of ``fraction``."""
    if by == "slide":
        slide_ids = gdf["slide_id"].astype(str).to_numpy()[rows]
        ids, counts = np.unique(slide_ids, return_counts=True)
        chosen = split_slides(
            {str(k): int(v) for k, v in zip(ids, counts, strict=True)},
            test_fraction=fraction,
            seed=seed,
        )
        return np.isin(slide_ids, sorted(chosen))
    tile_ids = gdf["tile_id"].astype(str).to_numpy()[rows]
    order = np.argsort(tile_ids, kind="stable")
    mask = np.zeros(len(rows), dtype=bool)
    mask[order] = split_tiles(len(rows), test_fraction=fraction, seed=seed)
    return mask


def assign_split(
    gdf: Any,
    *,
    test_fraction: float = 0.1,
    by: str = "slide",
    seed: int = DEFAULT_SEED,
    val_fraction: float = 0.0,
) -> np.ndarray:
    """The ``split`` value (``"train"`` / ``"val"`` / ``"test"``) of every row, row order.

    ``test`` is drawn first (as without a ``val`` part, so adding one leaves ``test`` as it
    was); ``val`` then takes ``val_fraction`` of ALL the tiles from what is left, the same way
    (``by``), with the same seed.

    Raises
    ------
    ConfigError
        For a bad ``by`` or fraction, a manifest of one slide (two with a ``val`` part) with
        ``by="slide"``, or one too small to leave a tile in each part.
    """
    if by not in SPLIT_BY:
        raise ConfigError(f"--by must be slide or tile, not {by!r}")
    val = check_val_fraction(val_fraction, check_test_fraction(test_fraction))
    if len(gdf) < 2:
        raise ConfigError(f"{len(gdf)} tile(s): at least 2 are needed to split")
    every = np.arange(len(gdf))
    is_test = _held_out(gdf, every, fraction=test_fraction, by=by, seed=seed)
    column = np.where(is_test, "test", "train").astype(object)
    if val > 0:
        rest = every[~is_test]
        if len(rest) < 2:
            raise ConfigError(f"{len(rest)} tile(s) left after the test part: no room for val")
        # val_fraction is of every tile; within the rest it is a larger share
        share = min(val * len(gdf) / len(rest), 1.0 - 1e-9)
        is_val = _held_out(gdf, rest, fraction=share, by=by, seed=seed + 1)
        column[rest[is_val]] = "val"
    return column


def split_rows(gdf: Any, part: str, *, path: str | Path | None = None, required: bool = False):
    """The rows of a manifest in ``part`` (``"train"``, ``"val"`` or ``"test"``).

    A manifest without a ``split`` column is returned whole (docs/formats.md: the column is
    honoured *when present*), unless ``required``.

    Raises
    ------
    ConfigError
        For a part other than train / test.
    ManifestError
        When ``required`` and the manifest has no split, or the column holds other values.
    """
    if part not in PARTS:
        raise ConfigError(f"split part must be train, val or test, not {part!r}")
    if SPLIT_COLUMN not in gdf.columns:
        if required:
            raise ManifestError(
                "manifest has no split column: run `histolib split` on it first", path=path
            )
        return gdf
    values = gdf[SPLIT_COLUMN].astype(str)
    bad = sorted(set(values) - set(PARTS))
    if bad:
        raise ManifestError(f"split column holds {bad}, not only train/val/test", path=path)
    return gdf[values == part]


def _counts(gdf: Any, column: np.ndarray) -> tuple[dict, dict, dict]:
    tiles, slides, labels = {}, {}, {}
    for part in (p for p in PARTS if p != "val" or (column == "val").any()):
        rows = gdf[column == part]
        tiles[part] = len(rows)
        slides[part] = int(rows["slide_id"].nunique())
        labels[part] = {
            str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()
        }
    return tiles, slides, labels


def _settings_text(settings: Any) -> str:
    if not isinstance(settings, dict):
        return "settings not recorded"
    val = f", val fraction {settings['val_fraction']}" if settings.get("val_fraction") else ""
    return (
        f"by {settings.get('by')}, test fraction {settings.get('test_fraction')}{val}, "
        f"seed {settings.get('seed')}"
    )


def _plan(
    path: Path, *, test_fraction: float, val_fraction: float, by: str, seed: int, force: bool
) -> tuple[ManifestSplit, Any, dict[str, Any] | None]:
    """Read one manifest and decide; returns ``(report, gdf to write or None, params)``."""
    from histolib.tileset.manifest import read_manifest

    gdf, meta = read_manifest(path)
    params = dict(meta.get("params") or {})
    try:
        column = assign_split(
            gdf, test_fraction=test_fraction, by=by, seed=seed, val_fraction=val_fraction
        )
    except ConfigError as exc:
        raise ConfigError(str(exc), path=path) from None
    report = ManifestSplit(
        path=path,
        status="written",
        by=by,
        seed=seed,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
    )
    settings: dict[str, Any] = {"by": by, "test_fraction": test_fraction, "seed": seed}
    if val_fraction > 0:  # absent without a val part: splits made before it stay "unchanged"
        settings["val_fraction"] = val_fraction
    if SPLIT_COLUMN in gdf.columns:
        old = gdf[SPLIT_COLUMN].astype(str).to_numpy().astype(object)
        recorded = params.get("split")
        if np.array_equal(old, column) and recorded == settings:
            report.status = "unchanged"
            report.tiles, report.slides, report.labels = _counts(gdf, column)
            return report, None, None
        if force:
            return _replace(report, gdf, column, params, settings)
        if set(old) - set(PARTS):
            raise ManifestError(
                "split column holds values other than train/val/test; pass --force to redo it",
                path=path,
            )
        report.status = "kept"
        report.note = f"already split ({_settings_text(recorded)}); --force replaces it"
        report.tiles, report.slides, report.labels = _counts(gdf, old)
        return report, None, None
    return _replace(report, gdf, column, params, settings)


def _replace(
    report: ManifestSplit,
    gdf: Any,
    column: np.ndarray,
    params: dict[str, Any],
    settings: dict[str, Any],
) -> tuple[ManifestSplit, Any, dict[str, Any]]:
    """The manifest with its new split column and settings, ready to write."""
    gdf = gdf.copy()
    gdf[SPLIT_COLUMN] = column
    report.tiles, report.slides, report.labels = _counts(gdf, column)
    return report, gdf, {**params, "split": settings}


def split_manifests(
    paths: Sequence[str | Path],
    *,
    test_fraction: float = 0.1,
    by: str = "slide",
    seed: int = DEFAULT_SEED,
    force: bool = False,
    val_fraction: float = 0.0,
) -> list[ManifestSplit]:
    """Write a ``split`` column (``train`` / ``val`` / ``test``) into each tile manifest.

    Every manifest is read and checked before any is written, so a bad one leaves all
    untouched. Each file is rewritten atomically with its metadata (the tiling parameters, plus
    ``params["split"]`` = the settings).

    Parameters
    ----------
    paths
        Tile manifests (``tiles.parquet``); each is split on its own slides / tiles.
    test_fraction
        Target fraction of the tiles in the test part, in (0, 1).
    by
        ``"slide"`` (whole slides, default) or ``"tile"`` (the authors' tile-level split).
    seed
        Seed (default 42, the authors' ``random_state``).
    force
        Replace a split that differs from the one asked for (otherwise it is kept).
    val_fraction
        Target fraction of the tiles in a ``val`` part (selection set), drawn like the test
        part from what it leaves; 0 (default): no ``val`` part.

    Returns
    -------
    list of ManifestSplit
        One report per manifest, in the order given.

    Raises
    ------
    ConfigError
        For a bad fraction or ``by``, no manifest, the same manifest twice, one slide with
        ``by="slide"``.
    ManifestError
        For a missing or foreign file, or a corrupt split column (without ``force``).
    """
    from histolib.tileset.manifest import write_manifest

    check_val_fraction(val_fraction, check_test_fraction(test_fraction))
    if by not in SPLIT_BY:
        raise ConfigError(f"--by must be slide or tile, not {by!r}")
    if not paths:
        raise ConfigError("no manifest given")
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("the same manifest is given twice")
    plans = [
        _plan(
            Path(p),
            test_fraction=float(test_fraction),
            val_fraction=float(val_fraction),
            by=by,
            seed=int(seed),
            force=force,
        )
        for p in paths
    ]
    for report, gdf, params in plans:
        if gdf is not None:
            write_manifest(gdf, report.path, params=params or {})
    return [report for report, _, _ in plans]
