"""Tests of histolib.library.clusters: healthy-cell graph, regions, the authors' exclusion
raster."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull
from skimage.morphology import dilation, disk

from histolib.library.clusters import (
    component_region,
    excluded_at,
    exclusion_geometry,
    exclusion_raster,
    find_clusters,
    hull_raster,
)


def _authors_mask(xy: np.ndarray, clusters, shape) -> np.ndarray:
    """The authors' get_cluster_mask plus isolated cells as pixels, dilated by disk(10)."""
    mask = Image.new("1", (shape[1], shape[0]), 0)
    for comp in clusters.components:
        if len(comp) < 3:
            continue
        pts = [tuple(xy[i]) for i in comp]
        hull = ConvexHull(pts)
        ImageDraw.Draw(mask).polygon([tuple(pts[i]) for i in hull.vertices], outline=1, fill=1)
    arr = np.array(mask)
    for comp in clusters.components:
        if len(comp) < 3:
            for i in comp:
                arr[int(xy[i, 1]), int(xy[i, 0])] = True
    return dilation(arr, disk(10))


def test_edges_include_the_threshold_distance() -> None:
    xy = np.array([[0, 0], [21, 28], [100, 100]], dtype=float)  # first two exactly 35 apart
    clusters = find_clusters(xy, max_distance=35)
    assert clusters.sizes == [2, 1]
    assert find_clusters(xy, max_distance=34.99).sizes == [1, 1, 1]


def test_components_are_sorted_and_members_split() -> None:
    xy = np.array([[0, 0], [10, 0], [20, 0], [200, 200], [210, 200], [100, 50]], dtype=float)
    clusters = find_clusters(xy, max_distance=15, min_size=3)
    assert clusters.sizes == [3, 2, 1]
    assert clusters.members().tolist() == [0, 1, 2]
    assert clusters.isolated().tolist() == [3, 4, 5]


def test_empty_one_and_two_cells() -> None:
    empty = find_clusters(np.zeros((0, 2)), max_distance=35)
    assert empty.sizes == [] and len(empty.members()) == 0
    assert exclusion_geometry(empty, radius=10).is_empty
    assert not hull_raster(np.zeros((0, 2)), empty, shape=(32, 32)).any()
    one = np.array([[10.0, 12.0]])
    c1 = find_clusters(one, max_distance=35)
    assert c1.regions[0].geom_type == "Point"
    raster = hull_raster(one, c1, shape=(32, 32))
    assert raster.sum() == 1 and raster[12, 10]
    two = np.array([[10.0, 12.0], [20.0, 12.0]])
    c2 = find_clusters(two, max_distance=35)
    assert c2.regions[0].geom_type == "LineString"
    geom = exclusion_geometry(c2, radius=5)
    assert geom.contains(component_region(two[:1]))
    assert hull_raster(two, c2, shape=(32, 32)).sum() == 2  # pair: two single pixels


def test_three_collinear_cells_give_a_buffered_line() -> None:
    xy = np.array([[10.0, 40.0], [30.0, 40.0], [50.0, 40.0]])
    clusters = find_clusters(xy, max_distance=35)
    assert clusters.sizes == [3]
    assert clusters.regions[0].geom_type == "LineString"
    geom = exclusion_geometry(clusters, radius=10)
    assert geom.geom_type == "Polygon" and geom.area > 40 * 20
    raster = hull_raster(xy, clusters, shape=(64, 64))
    assert raster[40, 10:51].all() and raster.sum() == 41
    excl = exclusion_raster(xy, clusters, shape=(64, 64), radius=10)
    assert excl[50, 30] and not excl[51, 30]


@pytest.mark.parametrize("seed", range(8))
def test_raster_matches_the_authors_on_random_cells(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    xy = rng.integers(0, 256, size=(n, 2)).astype(float)
    xy = np.unique(xy, axis=0)
    clusters = find_clusters(xy, max_distance=35)
    expected = _authors_mask(xy, clusters, (256, 256))
    got = exclusion_raster(xy, clusters, shape=(256, 256), radius=10)
    np.testing.assert_array_equal(got, expected)
    rows, cols = rng.integers(0, 256, size=(2, 200))
    np.testing.assert_array_equal(
        excluded_at(hull_raster(xy, clusters, shape=(256, 256)), rows, cols, radius=10),
        expected[rows, cols],
    )


def test_geometry_and_raster_agree_away_from_boundaries() -> None:
    rng = np.random.default_rng(5)
    xy = np.unique(rng.integers(20, 230, size=(40, 2)).astype(float), axis=0)
    clusters = find_clusters(xy, max_distance=35)
    geom = exclusion_geometry(clusters, radius=10)
    raster = exclusion_raster(xy, clusters, shape=(256, 256), radius=10)
    import shapely

    cols, rows = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5)
    inside = shapely.contains_xy(geom, cols, rows)
    far = shapely.distance(geom.boundary, shapely.points(cols, rows)) > 1.5
    np.testing.assert_array_equal(inside[far], raster[far])
