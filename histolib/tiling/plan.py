"""Planning a slide (one process): tissue, candidate tiles, their labels, the selection.

The slide's pyramid level for the target mpp is chosen, a low-resolution image aligned with the
tile grid (``MASK_BLOCK`` mask px per tile side) is read and its tissue found
(:mod:`histolib.slide.tissue`); grid tiles with a tissue fraction >= ``min_tissue`` are the
candidates. They are labelled from the contours (exact polygon areas), or for IHC without
contours from DAB (the per-slide threshold here, the fractions when the tiles are read), and
the balanced / capped selection is drawn.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.slide.reader import LevelChoice, open_slide
from histolib.tiling.chunks import check_tile_folder, pixel_params, tile_mpp
from histolib.tiling.dab import dab_params, dab_threshold
from histolib.tiling.finish import qc_base
from histolib.tiling.parts import part_path, read_part
from histolib.tiling.slides import SlideJob

MASK_BLOCK = 16  # mask px per tile side (8 um/px for 256 px tiles at 0.5 um/px)
MAX_MASK_SIDE = 8192


@dataclass
class SlidePlan:
    """What the planning step of one slide found (sent back to the parent process)."""

    job: SlideJob
    info: dict[str, Any] = field(default_factory=dict)
    choice: LevelChoice | None = None
    slide_mpp: float = 0.0
    x0: Any = None  # int64 level-0 origins of the candidate tiles
    y0: Any = None
    tissue: Any = None  # float tissue fraction
    fraction: Any = None  # annotation or DAB fraction (nan when unlabelled)
    labels: Any = None  # object array of str, None while pending (IHC)
    selected: Any = None  # indices into the candidates; None while pending
    dab: tuple[float, float, int] | None = None  # (threshold, sigma, closing radius)
    contours: Any = None
    mask: Any = None
    qc_base: Any = None
    qc_downsample: float = 1.0
    mask_downsample: float = 1.0
    pictures_done: bool = False
    notes: list[str] = field(default_factory=list)
    part: Any = None  # the finished part's rows, when the slide was already done


@dataclass(frozen=True)
class _Grid:
    """The tile grid of a slide and the tissue-mask image aligned with it."""

    side: float  # level-0 px per tile side
    cols: int
    rows: int
    block: int  # mask px per tile side
    mask_downsample: float  # level-0 px per mask px
    low: Any = None  # the low-resolution RGB image the mask was found on
    cand_rows: Any = None  # grid row / column of each candidate
    cand_cols: Any = None


def tile_rng(seed: int, slide_id: str) -> Any:
    """The random generator of a slide's draws (the seed combined with the slide id)."""
    import numpy as np

    return np.random.default_rng([int(seed), zlib.crc32(slide_id.encode("utf-8"))])


def select_tiles(
    labels: Sequence[str],
    *,
    balance: bool,
    max_tiles: int | None,
    rng: Any,
) -> Any:
    """Indices of the tiles to keep, sorted.

    ``balance``: as many ``positive`` as ``negative`` tiles, the larger class drawn at random
    down to the size of the smaller (boundary and unlabelled tiles dropped); with ``max_tiles``
    at most ``max_tiles // 2`` of each. Without ``balance``, ``max_tiles`` draws that many tiles
    at random. Draws use ``rng``.
    """
    import numpy as np

    labels = np.asarray(labels, dtype=object)
    index = np.arange(len(labels))
    if balance:
        pos = index[labels == "positive"]
        neg = index[labels == "negative"]
        n = min(len(pos), len(neg))
        if max_tiles is not None:
            n = min(n, max_tiles // 2)
        chosen = np.concatenate(
            [rng.choice(pos, size=n, replace=False), rng.choice(neg, size=n, replace=False)]
        ).astype(np.int64)
    elif max_tiles is not None and len(index) > max_tiles:
        chosen = rng.choice(index, size=max_tiles, replace=False)
    else:
        chosen = index
    return np.sort(chosen)


def contour_labels(
    region: Any,
    x0: Any,
    y0: Any,
    side: float,
    *,
    positive_fraction: float,
) -> tuple[Any, Any]:
    """Exact fraction of each tile square inside ``region`` and the tile labels.

    Returns ``(fractions, labels)``: ``positive`` when fraction >= ``positive_fraction``,
    ``negative`` when the tile does not overlap the region (zero area), ``boundary`` otherwise.
    """
    import numpy as np
    import shapely

    n = len(x0)
    fractions = np.zeros(n, dtype=np.float64)
    if region is not None and not region.is_empty and n:
        boxes = shapely.box(x0, y0, x0 + side, y0 + side)
        shapely.prepare(region)
        hit = shapely.intersects(region, boxes)
        if hit.any():
            inter = shapely.intersection(boxes[hit], region)
            fractions[hit] = shapely.area(inter) / (side * side)
    fractions = np.clip(fractions, 0.0, 1.0)
    labels = np.where(
        fractions >= positive_fraction,
        "positive",
        np.where(fractions <= 0.0, "negative", "boundary"),
    ).astype(object)
    return fractions, labels


def plan_slide(job: SlideJob) -> SlidePlan:
    """Plan one slide: tissue, candidate tiles, labels, selection (runs in a worker).

    Returns a finished plan (``part`` set) when ``parts/<slide_id>.parquet`` exists with the
    same parameters.
    """
    options = job.options
    plan = SlidePlan(job=job)
    plan.part = read_part(part_path(job.out, job.slide_id), job.params())
    if plan.part is not None:
        return plan
    with open_slide(job.path, mpp=options.slide_mpp) as slide:
        plan.choice = slide.choose_level(options.mpp, mpp_tolerance=options.mpp_tolerance)
        plan.slide_mpp = slide.mpp
        grid = _find_candidates(plan, slide)
        rng = tile_rng(options.seed, job.slide_id)
        _label_candidates(plan, slide, grid, rng)
        if plan.labels is not None:
            plan.selected = select_tiles(
                plan.labels, balance=options.balance, max_tiles=options.max_tiles, rng=rng
            )
        if options.image_format != "none":
            folder = Path(job.out) / "tiles" / job.slide_id
            folder.mkdir(parents=True, exist_ok=True)
            check_tile_folder(folder, pixel_params(options, plan.choice, slide.mpp))
        plan.info = _slide_info(plan, slide, grid)
        plan.qc_base, plan.qc_downsample = qc_base(slide, grid.low, grid.mask_downsample)
        plan.mask_downsample = grid.mask_downsample
    return plan


def check_grid(side: float, cols: int, rows: int, *, path: Any) -> None:
    """Refuse a grid whose tiles cover less than one level-0 px (two tiles would round to one
    origin, hence one tile id and one file) or that has more positions than the ``grid_tiles``
    limit (the tissue mask grows with them)."""
    from histolib.core.limits import current, raise_hint
    from histolib.errors import SlideError

    if side < 1.0:
        raise SlideError(
            f"a tile would cover {side:.3g} level-0 px a side, less than one slide pixel: "
            "check --mpp and the slide's mpp",
            path=path,
        )
    limit = current().grid_tiles
    if cols * rows > limit:
        raise SlideError(
            f"the tile grid has {cols:,} x {rows:,} = {cols * rows:,} positions, over the limit "
            f"of {limit:,} (tiles of {side:.4g} level-0 px a side: check --mpp, --size and the "
            "slide's mpp); " + raise_hint("grid_tiles"),
            path=path,
        )


def _tile_grid(slide: Any, choice: LevelChoice, size: int) -> _Grid:
    """The grid of whole tiles over the slide and the mask scale (``MASK_BLOCK`` px a tile,
    halved while the mask would exceed ``MAX_MASK_SIDE``)."""
    side = size * choice.downsample  # level-0 px per tile side
    width0, height0 = slide.dimensions
    cols = math.floor(width0 / side + 1e-9)
    rows = math.floor(height0 / side + 1e-9)
    check_grid(side, cols, rows, path=slide.path)
    block = MASK_BLOCK
    while block > 4 and max(cols, rows, 1) * block > MAX_MASK_SIDE:
        block //= 2
    return _Grid(side=side, cols=cols, rows=rows, block=block, mask_downsample=side / block)


def _find_candidates(plan: SlidePlan, slide: Any) -> _Grid:
    """Find the tissue and the grid tiles with enough of it (``plan.x0/y0/tissue/mask``)."""
    import dataclasses

    import numpy as np

    from histolib.slide.tissue import block_fractions, tissue_mask

    options = plan.job.options
    assert plan.choice is not None
    grid = _tile_grid(slide, plan.choice, options.size)
    low = slide.read_level_image(grid.mask_downsample)
    mask = tissue_mask(
        low,
        mpp=slide.mpp * grid.mask_downsample,
        min_region_um2=options.min_region_um2,
        max_hole_um2=options.max_hole_um2,
        pale=options.stain == "ihc",
    )
    plan.mask = mask
    rows, cols = grid.rows, grid.cols
    fractions = block_fractions(mask, block=grid.block, rows=rows, cols=cols).ravel()
    grid_rows, grid_cols = np.divmod(np.arange(rows * cols, dtype=np.int64), max(cols, 1))
    keep = fractions >= options.min_tissue - 1e-9
    cand_rows, cand_cols = grid_rows[keep], grid_cols[keep]
    plan.x0 = np.round(cand_cols * grid.side).astype(np.int64)
    plan.y0 = np.round(cand_rows * grid.side).astype(np.int64)
    plan.tissue = fractions[keep].astype(np.float64)
    if rows == 0 or cols == 0:
        plan.notes.append(f"slide is smaller than one tile ({grid.side:.0f} level-0 px a side)")
    elif len(plan.x0) == 0:
        plan.notes.append(
            f"no tile has a tissue fraction >= {options.min_tissue} (the tissue mask "
            f"covers {float(mask.mean()):.1%} of the slide)"
        )
    return dataclasses.replace(grid, low=low, cand_rows=cand_rows, cand_cols=cand_cols)


def _label_candidates(plan: SlidePlan, slide: Any, grid: _Grid, rng: Any) -> None:
    """Label the candidates from the contours, or prepare the DAB labels (IHC), or leave them
    unlabelled (H&E without contours)."""
    import numpy as np

    job, options = plan.job, plan.job.options
    n = len(plan.x0)
    if job.annotation_path is not None:
        plan.contours = _load_contours(job, slide.dimensions, plan.notes)
        plan.fraction, plan.labels = contour_labels(
            plan.contours,
            plan.x0.astype(np.float64),
            plan.y0.astype(np.float64),
            grid.side,
            positive_fraction=options.positive_fraction,
        )
    elif options.stain == "ihc":
        _find_dab_threshold(plan, slide, grid, rng)
    else:
        plan.fraction = np.full(n, np.nan)
        plan.labels = np.full(n, "unlabelled", dtype=object)
    if job.missing_annotation_in is not None:
        plan.notes.append(
            f"no {job.slide_id}.geojson in {job.missing_annotation_in}: tiles "
            + ("labelled by DAB" if options.stain == "ihc" else "left unlabelled")
        )


def _find_dab_threshold(plan: SlidePlan, slide: Any, grid: _Grid, rng: Any) -> None:
    """Set ``plan.dab`` (the labels follow when the tiles are read), or, without DAB contrast,
    label every candidate negative."""
    import numpy as np

    options = plan.job.options
    assert plan.choice is not None
    sigma, radius = dab_params(tile_mpp(options.mpp, slide.mpp, plan.choice))
    threshold = dab_threshold(
        slide,
        plan.choice,
        x0=plan.x0,
        y0=plan.y0,
        size=options.size,
        mask=plan.mask,
        block=grid.block,
        mask_rows=grid.cand_rows,
        mask_cols=grid.cand_cols,
        sigma=sigma,
        rng=rng,
    )
    n = len(plan.x0)
    if threshold is None:
        plan.fraction = np.zeros(n, dtype=np.float64)
        plan.labels = np.full(n, "negative", dtype=object)
        if n:
            plan.notes.append("no DAB contrast in the tissue: every tile is negative")
    else:
        plan.dab = (threshold, sigma, radius)


def _slide_info(plan: SlidePlan, slide: Any, grid: _Grid) -> dict[str, Any]:
    """The slide's entry in the manifest metadata."""
    job, choice = plan.job, plan.choice
    assert choice is not None
    return {
        **slide.metadata(),
        "slide_mpp": slide.mpp,
        "level": choice.level,
        "downsample": choice.downsample,
        "resampled": choice.resample,
        "tile_mpp": tile_mpp(job.options.mpp, slide.mpp, choice),
        "grid": [grid.cols, grid.rows],
        "candidates": len(plan.x0),
        "mask_downsample": grid.mask_downsample,
        "mask_path": f"masks/{job.slide_id}.png",
        "qc_path": f"qc/{job.slide_id}.png",
        "annotation_path": job.annotation_path,
        "dab_threshold": None if plan.dab is None else plan.dab[0],
    }


def _load_contours(job: SlideJob, dimensions: tuple[int, int], notes: list[str]) -> Any:
    """The tumour region of the slide's annotation file (its notes added to ``notes``)."""
    import warnings

    from histolib.annotations.reading import read_annotations_report
    from histolib.annotations.regions import clip_to_slide, tumour_region

    path = job.annotation_path
    annotations, file_notes = read_annotations_report(path)
    annotations, clip_notes = clip_to_slide(annotations, dimensions, path=path)
    notes.extend(f"{path}: {note}" for note in file_notes + clip_notes)
    classes = job.options.positive_classes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        region = tumour_region(annotations, classes=classes)
    notes.extend(f"{path}: {w.message}" for w in caught)
    if region is None:
        wanted = "any class" if classes is None else "class " + ", ".join(classes)
        notes.append(f"{path}: no contour of {wanted}: every tile is negative")
    return region
