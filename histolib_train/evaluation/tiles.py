"""The tiles an evaluation scores: H&E tiles with their expert masks, and real IHC tiles.

Tiles come through the one tile layer (:mod:`histolib.tiles`): a folder of tiles with a
folder of masks (:func:`histolib.tiles.sources.folder_tiles`), or a tile manifest whose H&E
tiles get their masks from their slides' contours (:mod:`histolib.tiles.regions`; a slide
without a contour file has an unknown truth, so its tiles are skipped with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ManifestError
from histolib.tiles.sources import TileRecord


@dataclass
class EvalTile:
    """One H&E tile and its expert tumour mask (True = tumour)."""

    tile_id: str
    rgb: np.ndarray
    mask: np.ndarray
    slide_id: str = ""


def choose(n_total: int, n_tiles: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of ``n_tiles`` (all when fewer)."""
    if n_tiles is None or n_tiles >= n_total:
        return list(range(n_total))
    if n_tiles < 1:
        raise ConfigError(f"--n-tiles must be >= 1, got {n_tiles}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_total, size=n_tiles, replace=False))


def load_folder_tiles(
    images: str | Path, masks: str | Path, *, n_tiles: int | None = 500, seed: int = 0
) -> list[EvalTile]:
    """H&E tiles of a folder with their masks (rule of :mod:`histolib.tiles.folders`:
    ``<stem>`` or ``<stem>_mask`` in ``masks``; non-zero = tumour).

    Raises
    ------
    InputError
        When a folder is missing or empty, or an image has no mask.
    ImageError
        When a tile is not 8-bit colour, or a mask's size differs from its tile's.
    """
    from histolib.tiles.images import read_mask, read_rgb
    from histolib.tiles.sources import folder_tiles

    records = folder_tiles(images, masks=masks).records
    tiles = []
    for index in choose(len(records), n_tiles, seed):
        record = records[index]
        rgb = read_rgb(record.image_path)  # type: ignore[arg-type]
        mask = read_mask(record.mask_path, shape=rgb.shape[:2])  # type: ignore[arg-type]
        tiles.append(EvalTile(record.tile_id, rgb, mask, slide_id=record.slide_id))
    return tiles


def _he_records(
    records: Sequence[TileRecord], labels: Sequence[str] | None, manifest: Path
) -> list[TileRecord]:
    """The H&E records, of ``labels`` when given."""
    rows = [r for r in records if r.stain == "he"]
    if labels and rows:
        present = sorted({str(r.label) for r in rows})
        rows = [r for r in rows if r.label in set(labels)]
        if not rows:
            raise ManifestError(
                f"no H&E tile has the label {' or '.join(labels)} (labels here: "
                f"{', '.join(present)})",
                path=manifest,
            )
    if not rows:
        raise ManifestError("manifest has no H&E tiles to evaluate", path=manifest)
    return rows


def record_rgb(record: TileRecord) -> np.ndarray:
    """A manifest tile's RGB: its image, or read from its slide when none was written (the
    pixels of its PNG; :mod:`histolib.tiles.slide_reader`, one open handle per slide)."""
    from histolib.tiles.slide_reader import read_tile

    return read_tile(record)


def load_manifest_tiles(
    manifest: str | Path,
    *,
    annotations: str | Path | None = None,
    positive_classes: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    n_tiles: int | None = 500,
    seed: int = 0,
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
        Keep only rows with these labels (e.g. ``positive negative``); default all.
    n_tiles, seed
        Seeded random subset size. Drawn tiles whose slide has no contour file are skipped
        (a :class:`~histolib.tiles.regions.MissingContoursWarning` says how many).

    Raises
    ------
    ManifestError
        When the manifest has no H&E tiles, no annotation source is known, or no drawn tile's
        slide has a contour file.
    """
    from histolib.tiles.regions import (
        MissingContoursWarning,
        contour_source,
        none_left_error,
        record_mask,
        require_contours,
        skipped_message,
        split_by_contours,
    )
    from histolib.tiles.sources import manifest_tiles

    manifest = Path(manifest)
    source = manifest_tiles(manifest)
    rows = _he_records(source.records, labels, manifest)
    contours = contour_source(
        manifest, source.meta, annotations=annotations, positive_classes=positive_classes
    )
    require_contours(contours, path=manifest)
    chosen = [rows[i] for i in choose(len(rows), n_tiles, seed)]
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
    from histolib.tiles.sources import open_tiles

    tiles = open_tiles(source, stain="ihc")
    records = tiles.of_stain("ihc")
    if not records:
        raise ManifestError("manifest has no IHC tiles", path=tiles.path)
    return [
        (records[i].tile_id, record_rgb(records[i])) for i in choose(len(records), n_tiles, seed)
    ]
