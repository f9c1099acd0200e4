"""Tiling whole-slide images: labelled tiles on a grid over the tissue, and their manifest.

:func:`tile_slides` is what ``histolib tile`` runs. Per slide:

1. **Plan** (one process): open the slide, choose the pyramid level for the target mpp, read a
   low-resolution image aligned with the tile grid (16 mask px per tile side), find the tissue
   (:mod:`histolib.slide.tissue`), keep grid tiles with a tissue fraction >= ``min_tissue``,
   label them from the contours (exact polygon areas) and draw the balanced / capped selection.
   For IHC without contours a DAB threshold is found once per slide: Otsu on the smoothed
   DAB image of the tissue pixels of up to 64 sampled tiles.
2. **Tiles** (every process): the tiles are cut into chunks of consecutive tiles in row-major
   order, so every worker, which opens the slide once and keeps it open, works on its own
   stripe; within a slide the work scales with workers, and several slides run side by side.
   A tile image is written to a temporary name and renamed, so an existing tile is complete
   and is not written again.
3. **Finish**: the tissue mask PNG and the QC picture are drawn by the main process (while the
   workers cut tiles, when the labels are known in advance), then the slide's rows go to
   ``parts/<slide_id>.parquet``, written last and atomically: its presence with the same
   parameters marks the slide done, and a re-run skips it. The manifest ``tiles.parquet`` is
   assembled from the parts of the slides given and of the slides tiled before into the same
   folder with the same options (a cohort grows slide by slide; a folder holding slides tiled
   with other options is refused), slides already listed first, new ones in the order given;
   a re-run yields the same manifest. Tile images of a slide are checked against
   ``tiles/<slide_id>/.params.json`` (scale, size, format): a folder made with other pixel
   parameters is refused, not mixed.

Output folder::

    OUT/tiles.parquet                       the manifest (histolib.tileset.manifest)
    OUT/tiles/<slide_id>/<tile_id>.png      the tiles (jpg with image_format="jpeg")
    OUT/masks/<slide_id>.png                tissue mask, 255 = tissue; scale in its text chunk
    OUT/qc/<slide_id>.png                   QC picture
    OUT/parts/<slide_id>.parquet            per-slide rows (resume bookkeeping)

Labels: with contours (any stain), ``positive`` when the fraction of the tile inside the
contours is >= ``positive_fraction`` (default 0.5), ``negative`` when the tile does not overlap
them, ``boundary`` otherwise. IHC without contours: ``positive`` when the DAB-positive fraction
of the tile (the authors' DAB mask, :func:`histolib.stain.dab_mask`, with the slide's
threshold) is >= ``dab_fraction`` (default 0.1), else ``negative``; that fraction is stored in
the ``annotation_fraction`` column. H&E without contours: ``unlabelled``.

Modules: :mod:`~histolib.tiling.options` (the options), :mod:`~histolib.tiling.slides` (inputs,
one job per slide), :mod:`~histolib.tiling.plan` (step 1), :mod:`~histolib.tiling.dab` (IHC
labels), :mod:`~histolib.tiling.chunks` (step 2), :mod:`~histolib.tiling.finish` and
:mod:`~histolib.tiling.parts` (step 3), :mod:`~histolib.tiling.scheduler` (the stages of every
slide on one pool); this module is the entry point.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from histolib.core.options import strict_values
from histolib.errors import ConfigError, HistolibError
from histolib.tiling.options import TilingOptions
from histolib.tiling.parts import cohort_parts
from histolib.tiling.slides import check_annotations, collect_slides, make_jobs

__all__ = ["TilingError", "collect_slides", "slide_notes", "tile_slides"]


class TilingError(HistolibError):
    """Some slides could not be tiled; the others were (see ``failures`` and ``manifest``).

    Attributes
    ----------
    failures : dict
        Slide path -> one-line error message.
    manifest : Path or None
        The manifest of the slides that succeeded, or None when none did.
    total : int
        How many slides were given.
    """

    def __init__(self, failures: dict[str, str], *, manifest: Path | None, total: int) -> None:
        self.failures = dict(failures)
        self.manifest = manifest
        self.total = total
        done = "no manifest written" if manifest is None else f"the others are in {manifest}"
        super().__init__(f"{len(failures)} of {total} slide(s) failed; {done}")

    def __reduce__(self) -> Any:
        return (_rebuild_tiling_error, (self.failures, self.manifest, self.total))


def _rebuild_tiling_error(failures: dict[str, str], manifest: Path | None, total: int) -> Any:
    return TilingError(failures, manifest=manifest, total=total)


def tile_slides(
    slides: str | Path | Iterable[str | Path],
    *,
    out: str | Path,
    options: TilingOptions | None = None,
    annotations: str | Path | None = None,
    workers: int | None = None,
    allow_many_workers: bool = False,
    scheduler: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Tile slides into labelled tiles on a grid over their tissue; write the manifest.

    ``tile_slides(slides, out="run", options=TilingOptions(stain="ihc", size=512))``: the
    options (stain, scale, tile size, thresholds, image format...) and their defaults and
    ranges are the fields of :class:`TilingOptions`, documented there, once.

    Parameters
    ----------
    slides
        Slide files and/or folders of slides (scanned, not recursively).
    out
        Output folder (created): ``tiles.parquet``, ``tiles/``, ``masks/``, ``qc/``, ``parts/``.
    options
        The tiling options (None: ``TilingOptions()``, every default).
    annotations
        A QuPath GeoJSON file (one slide only) or a folder holding ``<slide_id>.geojson``
        (``.json``, ``.geojson.gz``) per slide; a slide without a file there is unlabelled.
    workers
        Processes; None = :func:`histolib.core.parallel.default_workers`. 1 runs everything
        in this process. At most :func:`histolib.core.parallel.max_workers`...
    allow_many_workers
        ...unless this is true.
    scheduler
        A Dask scheduler (``tcp://`` address or scheduler file): the slides are planned and
        cut by that cluster's workers instead of a local pool (:mod:`histolib.core.dask_cluster`;
        they must see ``slides`` and ``out`` at the same paths); exclusive with ``workers``.
    progress
        Show a Rich progress bar on stderr.

    Returns
    -------
    Path
        ``out/tiles.parquet``.

    Raises
    ------
    InputError, ConfigError, OutputError
        Bad paths or options (before any work).
    SlideError, AnnotationError
        The only slide given could not be tiled.
    TilingError
        Some of several slides failed; the others were tiled and are in the manifest
        (``exc.manifest``; None when every slide failed).
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib.core.dask_cluster import check_scheduler, executor_pool
    from histolib.core.parallel import check_workers, default_workers
    from histolib.core.progress import make_progress
    from histolib.tiling.scheduler import run_jobs, worker_imports

    options = TilingOptions() if options is None else options
    if not isinstance(options, TilingOptions):
        raise ConfigError(f"options must be a TilingOptions, not {type(options).__name__}")
    options.validate(labelled=annotations is not None or options.stain == "ihc")
    check_scheduler(scheduler, workers)
    check_workers(workers, allow_many=allow_many_workers)
    workers = default_workers() if workers is None else workers
    paths = collect_slides(slides)
    annotation_root = check_annotations(annotations, slides=len(paths))
    out = ensure_writable_dir(out)
    jobs = make_jobs(paths, annotations=annotation_root, out=out, options=options)
    others = cohort_parts(out, [job.slide_id for job in jobs], strict_values(options))
    pool = executor_pool(workers, scheduler=scheduler, initializer=worker_imports)
    with pool as (executor, n_workers), make_progress(disable=not progress) as bar:
        results, failures = run_jobs(jobs, workers=n_workers, progress=bar, executor=executor)
    manifest_path = out / "tiles.parquet"
    if results:
        _write_manifest(manifest_path, jobs, results, options, others)
    if failures:
        if len(jobs) == 1:
            raise failures[jobs[0].index]
        messages = {jobs[i].path: _one_line(exc) for i, exc in sorted(failures.items())}
        raise TilingError(messages, manifest=manifest_path if results else None, total=len(jobs))
    return manifest_path


def _write_manifest(
    path: Path,
    jobs: list[Any],
    results: dict[int, dict[str, Any]],
    options: TilingOptions,
    others: dict[str, dict[str, Any]],
) -> None:
    """The manifest of the slides that succeeded, with their info, and of the slides finished
    before in the same folder (``others``): those already listed keep their place, new ones
    follow in the order given."""
    from histolib.tileset.manifest import write_manifest
    from histolib.tiling.parts import assemble, manifest_slides

    done = {job.slide_id: results[job.index] for job in jobs if job.index in results}
    slides = manifest_slides(path.parent, others, done)
    slides_info = {sid: {**part["info"], "notes": part["notes"]} for sid, part in slides.items()}
    params = {**options.as_params(), "slides": slides_info}
    write_manifest(assemble(list(slides.values())), path, params=params)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]


def slide_notes(manifest: str | Path) -> dict[str, list[str]]:
    """The notes (skipped objects, empty classes...) recorded per slide in a manifest."""
    from histolib.tileset.manifest import read_manifest

    _gdf, meta = read_manifest(manifest)
    slides = meta.get("params", {}).get("slides", {})
    return {sid: list(info.get("notes", [])) for sid, info in slides.items()}
