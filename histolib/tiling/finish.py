"""Finishing a slide: its tissue-mask PNG and QC picture, then its part (rows) file.

The pictures are drawn by the main process (while the workers cut tiles, when the labels are
known in advance); the part is written last: it marks the slide done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from histolib.tiling.chunks import tile_ids, tile_mpp
from histolib.tiling.options import IMAGE_FORMATS
from histolib.tiling.parts import part_path, write_part

if TYPE_CHECKING:
    from histolib.tiling.plan import SlidePlan

QC_MAX_SIDE = 2048
QC_MIN_SIDE = 1024


def qc_base(slide: Any, low: Any, low_downsample: float) -> tuple[Any, float]:
    """The QC background: the mask image, or a larger thumbnail when the mask image is under
    QC_MIN_SIDE px. Returns ``(rgb, level-0 px per px)``; :func:`write_pictures` shrinks it."""
    longest = max(low.shape[:2])
    if longest < QC_MIN_SIDE and max(slide.dimensions) > longest:
        target = min(QC_MIN_SIDE, max(slide.dimensions))
        downsample = max(slide.dimensions) / target
        return slide.read_level_image(downsample), downsample
    return low, low_downsample


def _shrunk_qc_base(plan: SlidePlan) -> tuple[Any, float]:
    """The QC background at most ``QC_MAX_SIDE`` px a side, and its level-0 px per px."""
    import numpy as np
    from PIL import Image

    base, downsample = plan.qc_base, plan.qc_downsample
    longest = max(base.shape[:2])
    if longest > QC_MAX_SIDE:
        scale = longest / QC_MAX_SIDE
        size = (max(1, round(base.shape[1] / scale)), max(1, round(base.shape[0] / scale)))
        downsample = downsample * base.shape[1] / size[0]
        base = np.asarray(Image.fromarray(base).resize(size, resample=Image.Resampling.BOX))
    return base, downsample


def write_pictures(plan: SlidePlan) -> None:
    """Write the slide's tissue mask PNG and QC picture (needs the final labels)."""
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
    base, downsample = _shrunk_qc_base(plan)
    sel = plan.selected
    side = options.size * plan.choice.downsample
    labels = [str(v) for v in plan.labels[sel]]
    mpp = tile_mpp(options.mpp, plan.slide_mpp, plan.choice)
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
        title=f"{job.slide_id}: {len(labels)} tiles at {mpp:.3g} um/px",
    )
    save_qc(out / "qc" / f"{job.slide_id}.png", picture)
    plan.pictures_done = True
    plan.qc_base = None


def finish_slide(plan: SlidePlan) -> dict[str, Any]:
    """Write the pictures (if not yet) and the slide's part; returns ``{"table", "info",
    "notes"}``. The part is written last: it marks the slide done."""
    import numpy as np

    job, options = plan.job, plan.job.options
    assert plan.choice is not None and plan.selected is not None and plan.labels is not None
    if not plan.pictures_done:
        write_pictures(plan)
    sel = plan.selected
    x0, y0 = plan.x0[sel], plan.y0[sel]
    ids = tile_ids(job.slide_id, x0, y0, options.size)
    if len(set(ids)) != len(ids):  # impossible for tiles of >= 1 level-0 px (plan.check_grid)
        from histolib.errors import SlideError

        raise SlideError("two tiles would share one tile id (and one file)", path=job.path)
    ext = IMAGE_FORMATS[options.image_format]
    n = len(ids)
    rows = {
        "tile_id": ids,
        "slide_id": [job.slide_id] * n,
        "slide_path": [job.path] * n,
        "x0": x0.astype(np.int64),
        "y0": y0.astype(np.int64),
        "size_px": np.full(n, options.size, dtype=np.int64),
        "mpp": np.full(n, tile_mpp(options.mpp, plan.slide_mpp, plan.choice)),
        "downsample": np.full(n, plan.choice.downsample),
        "stain": [options.stain] * n,
        "label": [str(v) for v in plan.labels[sel]],
        "tissue_fraction": plan.tissue[sel].astype(np.float64),
        "annotation_fraction": plan.fraction[sel].astype(np.float64),
        "path": [f"tiles/{job.slide_id}/{t}.{ext}" if ext else "" for t in ids],
    }
    info = {**plan.info, "tiles": n}
    table = write_part(part_path(job.out, job.slide_id), rows, job.params(), info, plan.notes)
    return {"table": table, "info": info, "notes": list(plan.notes)}
