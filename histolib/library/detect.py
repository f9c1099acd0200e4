"""Cells of one tile: the authors' detection rules, and the library rows of its cells.

:func:`tile_cells` runs the authors' pipeline on one tile (Boyd et al., MICCAI 2022,
``data/library_utils.py`` and the two ``library_demo`` notebooks; docs/fidelity.md):

H&E (needs the expert tumour mask of the tile)
    normal nuclei: LoG on the H image (:mod:`histolib.library.cells`); healthy-cell graph and
    cluster hulls (:mod:`histolib.library.clusters`); the normal cells of the library are the
    members of clusters of >= 3 cells. Cancer nuclei: LoG at sigma 10..12 on the H image, kept
    when the centre pixel is in the tumour mask and not in the dilated cluster exclusion.
IHC (no annotation)
    DAB mask (:func:`histolib.stain.dab_mask`); normal nuclei: LoG on H, kept outside the
    mask; cancer nuclei: LoG on ``1 - DAB`` (bright DAB-free nuclei in stained cytoplasm), kept
    inside the mask.

Each kept nucleus gets a ``box_size`` square box centred on it; boxes that would leave the
tile are dropped (the authors' ``get_crops_image``). Centres are the pixel indices that
``blob_log`` reports (``int`` of the blob centre), so box ``[x - 24, x + 24)`` is centred on
``x`` in continuous pixel coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from histolib.errors import ConfigError, ImageError
from histolib.library.params import LibraryParams
from histolib.stain import STAINS


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

    # the fields of a pass are detect_blobs' arguments, one to one
    passed = asdict(params.detector_params(name))
    return detect_blobs(image, **passed, method=params.detector)


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
    """The kept blobs of each detector pass as boxes, centres, labels, sigmas and pass names
    (the first five fields of :class:`TileCells`, in its order)."""
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

    cells = _assemble(
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
    exclusion = exclusion_geometry(clusters, radius=params.dilation_radius) if details else None
    return TileCells(*cells, info=info, exclusion=exclusion, masks=masks)


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
    cells = _assemble(
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
    return TileCells(*cells, info=info, masks={"dab": dab.mask} if details else {})


# --------------------------------------------------------------------------------------
# library rows


class TilePlace(Protocol):
    """Where a tile lies: its ids, level-0 origin and downsample (a manifest row, a
    :class:`~histolib.library.jobs.TileJob`)."""

    @property
    def tile_id(self) -> str: ...
    @property
    def slide_id(self) -> str: ...
    @property
    def x0(self) -> float: ...
    @property
    def y0(self) -> float: ...
    @property
    def downsample(self) -> float: ...


def library_rows(cells: TileCells, tile: TilePlace) -> list[dict[str, Any]]:
    """One dict a cell of ``tile`` with the :data:`histolib.library.cellio.LIBRARY_COLUMNS`
    (no geometry).

    Level-0 centre ``x = tile.x0 + tile_x * tile.downsample`` (likewise ``y``); the box
    geometry is made from ``box_*`` the same way by :func:`rows_to_frame`.
    """
    tile_x0, tile_y0, downsample = tile.x0, tile.y0, tile.downsample
    rows = []
    for i in range(len(cells)):
        bx0, by0, bx1, by1 = (int(v) for v in cells.boxes[i])
        tx, ty = (int(v) for v in cells.centres[i])
        rows.append(
            {
                "tile_id": tile.tile_id,
                "slide_id": tile.slide_id,
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
