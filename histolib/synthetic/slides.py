"""Synthetic whole-slide images with known ground truth (tissue, tumours, every cell).

:func:`make_slide` draws a layout (:mod:`histolib.synthetic.layout`), renders it block by
block (:mod:`histolib.synthetic.render`) and writes a pyramidal JPEG TIFF that OpenSlide opens
with the right mpp, the tumour contours as QuPath GeoJSON (class ``Tumor``) and every cell
centre as CSV (``x,y,label,radius`` in level-0 px, label ``cancer|normal``). The layout does
not depend on the stain, so the H&E and the IHC slides of one seed form a registered pair.

Sizes are in microns and scale with the mpp. At 0.5 um/px normal nuclei (lymphocytes, spindle
stromal cells) have radii of about 5-7 px, which the authors' library detector finds with LoG
sigma 1..2 (H&E) or 1..3 (IHC); cancer nuclei have radii of about 12-15 px (sigma 8.5-10.6),
found with sigma 10..12 in H&E and 7..10 in IHC.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError
from histolib.stain import STAINS
from histolib.synthetic.layout import Layout, check_size, make_layout
from histolib.synthetic.render import render_region

CELL_COLUMNS = ("x", "y", "label", "radius")
TUMOUR_CLASS = "Tumor"
#: Side of the square blocks a slide is rendered in (level-0 px).
BLOCK_SIZE = 1024
#: Format version written into the TIFF description; a re-run reuses a slide only when equal.
_FORMAT_VERSION = 1
_DESCRIPTION_PREFIX = "histolib synthetic slide "
#: Slides larger than this (bytes of RGB) are assembled in a temporary file beside the output.
_MEMMAP_BYTES = 1 << 30


@dataclass(frozen=True)
class SyntheticSlide:
    """What :func:`make_slide` wrote.

    Attributes
    ----------
    slide_path
        Pyramidal JPEG TIFF (OpenSlide "generic-tiff", mpp in its resolution tags).
    annotations_path
        QuPath GeoJSON FeatureCollection of the tumour contours, class ``Tumor``.
    cells_path
        CSV ``x,y,label,radius`` (level-0 px; label ``cancer`` or ``normal``).
    mpp, stain, width, height, seed, name
        How it was made.
    n_cells, n_cancer, n_tumours
        Ground-truth counts.
    reused
        True when an identical slide was already there and was kept.
    layout_options
        The :func:`make_layout` options beyond size, mpp and seed (see :meth:`layout`).
    """

    slide_path: Path
    annotations_path: Path
    cells_path: Path
    mpp: float
    stain: str
    width: int
    height: int
    seed: int
    name: str
    n_cells: int
    n_cancer: int
    n_tumours: int
    reused: bool = False
    layout_options: dict[str, Any] = field(default_factory=dict)

    @property
    def slide_id(self) -> str:
        """The slide id histolib gives this slide (its name)."""
        return self.name

    def layout(self) -> Layout:
        """The slide's layout (its ground truth), rebuilt from the parameters that made it."""
        return make_layout(
            self.width, self.height, mpp=self.mpp, seed=self.seed, **self.layout_options
        )


def _blocks(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    return [
        (x0, y0, min(size, width - x0), min(size, height - y0))
        for y0 in range(0, height, size)
        for x0 in range(0, width, size)
    ]


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(layout: Layout, stain: str) -> None:
    _WORKER_STATE["layout"] = layout
    _WORKER_STATE["stain"] = stain


def _render_block_job(block: tuple[int, int, int, int]) -> np.ndarray:
    return render_region(_WORKER_STATE["layout"], *block, stain=_WORKER_STATE["stain"])


def render_slide_array(
    layout: Layout,
    *,
    stain: str,
    out: np.ndarray | None = None,
    workers: int = 1,
    on_block: Callable[[], None] | None = None,
) -> np.ndarray:
    """Render the whole layout into an (height, width, 3) uint8 array, block by block.

    Parameters
    ----------
    layout
        From :func:`make_layout`.
    stain
        ``"he"`` or ``"ihc"``.
    out
        A preallocated array (for example a ``numpy.memmap``); None allocates one.
    workers
        Processes rendering blocks (1: in this process).
    on_block
        Called after each block is in place (progress).
    """
    if out is None:
        out = np.empty((layout.height, layout.width, 3), np.uint8)
    blocks = _blocks(layout.width, layout.height, BLOCK_SIZE)
    workers = max(1, min(int(workers), len(blocks)))

    def place(block: tuple[int, int, int, int], rgb: np.ndarray) -> None:
        x0, y0, w, h = block
        out[y0 : y0 + h, x0 : x0 + w] = rgb
        if on_block is not None:
            on_block()

    if workers == 1:
        for block in blocks:
            place(block, render_region(layout, *block, stain=stain))
        return out
    from histolib.core.parallel import process_pool

    with process_pool(workers, initializer=_init_worker, initargs=(layout, stain)) as pool:
        for block, rgb in zip(blocks, pool.map(_render_block_job, blocks), strict=True):
            place(block, rgb)
    return out


def _description(params: dict[str, Any]) -> str:
    return _DESCRIPTION_PREFIX + json.dumps(params, sort_keys=True)


def _existing_params(slide_path: Path) -> dict[str, Any] | None:
    """The parameters recorded in a synthetic slide's TIFF description, or None."""
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(slide_path))
        text = image.get("image-description")
    except pyvips.Error:
        return None
    if not isinstance(text, str) or not text.startswith(_DESCRIPTION_PREFIX):
        return None
    try:
        return json.loads(text[len(_DESCRIPTION_PREFIX) :])
    except ValueError:
        return None


def write_slide_tiff(
    rgb: np.ndarray, path: str | Path, *, mpp: float, description: str | None = None
) -> Path:
    """Write an (h, w, 3) uint8 array as a pyramidal JPEG TIFF that OpenSlide reads, atomically.

    256 px tiles, JPEG Q 90, BigTIFF, one page per level (no SubIFDs), resolution
    ``1000 / mpp`` px per mm so that OpenSlide reports ``openslide.mpp-x == mpp``.
    """
    import pyvips

    from histolib.slide.pyramid import save_pyramidal_tiff

    height, width = rgb.shape[:2]
    image = pyvips.Image.new_from_memory(rgb.data, width, height, 3, "uchar")
    return save_pyramidal_tiff(image, path, mpp=mpp, description=description)


def write_cells_csv(layout: Layout, path: str | Path) -> Path:
    """Write every cell as CSV ``x,y,label,radius`` (level-0 px), atomically."""
    from histolib.core.atomic import write_text

    labels = layout.labels
    lines = [",".join(CELL_COLUMNS)]
    lines += [
        f"{x:.1f},{y:.1f},{lab},{r:.2f}"
        for x, y, lab, r in zip(layout.x, layout.y, labels, layout.radius, strict=True)
    ]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def write_tumour_geojson(layout: Layout, path: str | Path) -> Path:
    """Write the tumour contours as a QuPath GeoJSON FeatureCollection (class ``Tumor``)."""
    import shapely

    from histolib.qupath.features import qupath_feature, write_feature_collection

    um2 = layout.mpp * layout.mpp
    features = []
    for i, poly in enumerate(layout.tumours):
        n_cancer = int((shapely.contains_xy(poly, layout.x, layout.y) & layout.is_cancer).sum())
        features.append(
            qupath_feature(
                poly,
                object_type="annotation",
                class_name=TUMOUR_CLASS,
                name=f"tumour {i + 1}",
                measurements={"Area um^2": poly.area * um2, "Cancer cells": n_cancer},
            )
        )
    write_feature_collection(path, features)
    return Path(path)


def read_cells_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a cells CSV written by :func:`make_slide` into arrays ``x, y, label, radius``."""
    from histolib.errors import InputError

    path = Path(path)
    try:
        data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read cells CSV ({exc})", path=path) from exc
    if data.dtype.names is None or tuple(data.dtype.names) != CELL_COLUMNS:
        raise InputError(f"cells CSV must have columns {','.join(CELL_COLUMNS)}", path=path)
    data = np.atleast_1d(data)
    return {
        "x": data["x"].astype(float),
        "y": data["y"].astype(float),
        "label": data["label"].astype(str),
        "radius": data["radius"].astype(float),
    }


def _slide_name(name: str | None, stain: str, seed: int) -> str:
    """The file stem and slide id (default ``synthetic_<stain>_<seed>``), checked."""
    name = name or f"synthetic_{stain}_{seed}"
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ConfigError(f"invalid slide name {name!r}")
    return name


def _reusable(paths: tuple[Path, Path, Path], params: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded parameters of a complete slide made with ``params``, else None."""
    if not all(path.exists() for path in paths):
        return None
    old = _existing_params(paths[0])
    if old is None:
        return None
    counts = ("n_cells", "n_cancer", "n_tumours_placed")
    return old if {k: v for k, v in old.items() if k not in counts} == params else None


def _render_slide_file(
    layout: Layout,
    slide_path: Path,
    *,
    stain: str,
    record: dict[str, Any],
    workers: int,
    on_block: Callable[[], None] | None,
) -> None:
    """Render the layout and write it as the slide TIFF (a large slide via a disk canvas)."""
    height, width = layout.height, layout.width
    with contextlib.ExitStack() as stack:
        canvas = None
        if width * height * 3 > _MEMMAP_BYTES:
            # a large slide is assembled in a temporary file, not in memory
            tmp_dir = stack.enter_context(
                tempfile.TemporaryDirectory(
                    prefix=".tmp-" + slide_path.stem + "-", dir=slide_path.parent
                )
            )
            canvas = np.memmap(
                Path(tmp_dir) / "canvas.raw", np.uint8, "w+", shape=(height, width, 3)
            )
        rgb = render_slide_array(
            layout, stain=stain, out=canvas, workers=workers, on_block=on_block
        )
        write_slide_tiff(rgb, slide_path, mpp=layout.mpp, description=_description(record))
        del rgb, canvas


def _write_slide(
    paths: tuple[Path, Path, Path],
    *,
    params: dict[str, Any],
    options: dict[str, Any],
    workers: int,
    progress: Any,
) -> dict[str, Any]:
    """Draw the layout and write the cells CSV, the tumour GeoJSON, then the slide TIFF.

    Returns the record written into the TIFF description (``params`` plus the counts).
    """
    import functools

    slide_path, annotations_path, cells_path = paths
    width, height, stain = params["width"], params["height"], params["stain"]
    layout = make_layout(width, height, mpp=params["mpp"], seed=params["seed"], **options)
    write_cells_csv(layout, cells_path)
    write_tumour_geojson(layout, annotations_path)
    record = {
        **params,
        "n_cells": layout.n_cells,
        "n_cancer": int(layout.is_cancer.sum()),
        "n_tumours_placed": len(layout.tumours),
    }
    on_block = None
    if progress is not None:
        total = len(_blocks(width, height, BLOCK_SIZE))
        task = progress.add_task(f"render {slide_path.stem}", total=total)
        on_block = functools.partial(progress.advance, task)
    _render_slide_file(
        layout, slide_path, stain=stain, record=record, workers=workers, on_block=on_block
    )
    return record


def make_slide(
    out_dir: str | Path,
    *,
    name: str | None = None,
    stain: str = "he",
    width: int = 4096,
    height: int = 4096,
    mpp: float = 0.5,
    seed: int = 0,
    n_tumours: int | None = None,
    tumour_fraction: float = 0.25,
    cell_density: float = 1.0,
    cancer_radius_um: tuple[float, float] = (6.0, 7.5),
    cancer_texture: float = 1.0,
    workers: int = 1,
    force: bool = False,
    progress: Any = None,
) -> SyntheticSlide:
    """Render a synthetic slide and its ground truth into ``out_dir``.

    Writes ``<name>.tif`` (pyramidal JPEG TIFF, mpp in its resolution tags),
    ``<name>.geojson`` (tumour contours, QuPath annotations of class ``Tumor``) and
    ``<name>_cells.csv`` (``x,y,label,radius``, level-0 px), each atomically; the TIFF is
    written last and records the parameters, so a complete slide made with the same
    parameters is reused, not rendered again (unless ``force``).

    Parameters
    ----------
    out_dir
        Output folder (created).
    name
        File stem and slide id; default ``synthetic_<stain>_<seed>``.
    stain
        ``"he"`` or ``"ihc"``. The layout does not depend on it: the same seed and size give
        a registered H&E / IHC pair.
    width, height, mpp, seed, n_tumours, tumour_fraction, cell_density, cancer_radius_um, \
    cancer_texture
        Passed to :func:`make_layout`.
    workers
        Processes rendering blocks (1: in this process).
    force
        Render even when an identical slide exists.
    progress
        A Rich ``Progress`` to report blocks on, or None.

    Returns
    -------
    SyntheticSlide
    """
    from histolib.core.atomic import ensure_writable_dir

    if stain not in STAINS:
        raise ConfigError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    check_size(width, height, mpp)
    from histolib.core.names import check_name

    name = check_name(_slide_name(name, stain, seed), what="--name", error=ConfigError)
    out_dir = ensure_writable_dir(out_dir)
    paths = (out_dir / f"{name}.tif", out_dir / f"{name}.geojson", out_dir / f"{name}_cells.csv")
    options = {
        "n_tumours": n_tumours,
        "tumour_fraction": float(tumour_fraction),
        "cell_density": float(cell_density),
        "cancer_radius_um": [float(v) for v in cancer_radius_um],
        "cancer_texture": float(cancer_texture),
    }
    params = {
        "format": _FORMAT_VERSION,
        "stain": stain,
        "width": int(width),
        "height": int(height),
        "mpp": float(mpp),
        "seed": int(seed),
        **options,
    }
    record = None if force else _reusable(paths, params)
    reused = record is not None
    if record is None:
        record = _write_slide(
            paths, params=params, options=options, workers=workers, progress=progress
        )
    return SyntheticSlide(
        slide_path=paths[0],
        annotations_path=paths[1],
        cells_path=paths[2],
        mpp=float(mpp),
        stain=stain,
        width=int(width),
        height=int(height),
        seed=int(seed),
        name=name,
        n_cells=int(record.get("n_cells", 0)),
        n_cancer=int(record.get("n_cancer", 0)),
        n_tumours=int(record.get("n_tumours_placed", 0)),
        reused=reused,
        layout_options=options,
    )
