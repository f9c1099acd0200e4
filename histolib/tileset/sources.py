"""The one resolution of a tile source (a manifest, or a folder of tiles and masks) into records.

Every stage that reads tiles (cell libraries, training data, evaluation) turns its input into a
list of :class:`TileRecord` here, so a manifest or a folder one stage accepts is accepted by all
of them:

- a tile manifest (``histolib tile``): one record a row, geometry as the manifest records it,
  the image path made absolute (None for a manifest written with ``--format none``: its tiles
  are read from their slides, :func:`histolib.tileset.pixels.read_tile`);
- a folder: the tiles :func:`histolib.tileset.folders.list_images` lists, each its own slide at
  origin (0, 0), with its mask from :func:`histolib.tileset.folders.match_masks` when a mask
  folder is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import ManifestError


@dataclass(frozen=True)
class TileRecord:
    """One tile of a source.

    Attributes
    ----------
    tile_id, slide_id
        The tile's id and its slide's (a folder tile is its own slide: both are the file stem).
    image_path
        The tile image; None when the manifest was written without images (``--format none``).
    x0, y0, downsample
        Level-0 origin and level-0 px per tile px (folder tiles: 0, 0, 1).
    mpp
        um/px of the tile (None when unknown).
    size
        Side in px the manifest records (None for folder tiles).
    stain, label
        The manifest's ``stain`` and ``label`` (folder tiles: the stain given, no label).
    slide_path
        The slide the tile was cut from (manifest tiles only).
    mask_path
        The tile's mask image (folder tiles with a mask folder only).
    """

    tile_id: str
    slide_id: str
    image_path: Path | None
    x0: float = 0.0
    y0: float = 0.0
    downsample: float = 1.0
    mpp: float | None = None
    size: int | None = None
    stain: str | None = None
    label: str | None = None
    slide_path: str | None = None
    mask_path: Path | None = None


@dataclass(frozen=True)
class TileSource:
    """The tiles of a manifest or a folder.

    Attributes
    ----------
    path
        The manifest file or the folder of tiles.
    records
        One :class:`TileRecord` a tile, in manifest order or sorted by relative path.
    meta
        The manifest's metadata (``params`` and version); empty for a folder.
    """

    path: Path
    records: list[TileRecord]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters recorded in the manifest (empty for a folder)."""
        params = self.meta.get("params") if isinstance(self.meta, dict) else None
        return params if isinstance(params, dict) else {}

    def of_stain(self, stain: str) -> list[TileRecord]:
        """The records of ``stain`` (every record of a folder: its stain is the one given)."""
        return [r for r in self.records if r.stain is None or r.stain == stain]


def _text(value: Any) -> str:
    """A manifest cell as text; a missing value (None, NaN) is empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def manifest_record(base: Path, row: Mapping[str, Any]) -> TileRecord:
    """The :class:`TileRecord` of one manifest row; ``base`` is the manifest's resolved folder
    (a row's ``path`` is relative to it)."""
    rel = _text(row["path"])
    return TileRecord(
        tile_id=str(row["tile_id"]),
        slide_id=str(row["slide_id"]),
        image_path=base / rel if rel else None,
        x0=float(row["x0"]),
        y0=float(row["y0"]),
        downsample=float(row["downsample"]),
        mpp=float(row["mpp"]),
        size=int(row["size_px"]),
        stain=str(row["stain"]),
        label=_text(row["label"]) or None,
        slide_path=_text(row["slide_path"]) or None,
    )


def manifest_tiles(manifest: str | Path, *, part: str | None = None) -> TileSource:
    """The tiles of a tile manifest; with ``part`` (``train`` or ``test``) only the rows of that
    part of its ``split`` column (:func:`histolib.tileset.split.split_rows`: all rows when the
    manifest has no such column).

    Raises
    ------
    ManifestError
        When the file is missing, not a histolib manifest, lacks columns, or its split column
        holds other values than train / test.
    """
    from histolib.tileset.manifest import read_manifest

    manifest = Path(manifest)
    gdf, meta = read_manifest(manifest)
    if part is not None:
        from histolib.tileset.split import split_rows

        gdf = split_rows(gdf, part, path=manifest)
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    rows = gdf[columns].to_dict(orient="records")
    base = manifest.resolve().parent
    return TileSource(manifest, [manifest_record(base, row) for row in rows], meta or {})


def folder_tiles(
    images: str | Path,
    *,
    masks: str | Path | None = None,
    mpp: float | None = None,
    stain: str | None = None,
) -> TileSource:
    """The tiles of a folder (rule of :mod:`histolib.tileset.folders`), with their masks.

    Parameters
    ----------
    images
        The folder of tiles (searched recursively; a tile's id is its file stem).
    masks
        A folder of masks, ``<stem>`` or ``<stem>_mask`` (any image suffix); every tile must
        have one.
    mpp
        um/px of the tiles, when known.
    stain
        The stain of every tile, when known.

    Raises
    ------
    InputError
        When a folder is missing, holds no image, two tiles share a stem, or a tile has no
        mask.
    """
    from histolib.tileset.folders import list_images, match_masks

    images = Path(images)
    files = list_images(images, exclude=masks)
    found = match_masks(files, masks) if masks is not None else {}
    records = [
        TileRecord(
            tile_id=path.stem,
            slide_id=path.stem,
            image_path=path,
            mpp=mpp,
            stain=stain,
            mask_path=found.get(path),
        )
        for path in files
    ]
    return TileSource(images, records)


def open_tiles(
    source: str | Path,
    *,
    masks: str | Path | None = None,
    mpp: float | None = None,
    stain: str | None = None,
    part: str | None = None,
) -> TileSource:
    """The tiles of ``source``: :func:`folder_tiles` for a folder, else :func:`manifest_tiles`.

    ``masks``, ``mpp`` and ``stain`` apply to a folder only (a manifest records its own);
    ``part`` to a manifest only (its split part, :func:`manifest_tiles`).

    Raises
    ------
    ManifestError
        When ``source`` is neither a folder nor a file, or not a readable manifest.
    InputError
        For a folder :func:`folder_tiles` refuses.
    """
    source = Path(source)
    if source.is_dir():
        return folder_tiles(source, masks=masks, mpp=mpp, stain=stain)
    if not source.is_file():
        raise ManifestError("no such tile manifest or folder", path=source)
    return manifest_tiles(source, part=part)
