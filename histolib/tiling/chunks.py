"""Cutting tiles: chunks of consecutive tiles of one slide, read, labelled (DAB) and written.

The tiles of a slide are cut into chunks of consecutive tiles in row-major order, so every
worker, which opens the slide once and keeps it open, works on its own stripe. A tile image is
written to a temporary name and renamed, so an existing tile is complete and is not written
again. A slide's tile folder records its pixel parameters in ``.params.json``: a folder made
with other parameters is refused, not mixed.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histolib.core.atomic import atomic_path
from histolib.errors import ConfigError
from histolib.slide.cache import cached_slide
from histolib.slide.reader import LevelChoice
from histolib.tiling.dab import dab_fraction
from histolib.tiling.options import IMAGE_FORMATS

if TYPE_CHECKING:
    from histolib.tiling.plan import SlidePlan

PARAMS_FILE = ".params.json"


class Stage(enum.Enum):
    """Where a slide is in a run; the middle three are also what its chunks do."""

    PLAN = "plan"
    LABEL = "label"  # DAB fractions of every candidate (IHC, before a balanced / capped draw)
    BOTH = "both"  # DAB fractions and tile images of every candidate (IHC, keep all)
    WRITE = "write"  # tile images of the selected tiles
    DONE = "done"
    FAILED = "failed"

    @property
    def reads_dab(self) -> bool:
        """Whether chunks of this stage measure DAB fractions."""
        return self in (Stage.LABEL, Stage.BOTH)

    @property
    def writes(self) -> bool:
        """Whether chunks of this stage write tile images."""
        return self in (Stage.WRITE, Stage.BOTH)


@dataclass(frozen=True)
class ChunkTask:
    """A run of consecutive tiles of one slide for one worker."""

    slide_index: int
    stage: Stage
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


def tile_ids(slide_id: str, x0: Any, y0: Any, size: int) -> list[str]:
    """The manifest tile ids of tiles at level-0 origins ``(x0, y0)``."""
    from histolib.tileset.manifest import tile_id

    return [tile_id(slide_id, x, y, size) for x, y in zip(x0.tolist(), y0.tolist(), strict=True)]


def tile_mpp(target: float, slide_mpp: float, choice: LevelChoice) -> float:
    """The true mpp of the tiles: the target when resampled to it, else the level's own."""
    return float(target) if choice.resample else slide_mpp * choice.downsample


def pixel_params(options: Any, choice: LevelChoice, slide_mpp: float) -> dict[str, Any]:
    """What a slide's tile images depend on (recorded in its tile folder)."""
    params: dict[str, Any] = {
        "size": options.size,
        "level": choice.level,
        "downsample": choice.downsample,
        "tile_mpp": tile_mpp(options.mpp, slide_mpp, choice),
        "format": options.image_format,
    }
    if options.image_format == "jpeg":
        params["jpeg_quality"] = options.jpeg_quality
    return json.loads(json.dumps(params))


def check_tile_folder(folder: Path, params: dict[str, Any]) -> None:
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


def _save_args(task: ChunkTask) -> dict[str, Any]:
    if task.image_format == "png":
        return {"format": "PNG", "compress_level": task.png_compression}
    return {"format": "JPEG", "quality": task.jpeg_quality}


def run_chunk(task: ChunkTask) -> tuple[Any, Any, int]:
    """Read, label (DAB) and write a chunk of tiles. Returns ``(index, dab_fractions, written)``.

    An existing tile file is complete (tiles are renamed into place) and is not rewritten; it is
    read again only when its DAB fraction is needed.
    """
    import numpy as np

    slide = cached_slide(task.slide_path, mpp=task.slide_mpp).slide
    want_dab = task.stage.reads_dab and task.dab is not None
    folder = Path(task.folder) if task.stage.writes and task.folder else None
    ext = IMAGE_FORMATS[task.image_format]
    save_args = _save_args(task)
    fractions = np.full(len(task.tile_ids), np.nan)
    written = 0
    size = task.size
    for k, tid in enumerate(task.tile_ids):
        target = folder / f"{tid}.{ext}" if folder is not None else None
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
            with atomic_path(target) as tmp:
                image.save(tmp, **save_args)
            written += 1
    return task.index, fractions, written


def make_chunks(plan: SlidePlan, stage: Stage, index: Any, *, workers: int) -> list[ChunkTask]:
    """The chunks of the candidates ``index`` of a planned slide for ``stage``."""
    job, options = plan.job, plan.job.options
    n = len(index)
    if n == 0:
        return []
    per = max(4, min(32, math.ceil(n / (max(workers, 1) * 8))))
    folder = (
        None
        if options.image_format == "none" or not stage.writes
        else str(Path(job.out) / "tiles" / job.slide_id)
    )
    ids = tile_ids(job.slide_id, plan.x0[index], plan.y0[index], options.size)
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
