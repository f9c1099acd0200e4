"""Tiling whole-slide images: labelled tiles on a grid over the tissue, and their manifest.

:func:`tile_slides` is what ``histolib tile`` runs. Per slide:

1. **Plan** (one process): open the slide, choose the pyramid level for the target mpp, read a
   low-resolution image aligned with the tile grid (16 mask px per tile side), find the tissue
   (:mod:`histolib.slide.tissue`), keep grid tiles with a tissue fraction >= ``min_tissue``, label
   them
   from the contours (exact polygon areas) and draw the balanced / capped selection.
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
   assembled from the parts of the slides given, in the order given; a re-run yields the same
   manifest. Tile images of a slide are checked against ``tiles/<slide_id>/.params.json``
   (scale, size, format): a folder made with other pixel parameters is refused, not mixed.

Output folder::

    OUT/tiles.parquet                       the manifest (histolib.tiles.manifest)
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
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError, HistolibError, InputError
from histolib.slide.reader import (
    DEFAULT_MPP_TOLERANCE,
    LevelChoice,
    check_mpp,
    is_slide_file,
    open_slide,
    slide_id_from_path,
)
from histolib.slide.tissue import DEFAULT_MAX_HOLE_UM2, DEFAULT_MIN_REGION_UM2

IMAGE_FORMATS = {"png": "png", "jpeg": "jpg", "none": ""}
PART_META_KEY = b"histolib-part"
PARAMS_FILE = ".params.json"
MASK_BLOCK = 16  # mask px per tile side (8 um/px for 256 px tiles at 0.5 um/px)
MAX_MASK_SIDE = 8192
QC_MAX_SIDE = 2048
QC_MIN_SIDE = 1024
DAB_SAMPLE_TILES = 64
AUTHORS_MPP = 0.5  # the resolution at which the authors' DAB-mask parameters are given


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


# --------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class TilingOptions:
    """Every parameter of a tiling run (recorded in the manifest metadata)."""

    stain: str = "he"
    mpp: float = 0.5
    size: int = 256
    slide_mpp: float | None = None
    min_tissue: float = 0.5
    balance: bool = False
    max_tiles: int | None = None
    seed: int = 0
    image_format: str = "png"
    positive_classes: tuple[str, ...] | None = None
    positive_fraction: float = 0.5
    dab_fraction: float = 0.1
    png_compression: int = 1
    jpeg_quality: int = 90
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    min_region_um2: float = DEFAULT_MIN_REGION_UM2
    max_hole_um2: float = DEFAULT_MAX_HOLE_UM2

    def validate(self, *, labelled: bool) -> None:
        """Raise ConfigError for an invalid option or combination."""
        if self.stain not in ("he", "ihc"):
            raise ConfigError(f"--stain must be he or ihc, got {self.stain!r}")
        check_mpp(self.mpp, what="--mpp")
        if not isinstance(self.size, int) or self.size < 8:
            raise ConfigError(f"--size must be an integer >= 8 px, got {self.size!r}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"--min-tissue must be in [0, 1], got {self.min_tissue}")
        if not 0.0 < self.positive_fraction <= 1.0:
            raise ConfigError(
                f"--positive-fraction must be in (0, 1], got {self.positive_fraction}"
            )
        if not 0.0 < self.dab_fraction <= 1.0:
            raise ConfigError(f"--dab-fraction must be in (0, 1], got {self.dab_fraction}")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ConfigError(f"--max-tiles must be >= 1, got {self.max_tiles}")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--format must be png, jpeg or none, got {self.image_format!r}")
        if not 0 <= self.png_compression <= 9:
            raise ConfigError(f"--png-compression must be 0..9, got {self.png_compression}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.mpp_tolerance < 0.5:
            raise ConfigError(f"--mpp-tolerance must be in [0, 0.5), got {self.mpp_tolerance}")
        if self.min_region_um2 < 0 or self.max_hole_um2 < 0:
            raise ConfigError("tissue areas (--min-region-area, --max-hole-area) must be >= 0")
        if self.balance and not labelled:
            raise ConfigError(
                "--balance needs labels: give --annotations, or --stain ihc (labels from DAB)"
            )

    def as_params(self) -> dict[str, Any]:
        params = asdict(self)
        params["positive_classes"] = (
            None if self.positive_classes is None else list(self.positive_classes)
        )
        return params


@dataclass(frozen=True)
class SlideJob:
    """One slide of a run: where it is, its annotation file, where its outputs go."""

    index: int
    path: str
    slide_id: str
    annotation_path: str | None
    out: str
    options: TilingOptions
    # The --annotations folder when it holds no file for this slide (a note says so).
    missing_annotation_in: str | None = None

    def params(self) -> dict[str, Any]:
        """The parameters that determine this slide's rows (a finished part must match)."""
        try:
            file_size = Path(self.path).stat().st_size
        except OSError:
            file_size = None
        return {
            "slide_path": self.path,
            "slide_size_bytes": file_size,
            "annotation_path": self.annotation_path,
            "annotation_size_bytes": (
                Path(self.annotation_path).stat().st_size if self.annotation_path else None
            ),
            **self.options.as_params(),
        }


# --------------------------------------------------------------------------------------
# inputs


def collect_slides(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand slide files and folders (scanned, not recursively, for slide extensions).

    Raises
    ------
    InputError
        A path that does not exist, or a folder without slides.
    ConfigError
        Two slides with the same slide id.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    slides: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_slide_file(p))
            if not found:
                raise InputError("folder holds no slides (.svs, .tif, .ndpi, .png...)", path=path)
            slides.extend(found)
        elif path.exists():
            slides.append(path)
        else:
            raise InputError("no such file or folder", path=path)
    if not slides:
        raise InputError("no slides given")
    seen: dict[str, Path] = {}
    unique: list[Path] = []
    for slide in slides:
        resolved = slide.resolve()
        sid = slide_id_from_path(slide)
        if sid in seen:
            if seen[sid] == resolved:
                continue
            raise ConfigError(f"two slides share the slide id {sid!r}: {seen[sid]} and {slide}")
        seen[sid] = resolved
        unique.append(resolved)
    return unique


def _annotation_for(annotations: Path | None, slide_id: str) -> Path | None:
    if annotations is None:
        return None
    from histolib.annotations.reading import find_annotation_file

    return find_annotation_file(annotations, slide_id)


# --------------------------------------------------------------------------------------
# per-slide plan


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


def _tile_ids(slide_id: str, x0: Any, y0: Any, size: int) -> list[str]:
    from histolib.tiles.manifest import tile_id

    return [tile_id(slide_id, x, y, size) for x, y in zip(x0.tolist(), y0.tolist(), strict=True)]


def _rng(seed: int, slide_id: str) -> Any:
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


def _tile_mpp(target: float, slide_mpp: float, choice: LevelChoice) -> float:
    """The true mpp of the tiles: the target when resampled to it, else the level's own."""
    return float(target) if choice.resample else slide_mpp * choice.downsample


def _pixel_params(job: SlideJob, choice: LevelChoice, slide_mpp: float) -> dict[str, Any]:
    options = job.options
    params: dict[str, Any] = {
        "size": options.size,
        "level": choice.level,
        "downsample": choice.downsample,
        "tile_mpp": _tile_mpp(options.mpp, slide_mpp, choice),
        "format": options.image_format,
    }
    if options.image_format == "jpeg":
        params["jpeg_quality"] = options.jpeg_quality
    return json.loads(json.dumps(params))


def _check_tile_folder(folder: Path, params: dict[str, Any]) -> None:
    """Make sure ``folder`` holds (or will hold) tiles made with ``params``; clean temp files."""
    from histolib.core.atomic import TMP_PREFIX, write_text

    marker = folder / PARAMS_FILE
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != params:
            raise ConfigError(
                f"holds tiles made with other parameters ({previous}); use another --out or "
                "delete that folder",
                path=folder,
            )
    else:
        write_text(marker, json.dumps(params, sort_keys=True))
    for stale in folder.glob(TMP_PREFIX + "*"):
        try:
            stale.unlink()
        except OSError:
            pass


def _dab_params(tile_mpp: float) -> tuple[float, int]:
    """The authors' DAB-mask sigma and closing radius (given at 0.5 um/px) at ``tile_mpp``."""
    scale = AUTHORS_MPP / tile_mpp
    return 1.0 * scale, max(1, round(9 * scale))


def dab_fraction(rgb: Any, *, threshold: float, sigma: float, closing_radius: int) -> float:
    """Fraction of a tile's pixels in the authors' DAB mask at a fixed (per-slide) threshold.

    The mask is :func:`histolib.stain.dab_mask` without its "no stain" rule (which empties a
    tile whose mean DAB value is high, a guard needed by a per-tile Otsu threshold but not by a
    per-slide one: it would empty tiles that are half tumour).
    """
    from histolib.stain import dab_mask, separate

    mask = dab_mask(
        separate(rgb).d,
        sigma=sigma,
        closing_radius=closing_radius,
        threshold=threshold,
        no_stain_mean=math.inf,
    )
    return float(mask.mean())


def dab_threshold(
    slide: Any,
    choice: LevelChoice,
    *,
    x0: Any,
    y0: Any,
    size: int,
    mask: Any,
    block: int,
    mask_rows: Any,
    mask_cols: Any,
    sigma: float,
    rng: Any,
    sample: int = DAB_SAMPLE_TILES,
) -> float | None:
    """Otsu threshold of the smoothed DAB image over the tissue pixels of sampled tiles.

    Up to ``sample`` candidate tiles are drawn with ``rng``; each is read at the tile scale,
    separated (:func:`histolib.stain.separate`), smoothed with ``sigma`` as the DAB mask is,
    and its pixels under the tissue mask pooled. None when there is no tissue.
    """
    import numpy as np
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from histolib.stain import separate

    n = len(x0)
    if n == 0:
        return None
    picks = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    inside = (np.arange(size) * block) // size
    pooled = []
    for i in picks.tolist():
        rgb = np.asarray(slide.read_pil(float(x0[i]), float(y0[i]), size, size, choice))
        d = ndimage.gaussian_filter(separate(rgb).d.astype(np.float32), sigma=sigma)
        r, c = int(mask_rows[i]), int(mask_cols[i])
        block_mask = mask[r * block : (r + 1) * block, c * block : (c + 1) * block]
        if block_mask.shape != (block, block):
            continue
        tissue_px = block_mask[np.ix_(inside, inside)]
        pooled.append(d[tissue_px])
    values = np.concatenate(pooled) if pooled else np.empty(0, np.float32)
    if values.size < 16 or float(values.max() - values.min()) < 1e-6:
        return None
    return float(threshold_otsu(values))


def plan_slide(job: SlideJob) -> SlidePlan:
    """Plan one slide: tissue, candidate tiles, labels, selection (runs in a worker).

    Returns a finished plan (``part`` set) when ``parts/<slide_id>.parquet`` exists with the
    same parameters.
    """
    import numpy as np

    from histolib.slide.tissue import block_fractions, tissue_mask

    out = Path(job.out)
    options = job.options
    plan = SlidePlan(job=job)
    part = _read_part(out / "parts" / f"{job.slide_id}.parquet", job.params())
    if part is not None:
        plan.part = part
        return plan

    with open_slide(job.path, mpp=options.slide_mpp) as slide:
        choice = slide.choose_level(options.mpp, mpp_tolerance=options.mpp_tolerance)
        plan.choice = choice
        plan.slide_mpp = slide.mpp
        side = options.size * choice.downsample  # level-0 px per tile side
        width0, height0 = slide.dimensions
        cols = math.floor(width0 / side + 1e-9)
        rows = math.floor(height0 / side + 1e-9)
        block = MASK_BLOCK
        while block > 4 and max(cols, rows, 1) * block > MAX_MASK_SIDE:
            block //= 2
        mask_ds = side / block
        low = slide.read_level_image(mask_ds)
        mask = tissue_mask(
            low,
            mpp=slide.mpp * mask_ds,
            min_region_um2=options.min_region_um2,
            max_hole_um2=options.max_hole_um2,
            pale=options.stain == "ihc",
        )
        plan.mask = mask
        fractions = block_fractions(mask, block=block, rows=rows, cols=cols).ravel()
        grid_rows, grid_cols = np.divmod(np.arange(rows * cols, dtype=np.int64), max(cols, 1))
        keep = fractions >= options.min_tissue - 1e-9
        cand_rows, cand_cols = grid_rows[keep], grid_cols[keep]
        plan.x0 = np.round(cand_cols * side).astype(np.int64)
        plan.y0 = np.round(cand_rows * side).astype(np.int64)
        plan.tissue = fractions[keep].astype(np.float64)
        n = len(plan.x0)
        if rows == 0 or cols == 0:
            plan.notes.append(f"slide is smaller than one tile ({side:.0f} level-0 px a side)")
        elif n == 0:
            plan.notes.append(
                f"no tile has a tissue fraction >= {options.min_tissue} (the tissue mask "
                f"covers {float(mask.mean()):.1%} of the slide)"
            )
        rng = _rng(options.seed, job.slide_id)
        tile_mpp = _tile_mpp(options.mpp, slide.mpp, choice)

        # labels
        if job.annotation_path is not None:
            plan.contours = _load_contours(job, slide.dimensions, plan.notes)
            plan.fraction, plan.labels = contour_labels(
                plan.contours,
                plan.x0.astype(np.float64),
                plan.y0.astype(np.float64),
                side,
                positive_fraction=options.positive_fraction,
            )
        elif options.stain == "ihc":
            sigma, radius = _dab_params(tile_mpp)
            threshold = dab_threshold(
                slide,
                choice,
                x0=plan.x0,
                y0=plan.y0,
                size=options.size,
                mask=mask,
                block=block,
                mask_rows=cand_rows,
                mask_cols=cand_cols,
                sigma=sigma,
                rng=rng,
            )
            if threshold is None:
                plan.fraction = np.zeros(n, dtype=np.float64)
                plan.labels = np.full(n, "negative", dtype=object)
                if n:
                    plan.notes.append("no DAB contrast in the tissue: every tile is negative")
            else:
                plan.dab = (threshold, sigma, radius)
        else:
            plan.fraction = np.full(n, np.nan)
            plan.labels = np.full(n, "unlabelled", dtype=object)
        if job.missing_annotation_in is not None:
            plan.notes.append(
                f"no {job.slide_id}.geojson in {job.missing_annotation_in}: tiles "
                + ("labelled by DAB" if options.stain == "ihc" else "left unlabelled")
            )
        if plan.labels is not None:
            plan.selected = select_tiles(
                plan.labels, balance=options.balance, max_tiles=options.max_tiles, rng=rng
            )

        if options.image_format != "none":
            folder = out / "tiles" / job.slide_id
            folder.mkdir(parents=True, exist_ok=True)
            _check_tile_folder(folder, _pixel_params(job, choice, slide.mpp))

        plan.info = {
            **slide.metadata(),
            "slide_mpp": slide.mpp,
            "level": choice.level,
            "downsample": choice.downsample,
            "resampled": choice.resample,
            "tile_mpp": tile_mpp,
            "grid": [cols, rows],
            "candidates": n,
            "mask_downsample": mask_ds,
            "mask_path": f"masks/{job.slide_id}.png",
            "qc_path": f"qc/{job.slide_id}.png",
            "annotation_path": job.annotation_path,
            "dab_threshold": None if plan.dab is None else plan.dab[0],
        }
        plan.qc_base, plan.qc_downsample = _qc_base(slide, low, mask_ds)
        plan.mask_downsample = mask_ds
    return plan


def _qc_base(slide: Any, low: Any, low_downsample: float) -> tuple[Any, float]:
    """The QC background: the mask image, or a larger thumbnail when the mask image is under
    QC_MIN_SIDE px. Returns ``(rgb, level-0 px per px)``; :func:`_write_pictures` shrinks it."""
    longest = max(low.shape[:2])
    if longest < QC_MIN_SIDE and max(slide.dimensions) > longest:
        target = min(QC_MIN_SIDE, max(slide.dimensions))
        downsample = max(slide.dimensions) / target
        return slide.read_level_image(downsample), downsample
    return low, low_downsample


def _load_contours(job: SlideJob, dimensions: tuple[int, int], notes: list[str]) -> Any:
    import warnings

    from histolib.annotations.reading import read_annotations_report
    from histolib.annotations.regions import check_inside, tumour_region

    path = job.annotation_path
    annotations, file_notes = read_annotations_report(path)
    notes.extend(f"{path}: {note}" for note in file_notes)
    regions = [a for a in annotations if a.object_type == "annotation"]
    check_inside(regions, dimensions, path=path)
    classes = job.options.positive_classes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        region = tumour_region(annotations, classes=classes)
    notes.extend(f"{path}: {w.message}" for w in caught)
    if region is None:
        wanted = "any class" if classes is None else "class " + ", ".join(classes)
        notes.append(f"{path}: no contour of {wanted}: every tile is negative")
    return region


# --------------------------------------------------------------------------------------
# tiles


@dataclass(frozen=True)
class ChunkTask:
    """A run of consecutive tiles of one slide for one worker."""

    slide_index: int
    stage: str  # "label" (DAB only), "write" or "both"
    slide_path: str
    slide_mpp: float | None
    choice: LevelChoice
    size: int
    index: Any  # candidate indices
    x0: Any
    y0: Any
    tile_ids: tuple[str, ...]
    folder: str | None  # None: write nothing
    image_format: str
    png_compression: int
    jpeg_quality: int
    dab: tuple[float, float, int] | None


_OPEN_SLIDES: dict[tuple[str, float | None], Any] = {}


def _cached_slide(path: str, mpp: float | None) -> Any:
    """Open a slide once per process (kept open for the following chunks)."""
    key = (path, mpp)
    slide = _OPEN_SLIDES.get(key)
    if slide is None:
        while len(_OPEN_SLIDES) >= 4:
            _OPEN_SLIDES.pop(next(iter(_OPEN_SLIDES))).close()
        slide = open_slide(path, mpp=mpp)
        _OPEN_SLIDES[key] = slide
    return slide


def _close_cached_slides() -> None:
    while _OPEN_SLIDES:
        _OPEN_SLIDES.popitem()[1].close()


def run_chunk(task: ChunkTask) -> tuple[Any, Any, int]:
    """Read, label (DAB) and write a chunk of tiles. Returns ``(index, dab_fractions, written)``.

    An existing tile file is complete (tiles are renamed into place) and is not rewritten; it is
    read again only when its DAB fraction is needed.
    """
    import numpy as np

    slide = _cached_slide(task.slide_path, task.slide_mpp)
    want_dab = task.stage in ("label", "both") and task.dab is not None
    write = task.stage in ("write", "both") and task.folder is not None
    ext = IMAGE_FORMATS[task.image_format]
    folder = Path(task.folder) if task.folder else None
    if task.image_format == "png":
        save_args: dict[str, Any] = {"format": "PNG", "compress_level": task.png_compression}
    else:
        save_args = {"format": "JPEG", "quality": task.jpeg_quality}
    fractions = np.full(len(task.tile_ids), np.nan)
    written = 0
    size = task.size
    for k, tid in enumerate(task.tile_ids):
        target = folder / f"{tid}.{ext}" if write and folder is not None else None
        todo = target is not None and not target.exists()
        if not (todo or want_dab):
            continue
        image = slide.read_pil(float(task.x0[k]), float(task.y0[k]), size, size, task.choice)
        if want_dab and task.dab is not None:
            threshold, sigma, radius = task.dab
            fractions[k] = dab_fraction(
                np.asarray(image), threshold=threshold, sigma=sigma, closing_radius=radius
            )
        if todo and target is not None:
            _write_atomic(image, target, save_args)
            written += 1
    return task.index, fractions, written


def _write_atomic(image: Any, target: Path, save_args: dict[str, Any]) -> None:
    """Save ``image`` to a temporary name beside ``target`` (unique to this process), then
    rename it. One file creation per tile, like a plain ``save``; an interrupted write leaves
    only the ``.tmp-`` file, which the next run of the slide deletes."""
    from histolib.core.atomic import TMP_PREFIX

    tmp = target.with_name(f"{TMP_PREFIX}{target.stem}-{os.getpid()}{target.suffix}")
    try:
        image.save(tmp, **save_args)
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _chunks(plan: SlidePlan, stage: str, index: Any, *, workers: int) -> list[ChunkTask]:
    job, options = plan.job, plan.job.options
    n = len(index)
    if n == 0:
        return []
    per = max(4, min(32, math.ceil(n / (max(workers, 1) * 8))))
    folder = (
        None
        if options.image_format == "none" or stage == "label"
        else str(Path(job.out) / "tiles" / job.slide_id)
    )
    ids = _tile_ids(job.slide_id, plan.x0[index], plan.y0[index], options.size)
    assert plan.choice is not None
    tasks = []
    for start in range(0, n, per):
        stop = min(n, start + per)
        sub = index[start:stop]
        tasks.append(
            ChunkTask(
                slide_index=job.index,
                stage=stage,
                slide_path=job.path,
                slide_mpp=options.slide_mpp,
                choice=plan.choice,
                size=options.size,
                index=sub,
                x0=plan.x0[sub],
                y0=plan.y0[sub],
                tile_ids=tuple(ids[start:stop]),
                folder=folder,
                image_format=options.image_format,
                png_compression=options.png_compression,
                jpeg_quality=options.jpeg_quality,
                dab=plan.dab,
            )
        )
    return tasks


# --------------------------------------------------------------------------------------
# per-slide rows (parts)


def _part_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("tile_id", pa.string()),
            ("slide_id", pa.string()),
            ("slide_path", pa.string()),
            ("x0", pa.int64()),
            ("y0", pa.int64()),
            ("size_px", pa.int64()),
            ("mpp", pa.float64()),
            ("downsample", pa.float64()),
            ("stain", pa.string()),
            ("label", pa.string()),
            ("tissue_fraction", pa.float64()),
            ("annotation_fraction", pa.float64()),
            ("path", pa.string()),
        ]
    )


def _read_part(path: Path, params: dict[str, Any]) -> Any:
    """The rows and info of a finished slide, or None when absent or made otherwise."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(PART_META_KEY, b"{}"))
    except Exception:  # a foreign or damaged part is simply redone
        return None
    if meta.get("params") != json.loads(json.dumps(params, default=str)):
        return None
    return {"table": table, "info": meta.get("info", {}), "notes": meta.get("notes", [])}


def _write_part(path: Path, rows: dict[str, Any], params: dict[str, Any], info: Any, notes: Any):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from histolib.core.atomic import atomic_path

    schema = _part_schema()
    table = pa.Table.from_pydict(rows, schema=schema)
    meta = {
        PART_META_KEY: json.dumps(
            {"params": params, "info": info, "notes": notes}, default=str
        ).encode()
    }
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table


def _write_pictures(plan: SlidePlan) -> None:
    """Write the slide's tissue mask PNG and QC picture (needs the final labels)."""
    import numpy as np
    from PIL import Image

    from histolib.slide.tissue import save_mask_png
    from histolib.tiling.qc import draw_qc, save_qc

    job, options = plan.job, plan.job.options
    out = Path(job.out)
    assert plan.choice is not None and plan.selected is not None and plan.labels is not None
    save_mask_png(
        out / "masks" / f"{job.slide_id}.png",
        plan.mask,
        info={
            "slide_id": job.slide_id,
            "downsample": plan.mask_downsample,
            "mpp": plan.slide_mpp * plan.mask_downsample,
            "origin": [0, 0],
        },
    )
    base, downsample = plan.qc_base, plan.qc_downsample
    longest = max(base.shape[:2])
    if longest > QC_MAX_SIDE:
        scale = longest / QC_MAX_SIDE
        size = (max(1, round(base.shape[1] / scale)), max(1, round(base.shape[0] / scale)))
        downsample = downsample * base.shape[1] / size[0]
        base = np.asarray(Image.fromarray(base).resize(size, resample=Image.Resampling.BOX))
    sel = plan.selected
    side = options.size * plan.choice.downsample
    labels = [str(v) for v in plan.labels[sel]]
    tile_mpp = _tile_mpp(options.mpp, plan.slide_mpp, plan.choice)
    picture = draw_qc(
        base,
        downsample=downsample,
        mask=plan.mask,
        contours=plan.contours,
        tiles=list(
            zip(
                plan.x0[sel].tolist(),
                plan.y0[sel].tolist(),
                [side] * len(labels),
                labels,
                strict=True,
            )
        ),
        title=f"{job.slide_id}: {len(labels)} tiles at {tile_mpp:.3g} um/px",
    )
    save_qc(out / "qc" / f"{job.slide_id}.png", picture)
    plan.pictures_done = True
    plan.qc_base = None


def _finish_slide(plan: SlidePlan) -> dict[str, Any]:
    """Write the pictures (if not yet) and the slide's part; returns ``{"table", "info",
    "notes"}``. The part is written last: it marks the slide done."""
    import numpy as np

    job, options = plan.job, plan.job.options
    out = Path(job.out)
    assert plan.choice is not None and plan.selected is not None and plan.labels is not None
    if not plan.pictures_done:
        _write_pictures(plan)
    sel = plan.selected
    x0, y0 = plan.x0[sel], plan.y0[sel]
    ids = _tile_ids(job.slide_id, x0, y0, options.size)
    ext = IMAGE_FORMATS[options.image_format]
    tile_mpp = _tile_mpp(options.mpp, plan.slide_mpp, plan.choice)
    rows = {
        "tile_id": ids,
        "slide_id": [job.slide_id] * len(ids),
        "slide_path": [job.path] * len(ids),
        "x0": x0.astype(np.int64),
        "y0": y0.astype(np.int64),
        "size_px": np.full(len(ids), options.size, dtype=np.int64),
        "mpp": np.full(len(ids), tile_mpp),
        "downsample": np.full(len(ids), plan.choice.downsample),
        "stain": [options.stain] * len(ids),
        "label": [str(v) for v in plan.labels[sel]],
        "tissue_fraction": plan.tissue[sel].astype(np.float64),
        "annotation_fraction": plan.fraction[sel].astype(np.float64),
        "path": [f"tiles/{job.slide_id}/{t}.{ext}" if ext else "" for t in ids],
    }
    info = {**plan.info, "tiles": len(ids)}
    table = _write_part(
        out / "parts" / f"{job.slide_id}.parquet", rows, job.params(), info, plan.notes
    )
    return {"table": table, "info": info, "notes": list(plan.notes)}


# --------------------------------------------------------------------------------------
# the scheduler


class _InlineExecutor:
    """Runs each submitted call at once in this process (``workers=1``)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        _close_cached_slides()


def _warm_imports() -> None:
    import geopandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.ndimage  # noqa: F401
    from PIL import Image, ImageDraw  # noqa: F401


def _noop() -> int:
    return os.getpid()


def _worker_init() -> None:
    """Start a worker: leave Ctrl-C to the parent (which cancels what has not started; a chunk
    in progress finishes its tiles, each written atomically, and the worker exits), and import
    what cutting tiles needs while the first slide is being planned."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numpy  # noqa: F401
    import openslide  # noqa: F401
    from PIL import Image, PngImagePlugin  # noqa: F401


def _pool(workers: int) -> Any:
    """A process pool, started at once (before any progress-bar thread exists).

    Linux forks (the workers inherit what is imported, nothing is re-imported); elsewhere the
    platform's safe method (spawn / forkserver) is used.
    """
    import multiprocessing
    import sys

    if sys.platform.startswith("linux"):
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
    pool.submit(_noop).result()
    return pool


@dataclass
class _SlideState:
    job: SlideJob
    plan: SlidePlan | None = None
    stage: str = "plan"
    outstanding: list[Future] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: BaseException | None = None


def _is_slide_failure(exc: BaseException) -> bool:
    return isinstance(exc, (HistolibError, OSError))


def _run_jobs(
    jobs: list[SlideJob], *, workers: int, progress: Any, executor: Any
) -> tuple[dict[int, dict[str, Any]], dict[int, BaseException]]:
    """Run every slide job; returns ``(results by job index, failures by job index)``."""
    import numpy as np

    slides_task = progress.add_task("slides", total=len(jobs))
    tiles_task = progress.add_task("tiles", total=0)
    states = {job.index: _SlideState(job) for job in jobs}
    queue = list(jobs)
    active_limit = max(1, workers) + 1
    pending: dict[Future, tuple[int, str, int]] = {}
    results: dict[int, dict[str, Any]] = {}
    failures: dict[int, BaseException] = {}
    totals = {"tiles": 0}

    def fail(state: _SlideState, exc: BaseException) -> None:
        if not _is_slide_failure(exc):
            raise exc
        state.error = exc
        state.stage = "failed"
        for fut in state.outstanding:
            fut.cancel()
        failures[state.job.index] = exc
        progress.advance(slides_task)

    def submit_chunks(state: _SlideState, stage: str, index: Any) -> None:
        assert state.plan is not None
        tasks = _chunks(state.plan, stage, index, workers=workers)
        state.stage = stage
        state.outstanding = []
        totals["tiles"] += len(index)
        progress.update(tiles_task, total=totals["tiles"])
        for task in tasks:
            fut = executor.submit(run_chunk, task)
            pending[fut] = (state.job.index, stage, len(task.tile_ids))
            state.outstanding.append(fut)
        if not tasks:
            advance(state)

    def finish(state: _SlideState) -> None:
        try:
            state.result = (
                state.plan.part if state.plan.part is not None else _finish_slide(state.plan)
            )
        except BaseException as exc:
            fail(state, exc)
            return
        state.stage = "done"
        results[state.job.index] = state.result
        progress.advance(slides_task)

    def advance(state: _SlideState) -> None:
        """Move a slide to its next stage once the current one has no outstanding chunks."""
        plan = state.plan
        assert plan is not None
        options = plan.job.options
        if state.stage == "plan":
            if plan.part is not None:
                finish(state)
                return
            if plan.selected is None:  # IHC, labels from DAB still to find
                n = len(plan.x0)
                plan.fraction = np.full(n, np.nan)
                if options.balance or options.max_tiles is not None:
                    submit_chunks(state, "label", np.arange(n))
                else:
                    plan.selected = np.arange(n)
                    submit_chunks(state, "both", plan.selected)
                return
            if options.image_format == "none":
                finish(state)
                return
            submit_chunks(state, "write", plan.selected)
            if state.stage == "write":  # the workers cut tiles while this process draws
                try:
                    _write_pictures(plan)
                except BaseException as exc:
                    fail(state, exc)
            return
        if state.stage == "label":
            _apply_dab(plan)
            plan.selected = select_tiles(
                plan.labels,
                balance=options.balance,
                max_tiles=options.max_tiles,
                rng=_rng(options.seed + 1, plan.job.slide_id),
            )
            if options.image_format == "none":
                finish(state)
            else:
                submit_chunks(state, "write", plan.selected)
            return
        if state.stage == "both":
            _apply_dab(plan)
        finish(state)

    def start_more() -> None:
        while queue and sum(s.stage not in ("done", "failed") for s in started) < active_limit:
            job = queue.pop(0)
            started.append(states[job.index])
            fut = executor.submit(plan_slide, job)
            pending[fut] = (job.index, "plan", 0)

    started: list[_SlideState] = []
    try:
        start_more()
        if not isinstance(executor, _InlineExecutor):
            _warm_imports()  # while the workers plan, ready what drawing and the manifest need
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                index, stage, count = pending.pop(fut)
                state = states[index]
                if state.stage == "failed" or fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    fail(state, exc)
                    continue
                if stage == "plan":
                    state.plan = fut.result()
                    advance(state)
                    continue
                chunk_index, fractions, _written = fut.result()
                progress.advance(tiles_task, count)
                state.outstanding.remove(fut)
                if stage in ("label", "both") and state.plan is not None:
                    state.plan.fraction[chunk_index] = fractions
                if not state.outstanding:
                    advance(state)
            start_more()
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return results, failures


def _apply_dab(plan: SlidePlan) -> None:
    import numpy as np

    options = plan.job.options
    fractions = np.nan_to_num(plan.fraction, nan=0.0)
    plan.fraction = fractions
    plan.labels = np.where(fractions >= options.dab_fraction, "positive", "negative").astype(object)


# --------------------------------------------------------------------------------------
# the public entry point


def _assemble(parts: list[dict[str, Any]]) -> Any:
    """The manifest GeoDataFrame from per-slide parts (geometry = tile squares, level-0 px)."""
    import geopandas as gpd
    import pyarrow as pa
    import shapely

    from histolib.tiles.manifest import MANIFEST_COLUMNS

    tables = [part["table"].replace_schema_metadata(None) for part in parts]
    table = pa.concat_tables(tables) if tables else _part_schema().empty_table()
    frame = table.to_pandas()
    side = frame["size_px"].to_numpy(dtype=float) * frame["downsample"].to_numpy(dtype=float)
    x0 = frame["x0"].to_numpy(dtype=float)
    y0 = frame["y0"].to_numpy(dtype=float)
    geometry = shapely.box(x0, y0, x0 + side, y0 + side)
    return gpd.GeoDataFrame(frame[list(MANIFEST_COLUMNS)], geometry=geometry, crs=None)


def tile_slides(
    slides: str | Path | Iterable[str | Path],
    *,
    out: str | Path,
    annotations: str | Path | None = None,
    stain: str = "he",
    mpp: float = 0.5,
    size: int = 256,
    slide_mpp: float | None = None,
    min_tissue: float = 0.5,
    balance: bool = False,
    max_tiles: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    image_format: str = "png",
    positive_classes: Sequence[str] | None = None,
    positive_fraction: float = 0.5,
    dab_fraction: float = 0.1,
    png_compression: int = 1,
    jpeg_quality: int = 90,
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
    min_region_um2: float = DEFAULT_MIN_REGION_UM2,
    max_hole_um2: float = DEFAULT_MAX_HOLE_UM2,
    progress: bool = True,
) -> Path:
    """Tile slides into labelled tiles on a grid over their tissue; write the manifest.

    Parameters
    ----------
    slides
        Slide files and/or folders of slides (scanned, not recursively).
    out
        Output folder (created): ``tiles.parquet``, ``tiles/``, ``masks/``, ``qc/``, ``parts/``.
    annotations
        A QuPath GeoJSON file (one slide only) or a folder holding ``<slide_id>.geojson``
        (``.json``, ``.geojson.gz``) per slide; a slide without a file there is unlabelled.
    stain
        ``"he"`` or ``"ihc"`` (IHC without contours is labelled from DAB).
    mpp
        Microns per tile pixel (0.5 = 20x).
    size
        Tile side in px.
    slide_mpp
        Level-0 mpp of the slides, overriding their metadata (required for plain images).
    min_tissue
        Minimum tissue fraction of a tile (0 keeps every grid position).
    balance
        Keep as many positive as negative tiles per slide (seeded draw).
    max_tiles
        At most this many tiles per slide (seeded draw; with ``balance`` half of each).
    seed
        Seed of the draws (combined with the slide id).
    workers
        Processes; None = the CPU cores. 1 runs everything in this process.
    image_format
        ``"png"``, ``"jpeg"`` or ``"none"`` (manifest only: coordinates to read later).
    positive_classes
        Contour classes that mean tumour; None = every annotation.
    positive_fraction
        Fraction of a tile inside the contours from which it is ``positive``.
    dab_fraction
        Fraction of DAB-positive pixels from which an IHC tile is ``positive``.
    png_compression
        zlib level of the PNG tiles (1 = fast, the default; 6 = PIL's default).
    jpeg_quality
        JPEG quality with ``image_format="jpeg"``.
    mpp_tolerance
        Relative mpp difference under which a pyramid level is read unresampled.
    min_region_um2, max_hole_um2
        Tissue-mask clean-up: smallest tissue region kept, largest hole filled (um^2).
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
    from histolib.core.progress import make_progress
    from histolib.tiles.manifest import write_manifest

    options = TilingOptions(
        stain=stain,
        mpp=float(mpp),
        size=int(size),
        slide_mpp=check_mpp(slide_mpp),
        min_tissue=float(min_tissue),
        balance=bool(balance),
        max_tiles=None if max_tiles is None else int(max_tiles),
        seed=int(seed),
        image_format="jpeg" if image_format == "jpg" else image_format,
        positive_classes=None if positive_classes is None else tuple(positive_classes),
        positive_fraction=float(positive_fraction),
        dab_fraction=float(dab_fraction),
        png_compression=int(png_compression),
        jpeg_quality=int(jpeg_quality),
        mpp_tolerance=float(mpp_tolerance),
        min_region_um2=float(min_region_um2),
        max_hole_um2=float(max_hole_um2),
    )
    options.validate(labelled=annotations is not None or stain == "ihc")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    paths = collect_slides(slides)
    annotation_root = None if annotations is None else Path(annotations)
    if annotation_root is not None:
        if not annotation_root.exists():
            from histolib.errors import AnnotationError

            raise AnnotationError("no such file or folder", path=annotation_root)
        if annotation_root.is_file() and len(paths) > 1:
            raise ConfigError(
                f"one annotation file ({annotation_root}) for {len(paths)} slides: give a "
                "folder holding <slide_id>.geojson per slide"
            )
    out = ensure_writable_dir(out)
    jobs = []
    for index, path in enumerate(paths):
        sid = slide_id_from_path(path)
        ann = _annotation_for(annotation_root, sid)
        jobs.append(
            SlideJob(
                index=index,
                path=str(path),
                slide_id=sid,
                annotation_path=None if ann is None else str(ann.resolve()),
                out=str(out.resolve()),
                options=options,
                missing_annotation_in=(
                    str(annotation_root) if annotation_root is not None and ann is None else None
                ),
            )
        )
    executor: Any = _InlineExecutor() if workers <= 1 else _pool(workers)
    bar = make_progress(disable=not progress)
    with bar:
        results, failures = _run_jobs(jobs, workers=workers, progress=bar, executor=executor)
    manifest_path = out / "tiles.parquet"
    if results:
        parts = [results[job.index] for job in jobs if job.index in results]
        slides_info = {
            job.slide_id: {**results[job.index]["info"], "notes": results[job.index]["notes"]}
            for job in jobs
            if job.index in results
        }
        params = {**options.as_params(), "slides": slides_info}
        write_manifest(_assemble(parts), manifest_path, params=params)
    if failures:
        if len(jobs) == 1:
            raise failures[jobs[0].index]
        messages = {jobs[i].path: _one_line(exc) for i, exc in sorted(failures.items())}
        raise TilingError(messages, manifest=manifest_path if results else None, total=len(jobs))
    return manifest_path


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]


def slide_notes(manifest: str | Path) -> dict[str, list[str]]:
    """The notes (skipped objects, empty classes...) recorded per slide in a manifest."""
    from histolib.tiles.manifest import read_manifest

    _gdf, meta = read_manifest(manifest)
    slides = meta.get("params", {}).get("slides", {})
    return {sid: list(info.get("notes", [])) for sid, info in slides.items()}
