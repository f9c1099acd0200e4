"""Cell libraries: boxes of cancer and normal nuclei for the RoI discriminator.

:func:`build_library` runs :func:`histolib.library.detect.tile_cells` over a tile manifest or a
folder of tiles (:mod:`histolib.library.jobs`), in processes (:mod:`histolib.core.parallel`),
resumably, and writes the library (:func:`histolib.library.cellio.write_library`), a per-tile
count table and QC overlays.

H&E tiles of a manifest whose slide has no contour file have an unknown truth: they are not
built; a :class:`~histolib.tileset.contours.MissingContoursWarning` says how many, and the
library's metadata lists them (``skipped_tiles``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.jsonable import jsonable
from histolib.errors import ConfigError, InputError, OutputError
from histolib.library.detect import rows_to_frame, tile_cells
from histolib.library.jobs import (
    TileJob,
    absolute_paths,
    cache_path,
    folder_jobs,
    job_cells,
    load_cached,
    manifest_jobs,
    run_tile_job,
    safe_name,
)
from histolib.library.params import LibraryParams, resolve_params
from histolib.stain import STAINS

__all__ = ["build_library", "counts_path", "overlays_dir", "tile_cells", "work_dir"]


def counts_path(out: str | Path) -> Path:
    """The per-tile count table written beside library ``out``: ``<name>_tiles.csv``, named
    after the whole file name (``lib.parquet_tiles.csv``), so that ``lib.parquet`` and
    ``lib.geojson``, each under its own lock, never share a side file."""
    out = Path(out)
    return out.with_name(f"{out.name}_tiles.csv")


def overlays_dir(out: str | Path) -> Path:
    """The QC overlay folder beside library ``out``: ``<name>_overlays/`` (as
    :func:`counts_path`, after the whole file name)."""
    out = Path(out)
    return out.with_name(f"{out.name}_overlays")


def work_dir(out: str | Path) -> Path:
    """The hidden per-tile cache folder beside library ``out`` (resuming)."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def build_library(
    *,
    manifest: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    stain: str,
    out: str | Path,
    params: LibraryParams | None = None,
    preset: str = "authors",
    workers: int | None = None,
    scheduler: str | Path | None = None,
    overlays: int = 0,
    annotations: str | Path | None = None,
    positive_classes: list[str] | None = None,
    tile_mpp: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build a cell library from a tile manifest or a folder of tiles.

    Parameters
    ----------
    manifest
        A tile manifest (``histolib tile``); exclusive with ``images``.
    images, masks
        A folder of tiles (each its own slide, origin (0, 0), at ``tile_mpp``; the rule of
        :mod:`histolib.tileset.folders`) and, for H&E, a folder of masks named ``<stem>`` or
        ``<stem>_mask`` (non-zero = tumour).
    stain
        ``"he"`` or ``"ihc"``.
    out
        The library, ``.parquet`` (GeoParquet) or ``.geojson`` (FeatureCollection).
    params
        :class:`LibraryParams`; None = the ``preset`` (``authors`` or ``paper``).
    workers
        Processes (default: :func:`histolib.core.parallel.default_workers`); 1 runs inline.
    scheduler
        A Dask scheduler (``tcp://`` address or scheduler file): the tiles are processed by
        that cluster's workers instead of a local pool (:mod:`histolib.core.dask_cluster`; they
        must see the tiles, masks, contours and ``out`` at the same paths); exclusive with
        ``workers``.
    overlays
        Number of random tiles drawn as QC pictures into ``<name>_overlays/``.
    annotations
        H&E with a manifest: contours file or folder (default: what the manifest records).
        Tiles of a slide without a contour file are skipped, with a warning.
    positive_classes
        Annotation classes that are tumour (default: the manifest's, else every annotation).
    tile_mpp
        um/px of folder tiles (distances scale by ``params.mpp / tile_mpp``).
    seed
        Seed of the choice of overlay tiles.
    progress
        Show a Rich progress bar.

    Returns
    -------
    Path
        ``out``. Beside it: ``<name>_tiles.csv`` (counts a tile), the overlays, and the hidden
        cache ``.<name>.work/`` that makes a re-run skip finished tiles.
    """
    from histolib.core.atomic import ensure_writable_dir, write_text
    from histolib.core.dask_cluster import check_scheduler
    from histolib.library.cellio import write_library

    out = _check_options(
        stain=stain, manifest=manifest, images=images, out=out, overlays=overlays, workers=workers
    )
    check_scheduler(scheduler, workers)
    params = params or resolve_params(preset=preset)
    if manifest is not None:
        jobs, skipped = manifest_jobs(
            manifest,
            stain=stain,
            params=params,
            annotations=annotations,
            positive_classes=positive_classes,
        )
    else:
        if tile_mpp <= 0:
            raise ConfigError(f"--tile-mpp must be positive, not {tile_mpp}")
        jobs = folder_jobs(images, stain=stain, params=params, masks=masks, tile_mpp=tile_mpp)
        skipped = {}
    _check_unique(jobs)
    ensure_writable_dir(out.parent)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    jobs = [dataclasses.replace(j, cache_path=str(cache_path(work, j))) for j in jobs]
    if scheduler is not None:  # the workers' folder is not this one
        jobs = [absolute_paths(j) for j in jobs]
    results = _run_jobs(jobs, stain=stain, workers=workers, scheduler=scheduler, progress=progress)
    ordered = [results[j.tile_id] for j in jobs]
    meta = _library_meta(
        ordered,
        jobs,
        stain=stain,
        preset=preset,
        source=manifest if manifest is not None else images,
        masks=masks,
        params=params,
    )
    meta["skipped_tiles"] = skipped
    gdf = rows_to_frame([row for res in ordered for row in res["rows"]])
    write_library(gdf, out, params=meta)
    write_text(counts_path(out), _counts_csv(ordered))
    if overlays:
        write_overlays(jobs, out=out, count=overlays, seed=seed)
    return out


def _check_options(
    *,
    stain: str,
    manifest: str | Path | None,
    images: str | Path | None,
    out: str | Path,
    overlays: int,
    workers: int | None,
) -> Path:
    """Refuse a foreign stain, both or neither tile source, a library of another format, a
    negative overlay count or fewer than one worker; returns ``out`` as a path."""
    from histolib.library.cellio import LIBRARY_SUFFIXES

    if stain not in STAINS:
        raise ConfigError(f"stain must be 'he' or 'ihc', not {stain!r}")
    if (manifest is None) == (images is None):
        raise ConfigError("give either a tile manifest or --images DIR (not both)")
    out = Path(out)
    if out.suffix.lower() not in LIBRARY_SUFFIXES:
        raise OutputError("the library must end in .parquet or .geojson", path=out)
    if overlays < 0:
        raise ConfigError(f"--overlays must not be negative, not {overlays}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, not {workers}")
    return out


def _check_unique(jobs: list[TileJob]) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job.tile_id in seen:
            raise InputError(f"two tiles share the id {job.tile_id!r}", path=job.image_path)
        seen.add(job.tile_id)


def _run_jobs(
    jobs: list[TileJob],
    *,
    stain: str,
    workers: int | None,
    scheduler: str | Path | None = None,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """The result of every job by tile id: cached ones read, the others run in a pool (or on
    the Dask cluster of ``scheduler``)."""
    from histolib.core.dask_cluster import executor_pool
    from histolib.core.parallel import resolve_workers
    from histolib.core.progress import imap_processes, make_progress

    results: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        cached = load_cached(Path(job.cache_path))
        if cached is not None:
            results[job.tile_id] = cached
        else:
            todo.append(job)
    n_workers = max(1, min(resolve_workers(workers), len(todo) or 1))
    # the pool starts (forks) before the progress bar's thread exists
    pool_context = executor_pool(n_workers, scheduler=scheduler if todo else None)
    with pool_context as (pool, n_workers), make_progress(disable=not progress) as bar:
        task = bar.add_task(f"cells ({stain})", total=len(jobs), completed=len(results))
        for job, result in imap_processes(run_tile_job, todo, workers=n_workers, pool=pool):
            if isinstance(result, BaseException):
                raise result
            results[job.tile_id] = result
            bar.advance(task)
    return results


def _library_meta(
    ordered: list[dict[str, Any]],
    jobs: list[TileJob],
    *,
    stain: str,
    preset: str,
    source: str | Path | None,
    masks: str | Path | None,
    params: LibraryParams,
) -> dict[str, Any]:
    """The parameters recorded in the library's metadata."""
    return {
        "stain": stain,
        "preset": preset,
        "source": str(source),
        "masks": None if masks is None else str(masks),
        "n_tiles": len(jobs),
        "n_cancer": int(sum(r["n_cancer"] for r in ordered)),
        "n_normal": int(sum(r["n_normal"] for r in ordered)),
        "library": params.to_dict(),
        "distance_unit": f"px at {params.mpp} um/px; scaled by mpp / tile mpp for other tiles",
        "tile_mpps": sorted({j.tile_mpp for j in jobs if j.tile_mpp is not None}),
    }


def _counts_csv(results: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "tile_id",
            "slide_id",
            "n_cancer",
            "n_normal",
            "n_normal_blobs",
            "n_cancer_blobs",
            "n_cancer_blobs_in_mask",
            "image",
            "info",
        ]
    )
    for res in results:
        info = res.get("info", {})
        writer.writerow(
            [
                res["tile_id"],
                res["slide_id"],
                res["n_cancer"],
                res["n_normal"],
                info.get("n_normal_blobs", ""),
                info.get("n_cancer_blobs", ""),
                info.get("n_cancer_blobs_in_mask", ""),
                res.get("image", ""),
                json.dumps(jsonable(info), sort_keys=True),
            ]
        )
    return buf.getvalue()


def write_overlays(jobs: list[TileJob], *, out: str | Path, count: int, seed: int = 0) -> Path:
    """Draw ``count`` random tiles with their boxes (QC pictures) into ``<name>_overlays/``."""
    from histolib.library.overlays import draw_overlay

    folder = overlays_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(jobs), size=min(count, len(jobs)), replace=False).tolist())
    for index in chosen:
        rgb, cells = job_cells(jobs[index], details=True)
        draw_overlay(rgb, cells, path=folder / f"{safe_name(jobs[index].tile_id)}.png")
    return folder
