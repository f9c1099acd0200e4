"""Tests of histolib.library.cells: the FFT LoG detector equals skimage's blob_log exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.feature import blob_log
from skimage.filters import gaussian

from histolib.library import cells
from histolib.stain import separate
from tests.helpers_library import draw_tile, ihc_tile, random_tile

PASSES = [
    dict(gauss_sigma=2, min_sigma=1, max_sigma=2, threshold=0.1),
    dict(gauss_sigma=1, min_sigma=10, max_sigma=12, threshold=0.01),
    dict(gauss_sigma=2, min_sigma=1, max_sigma=3, threshold=0.08),
    dict(gauss_sigma=2, min_sigma=7, max_sigma=10, threshold=0.02),
]


def _authors(image: np.ndarray, gauss_sigma, min_sigma, max_sigma, threshold) -> np.ndarray:
    """The authors' get_cells, verbatim in behaviour (rows: row, col, sigma)."""
    inv = 1 - gaussian(image, sigma=gauss_sigma)
    return blob_log(
        inv, min_sigma=min_sigma, max_sigma=max_sigma, threshold=threshold, exclude_border=True
    )


def _same(blobs: cells.Blobs, reference: np.ndarray) -> bool:
    ref = cells.Blobs.from_rc_sigma(reference)
    return np.array_equal(blobs.xy, ref.xy) and np.array_equal(blobs.sigma, ref.sigma)


@pytest.mark.parametrize("name", ["he_000", "ihc_000"])
def test_fast_equals_blob_log_on_real_tiles(shared_data, name: str) -> None:
    rgb = np.asarray(Image.open(shared_data / "tiles" / "roigan" / f"{name}.png").convert("RGB"))
    stains = separate(rgb, dtype=np.float64)
    for image in (stains.h, 1 - stains.d):
        for kw in PASSES:
            fast = cells.detect_blobs(image, **kw)
            assert _same(fast, _authors(image, **kw))
            assert _same(cells.detect_blobs(image, method="skimage", **kw), _authors(image, **kw))


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_blob_log_on_synthetic_tiles(seed: int) -> None:
    rgb = random_tile(seed, size=128, n_small=25, n_large=3) if seed % 2 else ihc_tile(seed, 128)
    stains = separate(rgb, channels="hd", dtype=np.float64)
    for image in (stains.h, 1 - stains.d):
        for kw in PASSES:
            assert _same(cells.detect_blobs(image, **kw), _authors(image, **kw))


def test_detects_a_dark_nucleus_where_it_is() -> None:
    rgb = draw_tile(64, nuclei=[(40, 20, 3)])
    h = separate(rgb, channels="h", dtype=np.float64).h
    blobs = cells.detect_blobs(h, **PASSES[0])
    assert len(blobs) == 1
    assert tuple(blobs.xy[0]) == (40.0, 20.0)  # x = column, y = row
    assert 1 <= blobs.sigma[0] <= 2
    assert blobs.radius[0] == pytest.approx(blobs.sigma[0] * np.sqrt(2))


def test_blank_and_tiny_images_give_no_blobs() -> None:
    for image in (np.ones((64, 64)), np.zeros((64, 64)), np.ones((2, 2)), np.ones((0, 0))):
        for kw in PASSES:
            assert len(cells.detect_blobs(image, **kw)) == 0


def test_small_images_fall_back_to_direct_filtering() -> None:
    rgb = draw_tile(40, nuclei=[(20, 20, 10)])
    h = separate(rgb, channels="h", dtype=np.float64).h
    kw = PASSES[1]  # sigma 12: the kernel radius 48 exceeds the image
    assert cells.log_scale_space(1 - h, np.array([12.0])) is None
    assert _same(cells.detect_blobs(h, **kw), _authors(h, **kw))


def test_scale_space_matches_gaussian_laplace() -> None:
    rng = np.random.default_rng(0)
    image = gaussian(rng.random((90, 110)), 2)
    sigmas = np.linspace(1, 12, 5)
    cube = cells.log_scale_space(image, sigmas)
    for i, s in enumerate(sigmas):
        expected = -ndi.gaussian_laplace(image, s) * s**2
        np.testing.assert_allclose(cube[i], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("exclude_border", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_local_maxima_are_the_max_filter_peaks(seed: int, exclude_border: bool) -> None:
    # a smooth cube with plateaus: a grid of exact ties, as a flat LoG response gives
    rng = np.random.default_rng(seed)
    cube = ndi.gaussian_filter(rng.random((5, 40, 30)), (0.7, 2, 2))
    cube[2, 10:13, 10:13] = cube.max() + 0.01
    threshold, eps = float(np.quantile(cube, 0.3)), 1e-4
    coords, values, near = cells._local_maxima(
        cube, threshold=threshold, eps=eps, exclude_border=exclude_border
    )
    peaks = (cube > threshold - eps) & (
        cube >= ndi.maximum_filter(cube, size=3, mode="nearest") - 2 * eps
    )
    if exclude_border:
        peaks[:, [0, -1]] = peaks[:, :, [0, -1]] = False
    assert sorted(map(tuple, coords)) == sorted(map(tuple, np.argwhere(peaks)))
    np.testing.assert_array_equal(values, cube[tuple(coords.T)])
    assert near  # the plateau: its cells are each other's equal neighbours
    cube[2, 10:13, 10:13] = 0
    assert not cells._local_maxima(
        cube, threshold=cube.max() - 1e-9, eps=1e-12, exclude_border=True
    )[2]


def test_exact_ties_fall_back_and_stay_identical() -> None:
    # two identical nuclei placed symmetrically: their LoG peaks tie exactly
    rgb = draw_tile(96, nuclei=[(30, 48, 3), (66, 48, 3)])
    h = separate(rgb, channels="h", dtype=np.float64).h
    before = cells.FALLBACKS["fallback"]
    fast = cells.detect_blobs(h, **PASSES[0])
    assert cells.FALLBACKS["fallback"] == before + 1
    assert _same(fast, _authors(h, **PASSES[0]))
    assert len(fast) == 2


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        cells.detect_blobs(np.ones((4, 4, 3)), **PASSES[0])
    with pytest.raises(ValueError):
        cells.detect_blobs(np.ones((8, 8)), method="nope", **PASSES[0])
