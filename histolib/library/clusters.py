"""The healthy-cell graph: clusters of normal nuclei and the region they exclude.

The authors connect two normal nuclei when their centres are at most ``35`` px apart, take the
connected components, fill the convex hull of each component of at least 3 cells, mark the
cells of smaller components as single pixels, dilate the whole by a disk of radius 10 and
remove that from the expert tumour annotation; cancer nuclei are kept only in what remains.

Here the graph is built with a k-d tree (``scipy.spatial.cKDTree.query_pairs``, the pairs at
distance ``<= max_distance``, as the authors' ``dists <= 35``) and split with networkx; each
component's region is shapely geometry (a convex hull polygon; a point; a line for collinear
cells, where ``scipy.spatial.ConvexHull`` -- the authors' call -- raises), and the exclusion is
the union of the regions grown by the dilation radius.

Where this matters for the boxes: the *decision* for a cancer candidate is a pixel test, and
the authors made it against a raster (PIL's polygon fill of the hull, outline included, then
``skimage.morphology.dilation`` by ``disk(10)``), which can differ from the exact geometry by
a boundary pixel. :func:`exclusion_raster` rebuilds that raster exactly and
:func:`excluded_at` tests the candidate's pixel against it (a distance transform equals the
disk dilation); the shapely geometry is what the library stores and draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Clusters:
    """Connected components of the healthy-cell graph.

    Attributes
    ----------
    components
        One int array of point indices per component, largest first (ties: lowest index).
    min_size
        Components of at least this many cells are clusters (their cells are the normal
        cells of the library and their hull is excluded); smaller ones are isolated cells.
    regions
        Shapely geometry of each component in tile px (pixel-centre coordinates, x = column +
        0.5): Polygon (hull), LineString (collinear cells) or Point/MultiPoint.
    """

    components: list[np.ndarray]
    min_size: int
    regions: list[Any] = field(default_factory=list)
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.components]

    def members(self) -> np.ndarray:
        """Indices of the cells in components of at least ``min_size`` cells (sorted)."""
        big = [c for c in self.components if len(c) >= self.min_size]
        return np.sort(np.concatenate(big)) if big else np.zeros(0, dtype=int)

    def isolated(self) -> np.ndarray:
        """Indices of the cells in components smaller than ``min_size``."""
        small = [c for c in self.components if len(c) < self.min_size]
        return np.sort(np.concatenate(small)) if small else np.zeros(0, dtype=int)


def find_clusters(xy: np.ndarray, *, max_distance: float, min_size: int = 3) -> Clusters:
    """Connect cells at most ``max_distance`` apart; return the connected components.

    Parameters
    ----------
    xy
        (n, 2) cell centres, x = column, y = row, in tile px (pixel indices).
    max_distance
        Edge when the Euclidean distance is ``<= max_distance`` (the authors: 35).
    min_size
        Smallest component treated as a cluster (the authors: 3).
    """
    import networkx as nx
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(xy)))
    if len(xy) > 1:
        graph.add_edges_from(cKDTree(xy).query_pairs(float(max_distance)))
    components = [np.array(sorted(c), dtype=int) for c in nx.connected_components(graph)]
    components.sort(key=lambda c: (-len(c), int(c[0])))
    regions = [component_region(xy[c]) for c in components]
    return Clusters(components=components, min_size=min_size, regions=regions, xy=xy)


def component_region(xy: np.ndarray) -> Any:
    """Shapely region of one component: convex hull, or its degenerate line / point(s).

    Coordinates are pixel centres (index + 0.5) so the geometry overlays the image.
    """
    from shapely.geometry import MultiPoint

    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5
    return MultiPoint([tuple(p) for p in pts]).convex_hull


def exclusion_geometry(clusters: Clusters, *, radius: float) -> Any:
    """Union of the cluster regions (hulls of >= ``min_size`` cells; isolated cells as points)
    grown by ``radius`` px: the area where cancer cells are not taken (tile px geometry)."""
    from shapely.geometry import MultiPoint, Polygon
    from shapely.ops import unary_union

    parts = []
    for comp, region in zip(clusters.components, clusters.regions, strict=True):
        if len(comp) >= clusters.min_size:
            parts.append(region)
        else:  # isolated cells and pairs: the cells themselves, as points
            parts.append(MultiPoint([tuple(p) for p in clusters.xy[comp] + 0.5]))
    if not parts:
        return Polygon()
    return unary_union([p.buffer(radius) for p in parts])


def hull_raster(
    xy: np.ndarray, clusters: Clusters, *, shape: tuple[int, int], points: bool = True
) -> np.ndarray:
    """The authors' undilated exclusion raster, (H, W) bool.

    Each component of at least ``min_size`` cells: its convex hull drawn with
    ``PIL.ImageDraw.polygon(..., outline=1, fill=1)`` in pixel-index coordinates (x = column),
    as the authors' ``get_cluster_mask``; a degenerate (collinear) hull, where their
    ``ConvexHull`` call crashes, is drawn as the line through the cells. Cells of smaller
    components are single pixels (``points=False`` leaves them out: the authors'
    ``get_cluster_mask`` alone).
    """
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull, QhullError

    height, width = shape
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    for comp in clusters.components:
        if len(comp) < clusters.min_size:
            continue
        pts = xy[comp]
        try:
            hull = ConvexHull(pts)
            draw.polygon([tuple(pts[i]) for i in hull.vertices], outline=1, fill=1)
        except QhullError:
            order = np.lexsort((pts[:, 1], pts[:, 0]))
            ends = [tuple(pts[order[0]]), tuple(pts[order[-1]])]
            draw.line(ends, fill=1, width=1)
    mask = np.array(canvas, dtype=bool)
    iso = clusters.isolated() if points else np.zeros(0, dtype=int)
    if len(iso):
        cols = xy[iso, 0].astype(int)
        rows = xy[iso, 1].astype(int)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        mask[rows[inside], cols[inside]] = True
    return mask


def exclusion_raster(
    xy: np.ndarray, clusters: Clusters, *, shape: tuple[int, int], radius: float
) -> np.ndarray:
    """:func:`hull_raster` dilated by ``disk(radius)`` (the authors' ``dilation``)."""
    from histolib.stain import disk_dilate

    return disk_dilate(hull_raster(xy, clusters, shape=shape), radius)


def excluded_at(
    hull: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, radius: float
) -> np.ndarray:
    """Whether pixels ``(rows, cols)`` lie in ``disk(radius)``-dilation of ``hull``.

    The same answer as indexing :func:`exclusion_raster`, computed only where the test is
    needed: a hull pixel within Euclidean distance ``radius`` of the pixel.
    """
    rows = np.asarray(rows, dtype=int)
    cols = np.asarray(cols, dtype=int)
    out = np.zeros(len(rows), dtype=bool)
    if not hull.any() or len(rows) == 0:
        return out
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    dy, dx = dy[keep], dx[keep]
    height, width = hull.shape
    for i, (row, col) in enumerate(zip(rows, cols, strict=True)):
        yy, xx = row + dy, col + dx
        ok = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        out[i] = bool(hull[yy[ok], xx[ok]].any())
    return out
