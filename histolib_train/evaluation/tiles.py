"""The tiles an evaluation scores: H&E tiles with their expert masks, and real IHC tiles.

Tiles come through the one tile layer (:mod:`histolib.tileset`): a folder of tiles with a
folder of masks (:func:`histolib.tileset.sources.folder_tiles`), or a tile manifest whose H&E
tiles get their masks from their slides' contours (:mod:`histolib.tileset.contours`; a slide
without a contour file has an unknown truth, so its tiles are skipped with a warning).

The held-out set is drawn as the paper's (500 tiles from the balanced positive and negative
tiles): from a manifest, by default only the ``test`` part of its ``split`` column
(``histolib split``) and only ``positive`` and ``negative`` tiles, ``n_tiles`` shared equally
between the labels where each has enough (:func:`balanced_choice`); from a folder, equally
between tiles whose mask has tumour and tiles whose mask is empty. Every draw is seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ManifestError
from histolib.tileset.sources import TileRecord
from histolib_train.evaluation.options import DEFAULT_LABELS, SPLIT_PARTS


class NoSplitWarning(UserWarning):
    """The manifest has no ``split`` column: tiles the model trained on may be evaluated."""


class UnknownTrainingTilesWarning(UserWarning):
    """A run has no record of its training tiles: overlap with the scored tiles is unchecked."""


@dataclass
class EvalTile:
    """One H&E tile and its expert tumour mask (True = tumour)."""

    tile_id: str
    rgb: np.ndarray
    mask: np.ndarray
    slide_id: str = ""
    #: The registered real IHC of the same tissue (``--ihc-truth``), when known.
    ihc: np.ndarray | None = None


def choose(n_total: int, n_tiles: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of ``n_tiles`` (all when fewer)."""
    if n_tiles is None or n_tiles >= n_total:
        return list(range(n_total))
    if n_tiles < 1:
        raise ConfigError(f"--n-tiles must be >= 1, got {n_tiles}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_total, size=n_tiles, replace=False))


def balanced_choice(groups: Sequence[Sequence[int]], n_tiles: int | None, seed: int) -> list[int]:
    """Sorted indices: ``n_tiles`` shared as equally as possible between ``groups`` (the first
    groups take the remainder; a group with too few gives all it has and the others fill up),
    each group's drawn at random without replacement (seeded). All when there are fewer.
    """
    sizes = [len(g) for g in groups]
    if n_tiles is None or n_tiles >= sum(sizes):
        return sorted(int(i) for g in groups for i in g)
    if n_tiles < 1:
        raise ConfigError(f"--n-tiles must be >= 1, got {n_tiles}")
    quota = [0] * len(groups)
    left = n_tiles
    while left:
        open_groups = [i for i, size in enumerate(sizes) if quota[i] < size]
        share, extra = divmod(left, len(open_groups))
        for rank, i in enumerate(open_groups):
            give = min(sizes[i] - quota[i], share + (rank < extra))
            quota[i] += give
            left -= give
    rng = np.random.default_rng(seed)
    chosen = [
        int(i)
        for group, n in zip(groups, quota, strict=True)
        if n
        for i in rng.choice(np.asarray(group), size=n, replace=False)
    ]
    return sorted(chosen)


def load_folder_tiles(
    images: str | Path,
    masks: str | Path,
    *,
    n_tiles: int | None = 500,
    seed: int = 0,
    balance: bool = True,
) -> list[EvalTile]:
    """H&E tiles of a folder with their masks (rule of :mod:`histolib.tileset.folders`:
    ``<stem>`` or ``<stem>_mask`` in ``masks``; non-zero = tumour).

    With ``balance`` the ``n_tiles`` are drawn half from tiles whose mask has tumour and half
    from the others (:func:`balanced_choice`; every mask is read first), else uniformly.

    Raises
    ------
    InputError
        When a folder is missing or empty, or an image has no mask.
    ImageError
        When a tile is not 8-bit colour, or a mask's size differs from its tile's.
    """
    from histolib.tileset.images import read_mask, read_rgb
    from histolib.tileset.sources import folder_tiles

    records = folder_tiles(images, masks=masks).records
    if balance and n_tiles is not None and n_tiles < len(records):
        tumour = [bool(read_mask(r.mask_path).any()) for r in records]  # type: ignore[arg-type]
        groups = [
            [i for i, t in enumerate(tumour) if t],
            [i for i, t in enumerate(tumour) if not t],
        ]
        indices = balanced_choice(groups, n_tiles, seed)
    else:
        indices = choose(len(records), n_tiles, seed)
    tiles = []
    for index in indices:
        record = records[index]
        rgb = read_rgb(record.image_path)  # type: ignore[arg-type]
        mask = read_mask(record.mask_path, shape=rgb.shape[:2])  # type: ignore[arg-type]
        tiles.append(EvalTile(record.tile_id, rgb, mask, slide_id=record.slide_id))
    return tiles


def _he_records(
    records: Sequence[TileRecord], labels: Sequence[str] | None, manifest: Path, part: str | None
) -> list[TileRecord]:
    """The H&E records, of ``labels`` when given."""
    where = f" in the {part} part of its split" if part else ""
    rows = [r for r in records if r.stain == "he"]
    if labels and rows:
        present = sorted({str(r.label) for r in rows})
        rows = [r for r in rows if r.label in set(labels)]
        if not rows:
            raise ManifestError(
                f"no H&E tile{where} has the label {' or '.join(labels)} (labels here: "
                f"{', '.join(present)})",
                path=manifest,
            )
    if not rows:
        raise ManifestError(f"manifest has no H&E tiles{where} to evaluate", path=manifest)
    return rows


def _draw(
    rows: Sequence[TileRecord],
    labels: Sequence[str] | None,
    *,
    n_tiles: int | None,
    seed: int,
    balance: bool,
) -> list[TileRecord]:
    """The records drawn: with ``balance`` an equal share of each label (in the order of
    ``labels``, else sorted), else uniformly."""
    if not balance:
        return [rows[i] for i in choose(len(rows), n_tiles, seed)]
    order = list(labels) if labels else sorted({str(r.label) for r in rows})
    groups = [[i for i, r in enumerate(rows) if str(r.label) == label] for label in order]
    return [rows[i] for i in balanced_choice(groups, n_tiles, seed)]


def record_rgb(record: TileRecord) -> np.ndarray:
    """A manifest tile's RGB: its image, or read from its slide when none was written (the
    pixels of its PNG; :mod:`histolib.tileset.pixels`, one open handle per slide)."""
    from histolib.tileset.pixels import read_tile

    return read_tile(record)


def load_manifest_tiles(
    manifest: str | Path,
    *,
    annotations: str | Path | None = None,
    positive_classes: Sequence[str] | None = None,
    labels: Sequence[str] | None = DEFAULT_LABELS,
    split: str | None = "test",
    n_tiles: int | None = 500,
    seed: int = 0,
    balance: bool = True,
) -> list[EvalTile]:
    """H&E tiles of a tile manifest with masks rasterised from their slides' contours.

    Parameters
    ----------
    manifest
        ``tiles.parquet`` from ``histolib tile``; its H&E rows are used.
    annotations
        QuPath GeoJSON file or folder (``<slide_id>.geojson``); default: the one recorded in
        the manifest's parameters.
    positive_classes
        Annotation classes that mean tumour; default: the manifest's, else every annotation.
    labels
        Keep only rows with these labels (default ``positive`` and ``negative``; None: all).
    split
        The part of the manifest's ``split`` column to draw from: ``test`` (default), ``train``,
        or ``all`` / None (every row). A manifest without the column is used whole, with a
        :class:`NoSplitWarning`.
    n_tiles, seed
        Seeded random subset size. Drawn tiles whose slide has no contour file are skipped
        (a :class:`~histolib.tileset.contours.MissingContoursWarning` says how many).
    balance
        Draw ``n_tiles`` equally from each label (where each has enough,
        :func:`balanced_choice`) instead of uniformly.

    Raises
    ------
    ManifestError
        When the manifest has no H&E tiles, no annotation source is known, or no drawn tile's
        slide has a contour file.
    """
    from histolib.tileset.contours import (
        MissingContoursWarning,
        contour_source,
        none_left_error,
        record_mask,
        require_contours,
        skipped_message,
        split_by_contours,
    )
    from histolib.tileset.sources import manifest_tiles

    if split not in (None, *SPLIT_PARTS):
        raise ConfigError(f"--split must be test, val, train or all, not {split!r}")
    part = None if split in (None, "all") else split
    manifest = Path(manifest)
    source = manifest_tiles(manifest, part=part)
    if part is not None and "split" not in source.params:
        part = None
        warnings.warn(
            f"{manifest}: no split column (see `histolib split`): drawing from every tile, "
            "tiles the models trained on included",
            NoSplitWarning,
            stacklevel=2,
        )
    rows = _he_records(source.records, labels, manifest, part)
    contours = contour_source(
        manifest, source.meta, annotations=annotations, positive_classes=positive_classes
    )
    require_contours(contours, path=manifest)
    chosen = _draw(rows, labels, n_tiles=n_tiles, seed=seed, balance=balance)
    kept, skipped = split_by_contours(chosen, contours)
    if not kept:
        raise none_left_error(contours, path=manifest)
    if skipped:
        warnings.warn(skipped_message(skipped, contours), MissingContoursWarning, stacklevel=2)
    tiles = []
    for record, contour_file in kept:
        rgb = record_rgb(record)
        mask = record_mask(record, contour_file, contours.classes, shape=rgb.shape[:2])
        tiles.append(EvalTile(record.tile_id, rgb, mask, slide_id=record.slide_id))
    return tiles


def load_real_ihc(source: str | Path, *, n_tiles: int | None = 500, seed: int = 0) -> list[Any]:
    """Real IHC tiles ``(tile_id, rgb)`` from a manifest (its IHC rows; tiles without an image
    read from their slides) or a folder of images."""
    from histolib.tileset.sources import open_tiles

    tiles = open_tiles(source, stain="ihc")
    records = tiles.of_stain("ihc")
    if not records:
        raise ManifestError("manifest has no IHC tiles", path=tiles.path)
    return [
        (records[i].tile_id, record_rgb(records[i])) for i in choose(len(records), n_tiles, seed)
    ]


def _stain_swapped(slide_id: str) -> str:
    """``synthetic_he_0`` -> ``synthetic_ihc_0``: the IHC slide id of an H&E slide id named
    as ``histolib synth --stain both`` names a registered pair (``he`` token -> ``ihc``)."""
    parts = slide_id.split("_")
    return "_".join("ihc" if p.lower() == "he" else p for p in parts)


def attach_ihc_truth(tiles: Sequence[EvalTile], source: str | Path) -> list[EvalTile]:
    """Give each H&E tile its registered real IHC tile (``EvalTile.ihc``) from ``source``.

    Pairing rule: the IHC tile with the same ``tile_id`` (a folder: the same file name
    relative to the folder, without its suffix; a manifest: the same id); else, for a
    manifest, the tile at the same level-0 origin and size on the slide whose id is the H&E
    slide's with its ``he`` token replaced by ``ihc`` (``synthetic_he_0`` -> ``synthetic_ihc_0``,
    as ``histolib synth --stain both`` names a pair). Tiles without a partner are refused.

    Raises
    ------
    InputError
        When an H&E tile has no IHC partner, naming how many and the first.
    """
    from histolib.errors import InputError
    from histolib.tileset.sources import open_tiles

    opened = open_tiles(source, stain="ihc")
    records = opened.of_stain("ihc") or list(opened.records)
    by_id = {r.tile_id: r for r in records}
    by_place = {(r.slide_id, int(r.x0), int(r.y0), r.size): r for r in records}
    out, missing = [], []
    for tile in tiles:
        record = by_id.get(tile.tile_id)
        if record is None:
            record = _place_partner(tile, by_place)
        if record is None:
            missing.append(tile.tile_id)
            continue
        ihc = record_rgb(record)
        if ihc.shape != tile.rgb.shape:
            raise InputError(
                f"real IHC tile {record.tile_id} is {ihc.shape}, its H&E tile {tile.rgb.shape}",
                path=Path(source),
            )
        out.append(EvalTile(tile.tile_id, tile.rgb, tile.mask, slide_id=tile.slide_id, ihc=ihc))
    if missing:
        raise InputError(
            f"{len(missing)} of {len(tiles)} H&E tiles have no registered IHC tile (first: "
            f"{missing[0]}; pairs share the tile id or file name)",
            path=Path(source),
        )
    return out


def _place_partner(tile: EvalTile, by_place: dict[Any, TileRecord]) -> TileRecord | None:
    """The IHC record at the H&E tile's place on the stain-swapped slide (manifest ids
    ``<slide_id>_x<x0>_y<y0>_s<size>``)."""
    import re

    match = re.fullmatch(r"(.+)_x(\d+)_y(\d+)_s(\d+)", tile.tile_id)
    if match is None:
        return None
    slide_id, x0, y0, size = match.group(1), *(int(v) for v in match.groups()[1:])
    return by_place.get((_stain_swapped(slide_id), x0, y0, size))
