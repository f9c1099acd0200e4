"""The per-tile work of a cell library: one :class:`TileJob` a tile, run in a worker, cached.

Jobs come from a tile manifest (:func:`manifest_jobs`: H&E masks rasterised from the slide's
contours, :mod:`histolib.tileset.contours`) or a folder of tiles (:func:`folder_jobs`: H&E masks
from a mask folder, :mod:`histolib.tileset.folders`). :func:`run_tile_job` reads the tile (its
image, or for a manifest written with ``--format none`` its region of the slide,
:mod:`histolib.tileset.pixels`: each worker process opens a slide once), detects its cells
and writes the result to a JSON file keyed on everything the result depends on
(:func:`cache_path`), so a re-run skips it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.jsonable import jsonable
from histolib.errors import InputError
from histolib.library.detect import TileCells, library_rows, tile_cells
from histolib.library.params import LibraryParams, params_from_dict
from histolib.tileset.sources import TileRecord


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to process one tile (picklable).

    ``image_path`` is empty for a tile without an image: it is read from ``slide_path``.
    """

    tile_id: str
    slide_id: str
    image_path: str
    stain: str
    params: dict[str, Any]
    x0: float = 0.0
    y0: float = 0.0
    downsample: float = 1.0
    tile_mpp: float | None = None
    expected_size: int | None = None
    mask_path: str | None = None
    annotation_path: str | None = None
    classes: tuple[str, ...] | None = None
    cache_path: str = ""
    slide_path: str | None = None


def _job(
    record: TileRecord,
    *,
    stain: str,
    params: dict[str, Any],
    annotation_path: Path | None = None,
    classes: tuple[str, ...] | None = None,
) -> TileJob:
    return TileJob(
        tile_id=record.tile_id,
        slide_id=record.slide_id,
        image_path="" if record.image_path is None else str(record.image_path),
        stain=stain,
        params=params,
        x0=record.x0,
        y0=record.y0,
        downsample=record.downsample,
        tile_mpp=record.mpp,
        expected_size=record.size,
        mask_path=None if record.mask_path is None else str(record.mask_path),
        annotation_path=None if annotation_path is None else str(annotation_path),
        classes=classes,
        slide_path=record.slide_path,
    )


def absolute_paths(job: TileJob) -> TileJob:
    """``job`` with its file paths made absolute (for workers whose folder is not this one)."""

    def absolute(path: str | None) -> str | None:
        return None if not path else os.path.abspath(path)

    return dataclasses.replace(
        job,
        image_path=os.path.abspath(job.image_path),
        mask_path=absolute(job.mask_path),
        annotation_path=absolute(job.annotation_path),
        cache_path=absolute(job.cache_path) or "",
    )


def manifest_jobs(
    manifest: str | Path,
    *,
    stain: str,
    params: LibraryParams,
    annotations: str | Path | None = None,
    positive_classes: list[str] | None = None,
) -> tuple[list[TileJob], dict[str, int]]:
    """One :class:`TileJob` a manifest tile of ``stain``, and the H&E tiles skipped.

    H&E masks come from the slide's contours (:mod:`histolib.tileset.contours`): ``annotations``
    (a file, or a folder with ``<slide_id>.geojson``) or else what ``histolib tile`` recorded
    in the manifest. A slide without a contour file has an unknown truth: its tiles are not
    built; they are counted in a :class:`~histolib.tileset.contours.MissingContoursWarning` and
    returned as ``{slide_id: n_tiles}``. Positive classes: ``positive_classes``,
    else the manifest's, else every annotation.

    Raises
    ------
    InputError
        When the manifest holds no tile of ``stain``, a tile has neither its image nor its
        slide, H&E tiles have no contour source, or no H&E tile's slide has a contour file.
    """
    from histolib.tileset.contours import (
        MissingContoursWarning,
        contour_source,
        none_left_error,
        require_contours,
        skipped_message,
        split_by_contours,
    )
    from histolib.tileset.pixels import check_readable
    from histolib.tileset.sources import manifest_tiles

    manifest = Path(manifest)
    tiles = manifest_tiles(manifest)
    if not tiles.records:
        raise InputError("the manifest holds no tiles", path=manifest)
    records = tiles.of_stain(stain)
    if not records:
        raise InputError(f"the manifest holds no {stain} tiles", path=manifest)
    as_dict = params.to_dict()
    if stain != "he":
        check_readable(records, source=manifest)
        return [_job(r, stain=stain, params=as_dict) for r in records], {}
    contours = contour_source(
        manifest, tiles.meta, annotations=annotations, positive_classes=positive_classes
    )
    require_contours(contours, path=manifest)
    check_readable(records, source=manifest)
    kept, skipped = split_by_contours(records, contours)
    if not kept:
        raise none_left_error(contours, path=manifest)
    if skipped:
        warnings.warn(skipped_message(skipped, contours), MissingContoursWarning, stacklevel=3)
    jobs = [
        _job(r, stain=stain, params=as_dict, annotation_path=found, classes=contours.classes)
        for r, found in kept
    ]
    return jobs, skipped


def folder_jobs(
    images: str | Path,
    *,
    stain: str,
    params: LibraryParams,
    masks: str | Path | None = None,
    tile_mpp: float = 0.5,
) -> list[TileJob]:
    """One :class:`TileJob` a tile of the folder ``images`` (each its own slide, origin (0, 0)).

    The folder rule is :mod:`histolib.tileset.folders` (recursive, any image suffix); H&E tiles
    need a mask ``<stem>`` or ``<stem>_mask`` in ``masks`` (non-zero = tumour).

    Raises
    ------
    InputError
        When a folder is missing or empty, H&E tiles have no mask folder, or a tile no mask.
    """
    from histolib.tileset.folders import list_images
    from histolib.tileset.sources import folder_tiles

    if stain == "he" and masks is None:
        list_images(images)  # a missing or empty folder is named first
        raise InputError("H&E tiles need their tumour masks: give --masks DIR", path=images)
    tiles = folder_tiles(images, masks=masks if stain == "he" else None, mpp=tile_mpp)
    as_dict = params.to_dict()
    return [_job(r, stain=stain, params=as_dict) for r in tiles.records]


def job_mask(job: TileJob, shape: tuple[int, int]) -> np.ndarray | None:
    """The tumour mask of an H&E job (its mask image, or its slide's contours rasterised at
    pixel centres); None for IHC."""
    from histolib.tileset.contours import tile_mask
    from histolib.tileset.images import read_mask

    if job.stain != "he":
        return None
    if job.mask_path is not None:
        return read_mask(job.mask_path, shape=shape)
    if job.annotation_path is None:
        return None  # tile_cells refuses an H&E tile without its mask
    with warnings.catch_warnings():  # contour notes are the tiling's to report, not each tile's
        warnings.simplefilter("ignore")
        return tile_mask(
            job.annotation_path,
            job.classes,
            x0=job.x0,
            y0=job.y0,
            downsample=job.downsample,
            shape=shape,
        )


def job_rgb(job: TileJob) -> np.ndarray:
    """A job's tile: its image, or its region of its slide (:mod:`histolib.tileset.pixels`,
    the pixels ``histolib tile --format png`` would have written)."""
    from histolib.tileset.images import read_rgb
    from histolib.tileset.pixels import read_slide_tile

    if job.image_path or job.slide_path is None or job.expected_size is None:
        return read_rgb(job.image_path, expected_size=job.expected_size)
    return read_slide_tile(
        job.slide_path,
        x0=job.x0,
        y0=job.y0,
        size=job.expected_size,
        mpp=float(job.tile_mpp),  # type: ignore[arg-type]
        downsample=job.downsample,
    )


def job_cells(job: TileJob, *, details: bool = False) -> tuple[np.ndarray, TileCells]:
    """Read a job's tile and mask and detect its cells; returns ``(rgb, cells)``."""
    params = params_from_dict(job.params).for_tile_mpp(job.tile_mpp)
    rgb = job_rgb(job)
    mask = job_mask(job, (int(rgb.shape[0]), int(rgb.shape[1])))
    return rgb, tile_cells(rgb, stain=job.stain, mask=mask, params=params, details=details)


def run_tile_job(job: TileJob) -> dict[str, Any]:
    """Process one tile: read, detect, write the cached result; returns that result."""
    from histolib.core.atomic import write_text

    _, cells = job_cells(job)
    rows = library_rows(cells, job)
    result = jsonable(
        {
            "tile_id": job.tile_id,
            "slide_id": job.slide_id,
            "image": job.image_path,
            "n_cancer": cells.n_cancer,
            "n_normal": cells.n_normal,
            "info": cells.info,
            "rows": rows,
        }
    )
    if job.cache_path:
        write_text(job.cache_path, json.dumps(result))
    return result


# --------------------------------------------------------------------------------------
# per-tile cache


def _file_stamp(path: str | Path | None) -> str:
    if path is None:
        return "-"
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    return "missing"


def cache_path(work: Path, job: TileJob) -> Path:
    """The cache file of ``job`` in ``work``: named for the tile, keyed on its inputs (tile,
    mask and contour files' size and modification time, parameters, geometry)."""
    key = json.dumps(
        [
            job.tile_id,
            job.stain,
            job.params,
            job.tile_mpp,
            job.x0,
            job.y0,
            job.downsample,
            _file_stamp(job.image_path or job.slide_path),
            _file_stamp(job.mask_path),
            _file_stamp(job.annotation_path),
            job.classes,
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return work / f"{safe_name(job.tile_id)[:80]}-{digest}.json"


def safe_name(tile_id: str) -> str:
    """``tile_id`` as a file name (:func:`histolib.core.names.sanitize_name`)."""
    from histolib.core.names import sanitize_name

    return sanitize_name(tile_id)


def load_cached(path: Path) -> dict[str, Any] | None:
    """A job's cached result; None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "rows" in data else None
