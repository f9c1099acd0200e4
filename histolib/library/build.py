"""Cell libraries: boxes of cancer and normal nuclei for the RoI discriminator.

:func:`tile_cells` runs the authors' pipeline on one tile (Boyd et al., MICCAI 2022,
``data/library_utils.py`` and the two ``library_demo`` notebooks; DESIGN.md section 4):

H&E (needs the expert tumour mask of the tile)
    normal nuclei: LoG on the H image (:mod:`histolib.library.cells`); healthy-cell graph and
    cluster hulls (:mod:`histolib.library.clusters`); the normal cells of the library are the
    members
    of clusters of >= 3 cells. Cancer nuclei: LoG at sigma 10..12 on the H image, kept when
    the centre pixel is in the tumour mask and not in the dilated cluster exclusion.
IHC (no annotation)
    DAB mask (:func:`histolib.stain.dab_mask`); normal nuclei: LoG on H, kept outside the
    mask; cancer nuclei: LoG on ``1 - DAB`` (bright DAB-free nuclei in stained cytoplasm), kept
    inside the mask.

Each kept nucleus gets a ``box_size`` square box centred on it; boxes that would leave the
tile are dropped (the authors' ``get_crops_image``). Centres are the pixel indices that
``blob_log`` reports (``int`` of the blob centre), so box ``[x - 24, x + 24)`` is centred on
``x`` in continuous pixel coordinates.

:func:`build_library` runs that over a tile manifest or a folder of PNG tiles, in processes,
resumably, and writes the library (:func:`histolib.library.cellio.write_library`), a per-tile count
table and QC overlays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ImageError, InputError, OutputError
from histolib.library.params import LibraryParams, params_from_dict, resolve_params

STAINS = ("he", "ihc")
IMAGE_SUFFIXES = (".png",)


@dataclass
class TileCells:
    """The cells of one tile.

    Attributes
    ----------
    boxes
        (n, 4) int ``[x0, y0, x1, y1]`` tile-local, half-open, x = column.
    centres
        (n, 2) int ``(x, y)`` tile-local centre (pixel index of the blob).
    labels
        n strings ``cancer`` | ``normal``.
    sigma
        (n,) LoG sigma of each cell.
    passes
        n detector pass names (``he_normal``, ``he_cancer``, ``ihc_normal``, ``ihc_cancer``).
    info
        Intermediate counts (the reference's ``pipeline_info`` keys).
    exclusion
        H&E: shapely geometry (tile px) of the dilated cluster regions; None for IHC.
    masks
        Rasters used for the decisions when ``details=True`` (``exclusion``, ``full`` for H&E;
        ``dab`` for IHC), else empty.
    """

    boxes: np.ndarray
    centres: np.ndarray
    labels: list[str]
    sigma: np.ndarray
    passes: list[str]
    info: dict[str, Any]
    exclusion: Any = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_cancer(self) -> int:
        return sum(1 for label in self.labels if label == "cancer")

    @property
    def n_normal(self) -> int:
        return sum(1 for label in self.labels if label == "normal")


def _boxes(
    xy: np.ndarray, *, box_size: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' box rule: ``box_size // 2`` each side of ``int`` centre, kept if inside."""
    half = int(box_size) // 2
    height, width = shape
    centres = np.asarray(xy, dtype=np.float64).reshape(-1, 2).astype(int)
    x, y = centres[:, 0], centres[:, 1]
    boxes = np.stack([x - half, y - half, x + half, y + half], axis=1)
    keep = (
        (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
    )
    return boxes[keep], centres[keep], keep


def _detect(image: np.ndarray, params: LibraryParams, name: str) -> Any:
    from histolib.library.cells import detect_blobs

    d = params.detector_params(name)
    return detect_blobs(
        image,
        gauss_sigma=d.gauss_sigma,
        min_sigma=d.min_sigma,
        max_sigma=d.max_sigma,
        threshold=d.threshold,
        num_sigma=d.num_sigma,
        overlap=d.overlap,
        method=params.detector,
    )


def _pixel_rc(xy: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    cols = np.clip(xy[:, 0].astype(int), 0, shape[1] - 1)
    rows = np.clip(xy[:, 1].astype(int), 0, shape[0] - 1)
    return rows, cols


def _assemble(
    parts: list[tuple[Any, np.ndarray, str, str]],
    *,
    params: LibraryParams,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    boxes, centres, labels, sigmas, passes = [], [], [], [], []
    for blobs, keep, label, name in parts:
        xy = blobs.xy[keep]
        b, c, inside = _boxes(xy, box_size=params.box_size, shape=shape)
        boxes.append(b)
        centres.append(c)
        sigmas.append(blobs.sigma[keep][inside])
        labels += [label] * len(b)
        passes += [name] * len(b)
    return (
        np.concatenate(boxes).astype(int).reshape(-1, 4),
        np.concatenate(centres).astype(int).reshape(-1, 2),
        labels,
        np.concatenate(sigmas).astype(float),
        passes,
    )


def tile_cells(
    rgb: np.ndarray,
    *,
    stain: str,
    mask: np.ndarray | None = None,
    params: LibraryParams | None = None,
    details: bool = False,
) -> TileCells:
    """Cancer and normal cell boxes of one tile, the authors' way.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 RGB tile at ``params.mpp`` (any size; 256 in the paper).
    stain
        ``"he"`` or ``"ihc"``.
    mask
        H&E only, required: (H, W) tumour mask of the tile (True = expert tumour annotation).
    params
        :class:`LibraryParams`; default the authors' values.
    details
        Also return the rasters behind the decisions (for overlays and tests) and the area
        fractions in ``info``; costs a few ms.

    Returns
    -------
    TileCells
    """
    from histolib.stain import separate

    params = params or LibraryParams()
    if stain not in STAINS:
        raise ConfigError(f"stain must be 'he' or 'ihc', not {stain!r}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ImageError(f"expected an (H, W, 3) RGB tile, got shape {rgb.shape}")
    shape = (int(rgb.shape[0]), int(rgb.shape[1]))
    if stain == "he":
        if mask is None:
            raise ConfigError("an H&E tile needs its tumour mask (the expert annotation)")
        mask = np.asarray(mask).astype(bool, copy=False)
        if mask.shape != shape:
            raise ImageError(f"mask shape {mask.shape} differs from the tile's {shape}")
        stains = separate(rgb, channels="h", dtype=np.float64)
        return _he_cells(stains.h, mask, params, shape, details)
    stains = separate(rgb, channels="hd", dtype=np.float64)
    return _ihc_cells(stains.h, stains.d, params, shape, details)


def _he_cells(
    h: np.ndarray, tumour: np.ndarray, params: LibraryParams, shape: tuple[int, int], details: bool
) -> TileCells:
    from histolib.library.clusters import (
        excluded_at,
        exclusion_geometry,
        find_clusters,
        hull_raster,
    )
    from histolib.stain import disk_dilate

    normal = _detect(h, params, "he_normal")
    clusters = find_clusters(
        normal.xy, max_distance=params.graph_distance, min_size=params.min_cluster_size
    )
    hull = hull_raster(normal.xy, clusters, shape=shape)
    members = clusters.members()
    keep_normal = np.zeros(len(normal), dtype=bool)
    keep_normal[members] = True

    cancer = _detect(h, params, "he_cancer")
    rows, cols = _pixel_rc(cancer.xy, shape)
    # The decision is the authors' raster test on the candidate's pixel: the tumour mask
    # (centre-pixel rasterisation of the contour) and the PIL-drawn hulls dilated by a disk.
    # The shapely exclusion below can differ from that raster by a boundary pixel; it is
    # used for drawing and storing, never for deciding.
    in_tumour = tumour[rows, cols]
    keep_cancer = in_tumour.copy()
    if in_tumour.any():
        keep_cancer[in_tumour] = ~excluded_at(
            hull, rows[in_tumour], cols[in_tumour], radius=params.dilation_radius
        )

    boxes, centres, labels, sigmas, passes = _assemble(
        [
            (normal, keep_normal, "normal", "he_normal"),
            (cancer, keep_cancer, "cancer", "he_cancer"),
        ],
        params=params,
        shape=shape,
    )
    ge2 = [s for s in clusters.sizes if s >= 2]
    info: dict[str, Any] = {
        "n_normal_blobs": len(normal),
        "n_clusters_total": len(ge2),
        "n_clusters_ge3": sum(1 for s in clusters.sizes if s >= params.min_cluster_size),
        "cluster_sizes": ge2,
        "n_isolated_points": len(clusters.isolated()),
        "n_normal_cells_in_hulls": len(members),
        "n_cancer_blobs": len(cancer),
        "n_cancer_blobs_in_mask": int(keep_cancer.sum()),
        "detector": params.detector,
    }
    masks: dict[str, np.ndarray] = {}
    if details:
        dilated = disk_dilate(hull, params.dilation_radius)
        full = tumour & ~dilated
        info.update(
            annotation_fraction=float(tumour.mean()),
            hull_mask_fraction=float(
                hull_raster(normal.xy, clusters, shape=shape, points=False).mean()
            ),
            dilated_exclusion_fraction=float(dilated.mean()),
            full_mask_fraction=float(full.mean()),
        )
        masks = {"hull": hull, "exclusion": dilated, "full": full, "tumour": tumour}
    return TileCells(
        boxes=boxes,
        centres=centres,
        labels=labels,
        sigma=sigmas,
        passes=passes,
        info=info,
        exclusion=exclusion_geometry(clusters, radius=params.dilation_radius) if details else None,
        masks=masks,
    )


def _ihc_cells(
    h: np.ndarray, d: np.ndarray, params: LibraryParams, shape: tuple[int, int], details: bool
) -> TileCells:
    from histolib.stain import dab_mask_details

    dab = dab_mask_details(
        d,
        sigma=params.dab_sigma,
        closing_radius=params.dab_closing_radius,
        no_stain_mean=params.dab_no_stain_mean,
        threshold=params.dab_threshold,
    )
    normal = _detect(h, params, "ihc_normal")
    rows, cols = _pixel_rc(normal.xy, shape)
    keep_normal = ~dab.mask[rows, cols]
    cancer = _detect(1 - d, params, "ihc_cancer")
    rows, cols = _pixel_rc(cancer.xy, shape)
    keep_cancer = dab.mask[rows, cols]
    boxes, centres, labels, sigmas, passes = _assemble(
        [
            (normal, keep_normal, "normal", "ihc_normal"),
            (cancer, keep_cancer, "cancer", "ihc_cancer"),
        ],
        params=params,
        shape=shape,
    )
    info: dict[str, Any] = {
        "otsu_T": dab.threshold,
        "mean_dab_gray": dab.mean_dab,
        "adhoc_rule_zeroed_mask": dab.zeroed,
        "dab_mask_fraction": dab.raw_fraction,
        "full_mask_fraction": float(dab.mask.mean()),
        "n_normal_blobs": len(normal),
        "n_normal_blobs_outside_mask": int(keep_normal.sum()),
        "n_cancer_blobs": len(cancer),
        "n_cancer_blobs_in_mask": int(keep_cancer.sum()),
        "detector": params.detector,
    }
    return TileCells(
        boxes=boxes,
        centres=centres,
        labels=labels,
        sigma=sigmas,
        passes=passes,
        info=info,
        masks={"dab": dab.mask} if details else {},
    )


# --------------------------------------------------------------------------------------
# library rows


def library_rows(
    cells: TileCells,
    *,
    tile_id: str,
    slide_id: str,
    tile_x0: float = 0.0,
    tile_y0: float = 0.0,
    downsample: float = 1.0,
) -> list[dict[str, Any]]:
    """One dict a cell with the :data:`histolib.library.cellio.LIBRARY_COLUMNS` (no geometry).

    Level-0 centre ``x = tile_x0 + tile_x * downsample`` (likewise ``y``); the box geometry
    is made from ``box_*`` the same way by :func:`rows_to_frame`.
    """
    rows = []
    for i in range(len(cells)):
        bx0, by0, bx1, by1 = (int(v) for v in cells.boxes[i])
        tx, ty = (int(v) for v in cells.centres[i])
        rows.append(
            {
                "tile_id": tile_id,
                "slide_id": slide_id,
                "label": cells.labels[i],
                "x": float(tile_x0 + tx * downsample),
                "y": float(tile_y0 + ty * downsample),
                "tile_x": tx,
                "tile_y": ty,
                "box_x0": bx0,
                "box_y0": by0,
                "box_x1": bx1,
                "box_y1": by1,
                "sigma": float(cells.sigma[i]),
                "pass": cells.passes[i],
                "tile_x0": float(tile_x0),
                "tile_y0": float(tile_y0),
                "downsample": float(downsample),
            }
        )
    return rows


def rows_to_frame(rows: list[dict[str, Any]]) -> Any:
    """A cell-library GeoDataFrame from :func:`library_rows` dicts (box geometry, level 0)."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from histolib.library.cellio import LIBRARY_COLUMNS, empty_library

    if not rows:
        return empty_library()
    frame = pd.DataFrame(rows, columns=list(LIBRARY_COLUMNS))
    ds = frame["downsample"].to_numpy(float)
    ox, oy = frame["tile_x0"].to_numpy(float), frame["tile_y0"].to_numpy(float)
    geometry = shapely.box(
        ox + frame["box_x0"].to_numpy(float) * ds,
        oy + frame["box_y0"].to_numpy(float) * ds,
        ox + frame["box_x1"].to_numpy(float) * ds,
        oy + frame["box_y1"].to_numpy(float) * ds,
    )
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=None)


# --------------------------------------------------------------------------------------
# building a library from tiles


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to process one tile (picklable)."""

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


def read_tile_image(path: str | Path, *, expected_size: int | None = None) -> np.ndarray:
    """Read an RGB tile image; ``ImageError`` naming the file when unreadable or malformed."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in ("RGB", "RGBA", "P"):
                raise ImageError(
                    f"expected an RGB image, got {len(img.getbands())} channel(s) (mode {mode})",
                    path=path,
                )
            if mode in ("RGBA", "P"):
                # transparent areas are white, as in slides: dropping the alpha channel would
                # leave black there, which the pipeline takes for dark nuclei
                rgba = img.convert("RGBA")
                rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
                rgb = np.asarray(rgba.convert("RGB"))
            else:
                rgb = np.asarray(img.convert("RGB"))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("tile image not found", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"cannot read image ({exc.__class__.__name__})", path=path) from None
    if expected_size is not None and rgb.shape[:2] != (expected_size, expected_size):
        raise ImageError(
            f"tile is {rgb.shape[1]}x{rgb.shape[0]} px, the manifest says "
            f"{expected_size}x{expected_size}",
            path=path,
        )
    return rgb


def read_mask_image(path: str | Path, *, shape: tuple[int, int]) -> np.ndarray:
    """Read a tumour mask PNG (non-zero = tumour) of the tile's ``shape`` (rows, cols)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except FileNotFoundError:
        raise ImageError("mask not found", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"cannot read mask ({exc.__class__.__name__})", path=path) from None
    if arr.ndim == 3:
        arr = arr.any(axis=2) if arr.shape[2] < 4 else arr[:, :, :3].any(axis=2)
    if arr.shape[:2] != tuple(shape):
        raise ImageError(
            f"mask is {arr.shape[1]}x{arr.shape[0]} px, its tile {shape[1]}x{shape[0]}",
            path=path,
        )
    return arr != 0


_REGION_CACHE: dict[tuple[str, tuple[str, ...] | None], Any] = {}


def _tumour_geometry(path: str, classes: tuple[str, ...] | None) -> Any:
    key = (path, classes)
    if key not in _REGION_CACHE:
        import warnings

        from histolib.annotations import read_annotations, tumour_region

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _REGION_CACHE[key] = tumour_region(read_annotations(path), classes=classes)
    return _REGION_CACHE[key]


def job_mask(job: TileJob, shape: tuple[int, int]) -> np.ndarray | None:
    """The tumour mask of an H&E job (PNG mask, or contours rasterised at pixel centres)."""
    if job.stain != "he":
        return None
    if job.mask_path is not None:
        return read_mask_image(job.mask_path, shape=shape)
    if job.annotation_path is None:
        return np.zeros(shape, dtype=bool)
    from histolib.annotations.regions import rasterize

    geometry = _tumour_geometry(job.annotation_path, job.classes)
    return rasterize(geometry, x0=job.x0, y0=job.y0, downsample=job.downsample, shape=shape)


def run_tile_job(job: TileJob) -> dict[str, Any]:
    """Process one tile: read, detect, write the cached result; returns that result."""
    from histolib.core.atomic import write_text

    params = params_from_dict(job.params).for_tile_mpp(job.tile_mpp)
    rgb = read_tile_image(job.image_path, expected_size=job.expected_size)
    shape = (int(rgb.shape[0]), int(rgb.shape[1]))
    mask = job_mask(job, shape)
    cells = tile_cells(rgb, stain=job.stain, mask=mask, params=params)
    rows = library_rows(
        cells,
        tile_id=job.tile_id,
        slide_id=job.slide_id,
        tile_x0=job.x0,
        tile_y0=job.y0,
        downsample=job.downsample,
    )
    result = {
        "tile_id": job.tile_id,
        "slide_id": job.slide_id,
        "image": job.image_path,
        "n_cancer": cells.n_cancer,
        "n_normal": cells.n_normal,
        "info": cells.info,
        "rows": rows,
    }
    if job.cache_path:
        write_text(job.cache_path, json.dumps(result, default=_json_default))
    return result


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _file_stamp(path: str | Path | None) -> str:
    if path is None:
        return "-"
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    return "missing"


def _cache_path(work: Path, job: TileJob) -> Path:
    key = json.dumps(
        [
            job.tile_id,
            job.stain,
            job.params,
            job.tile_mpp,
            job.x0,
            job.y0,
            job.downsample,
            _file_stamp(job.image_path),
            _file_stamp(job.mask_path),
            _file_stamp(job.annotation_path),
            job.classes,
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job.tile_id)[:80]
    return work / f"{safe}-{digest}.json"


def _load_cached(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "rows" in data else None


def manifest_jobs(
    manifest: str | Path,
    *,
    stain: str,
    params: LibraryParams,
    annotations: str | Path | None = None,
    positive_classes: list[str] | None = None,
) -> list[TileJob]:
    """One :class:`TileJob` a manifest tile of ``stain``.

    H&E masks come from the slide's contours: ``annotations`` (a file, or a folder with
    ``<slide_id>.geojson``) or else the annotation file ``histolib tile`` recorded for each
    slide in the manifest's parameters (``slides.<slide_id>.annotation_path``, or a global
    ``annotations`` entry); a slide without contours has an empty mask (no cancer cells).
    Positive classes: ``positive_classes``, else the manifest's, else every annotation.
    """
    from histolib.tiles.manifest import (
        read_manifest,
        recorded_annotations,
        slide_annotation_file,
        tile_image_path,
    )

    manifest = Path(manifest)
    gdf, meta = read_manifest(manifest)
    mparams = meta.get("params") or {}
    if len(gdf) == 0:
        raise InputError("the manifest holds no tiles", path=manifest)
    gdf = gdf[gdf["stain"].astype(str) == stain]
    if len(gdf) == 0:
        raise InputError(f"the manifest holds no {stain} tiles", path=manifest)
    # --annotations wins; else what `histolib tile` recorded per slide; else a global entry
    source = annotations if annotations is not None else recorded_annotations(meta)
    classes = positive_classes or mparams.get("positive_classes") or None
    classes_t = tuple(classes) if classes else None
    base = manifest.resolve().parent
    if stain == "he" and not source:
        raise InputError(
            "H&E tiles need the tumour contours: the manifest records no annotations; "
            "give --annotations FILE_OR_DIR",
            path=manifest,
        )
    jobs = []
    ann_cache: dict[str, str | None] = {}
    for _, row in gdf.iterrows():
        if not str(row["path"]):
            raise InputError(
                f"tile {row['tile_id']} has no image (tiles written with --format none)",
                path=manifest,
            )
        slide_id = str(row["slide_id"])
        ann = None
        if stain == "he":
            if slide_id not in ann_cache:
                found = slide_annotation_file(source, slide_id, base=base)
                ann_cache[slide_id] = None if found is None else str(found)
            ann = ann_cache[slide_id]
        jobs.append(
            TileJob(
                tile_id=str(row["tile_id"]),
                slide_id=slide_id,
                image_path=str(tile_image_path(manifest, row)),
                stain=stain,
                params=params.to_dict(),
                x0=float(row["x0"]),
                y0=float(row["y0"]),
                downsample=float(row["downsample"]),
                tile_mpp=float(row["mpp"]),
                expected_size=int(row["size_px"]),
                annotation_path=ann,
                classes=classes_t,
            )
        )
    return jobs


def folder_jobs(
    images: str | Path,
    *,
    stain: str,
    params: LibraryParams,
    masks: str | Path | None = None,
    tile_mpp: float = 0.5,
) -> list[TileJob]:
    """One :class:`TileJob` a PNG in ``images`` (each its own slide, origin (0, 0)).

    H&E tiles need a mask PNG of the same stem in ``masks`` (non-zero = tumour).
    """
    images = Path(images)
    if not images.is_dir():
        raise InputError("no such folder of tiles", path=images)
    files = sorted(
        p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError("no PNG tiles in this folder", path=images)
    mask_dir = Path(masks) if masks is not None else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise InputError("no such folder of masks", path=mask_dir)
    if stain == "he" and mask_dir is None:
        raise InputError("H&E tiles need their tumour masks: give --masks DIR", path=images)
    jobs = []
    for path in files:
        mask_path = None
        if stain == "he" and mask_dir is not None:
            candidates = [mask_dir / f"{path.stem}{s}" for s in (".png", ".PNG")]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise ImageError(f"no mask {path.stem}.png in {mask_dir}", path=path)
            mask_path = str(found[0])
        jobs.append(
            TileJob(
                tile_id=path.stem,
                slide_id=path.stem,
                image_path=str(path),
                stain=stain,
                params=params.to_dict(),
                tile_mpp=tile_mpp,
                mask_path=mask_path,
            )
        )
    return jobs


def counts_path(out: str | Path) -> Path:
    """The per-tile count table written beside library ``out``: ``<stem>_tiles.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_tiles.csv")


def overlays_dir(out: str | Path) -> Path:
    """The QC overlay folder beside library ``out``: ``<stem>_overlays/``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_overlays")


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
    overlays: int = 0,
    annotations: str | Path | None = None,
    positive_classes: list[str] | None = None,
    tile_mpp: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build a cell library from a tile manifest or a folder of PNG tiles.

    Parameters
    ----------
    manifest
        A tile manifest (``histolib tile``); exclusive with ``images``.
    images, masks
        A folder of PNG tiles (each its own slide, origin (0, 0), at ``tile_mpp``) and, for
        H&E, a folder of masks with the same stems (non-zero = tumour).
    stain
        ``"he"`` or ``"ihc"``.
    out
        The library, ``.parquet`` (GeoParquet) or ``.geojson`` (FeatureCollection).
    params
        :class:`LibraryParams`; None = the ``preset`` (``authors`` or ``paper``).
    workers
        Processes (default: CPU count); 1 runs inline.
    overlays
        Number of random tiles drawn as QC pictures into ``<stem>_overlays/``.
    annotations
        H&E with a manifest: contours file or folder (default: what the manifest records).
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
        ``out``. Beside it: ``<stem>_tiles.csv`` (counts a tile), the overlays, and the hidden
        cache ``.<name>.work/`` that makes a re-run skip finished tiles.
    """
    from histolib.core.atomic import ensure_writable_dir, write_text
    from histolib.core.progress import imap_processes, make_progress
    from histolib.library.cellio import LIBRARY_SUFFIXES, write_library

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
    params = params or resolve_params(preset=preset)
    if manifest is not None:
        jobs = manifest_jobs(
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
    seen: set[str] = set()
    for job in jobs:
        if job.tile_id in seen:
            raise InputError(f"two tiles share the id {job.tile_id!r}", path=job.image_path)
        seen.add(job.tile_id)
    ensure_writable_dir(out.parent)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    jobs = [dataclasses.replace(j, cache_path=str(_cache_path(work, j))) for j in jobs]

    results: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        cached = _load_cached(Path(job.cache_path))
        if cached is not None:
            results[job.tile_id] = cached
        else:
            todo.append(job)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(todo) or 1))
    with make_progress(disable=not progress) as bar:
        task = bar.add_task(f"cells ({stain})", total=len(jobs), completed=len(results))
        for job, result in imap_processes(run_tile_job, todo, workers=n_workers):
            if isinstance(result, BaseException):
                raise result
            results[job.tile_id] = result
            bar.advance(task)

    ordered = [results[j.tile_id] for j in jobs]
    rows = [row for res in ordered for row in res["rows"]]
    gdf = rows_to_frame(rows)
    meta_params = {
        "stain": stain,
        "preset": preset,
        "source": str(manifest if manifest is not None else images),
        "masks": None if masks is None else str(masks),
        "n_tiles": len(jobs),
        "n_cancer": int(sum(r["n_cancer"] for r in ordered)),
        "n_normal": int(sum(r["n_normal"] for r in ordered)),
        "library": params.to_dict(),
        "distance_unit": f"px at {params.mpp} um/px; scaled by mpp / tile mpp for other tiles",
    }
    meta_params["tile_mpps"] = sorted({j.tile_mpp for j in jobs if j.tile_mpp is not None})
    write_library(gdf, out, params=meta_params)
    write_text(counts_path(out), _counts_csv(ordered))
    if overlays:
        write_overlays(jobs, out=out, count=overlays, seed=seed)
    return out


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
                json.dumps(info, default=_json_default, sort_keys=True),
            ]
        )
    return buf.getvalue()


def write_overlays(jobs: list[TileJob], *, out: str | Path, count: int, seed: int = 0) -> Path:
    """Draw ``count`` random tiles with their boxes (QC pictures) into ``<stem>_overlays/``."""
    from histolib.library.overlays import draw_overlay

    folder = overlays_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(jobs), size=min(count, len(jobs)), replace=False).tolist())
    for index in chosen:
        job = jobs[index]
        params = params_from_dict(job.params).for_tile_mpp(job.tile_mpp)
        rgb = read_tile_image(job.image_path, expected_size=job.expected_size)
        mask = job_mask(job, (int(rgb.shape[0]), int(rgb.shape[1])))
        cells = tile_cells(rgb, stain=job.stain, mask=mask, params=params, details=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job.tile_id)
        draw_overlay(rgb, cells, path=folder / f"{safe}.png")
    return folder
