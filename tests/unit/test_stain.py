"""Tests of histolib.stain: the authors' HED separation and DAB mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.color import hed2rgb, rgb2gray, rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import closing, dilation, disk

from histolib.errors import ImageError
from histolib.stain import dab_mask, dab_mask_details, disk_closing, disk_dilate, separate


def _authors_gray(rgb: np.ndarray, index: int) -> np.ndarray:
    hed = rgb2hed(rgb)
    null = np.zeros_like(hed[:, :, 0])
    parts = [null, null, null]
    parts[index] = hed[:, :, index]
    return rgb2gray(hed2rgb(np.stack(parts, axis=-1)))


def _random_tile(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def test_separate_matches_the_authors_decomposition() -> None:
    rgb = _random_tile(0)
    stains = separate(rgb, dtype=np.float64)
    for index, img in enumerate((stains.h, stains.e, stains.d)):
        np.testing.assert_array_equal(img, _authors_gray(rgb, index))


def test_separate_default_is_float32_in_unit_range() -> None:
    stains = separate(_random_tile(1))
    for img in (stains.h, stains.e, stains.d):
        assert img.dtype == np.float32
        assert img.shape == (64, 64)
        assert 0.0 <= float(img.min()) <= float(img.max()) <= 1.0


def test_separate_only_requested_channels_and_drops_alpha() -> None:
    rgba = np.dstack([_random_tile(2), np.full((64, 64), 255, np.uint8)])
    stains = separate(rgba, channels="hd")
    assert stains.e is None
    assert stains.h is not None and stains.d is not None


def test_separate_dark_nucleus_is_dark_in_h() -> None:
    rgb = np.full((32, 32, 3), 235, np.uint8)
    rgb[12:20, 12:20] = (60, 40, 140)  # haematoxylin-blue blob
    h = separate(rgb).h
    assert h[16, 16] < h[2, 2] - 0.2


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 2), (0, 5, 3)])
def test_separate_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageError):
        separate(np.zeros(shape, np.uint8))


def test_disk_morphology_equals_skimage() -> None:
    rng = np.random.default_rng(3)
    from scipy import ndimage as ndi

    for trial in range(25):
        n = int(rng.integers(15, 70))
        mask = ndi.gaussian_filter(rng.random((n, n + 5)), rng.uniform(1, 4)) > 0.5
        if trial % 5 == 0:
            mask = rng.random((n, n + 5)) < 0.02
        radius = int(rng.integers(1, 11))
        np.testing.assert_array_equal(disk_dilate(mask, radius), dilation(mask, disk(radius)))
        np.testing.assert_array_equal(disk_closing(mask, radius), closing(mask, disk(radius)))
    empty = np.zeros((9, 9), bool)
    assert not disk_dilate(empty, 3).any()
    assert disk_closing(~empty, 3).all()


def test_dab_mask_matches_authors_steps() -> None:
    rng = np.random.default_rng(4)
    d = np.clip(gaussian(rng.random((80, 80)), 3) * 2 - 0.3, 0, 1)
    filtered = gaussian(d, sigma=1.0)
    expected = closing(filtered < threshold_otsu(filtered), disk(9))
    if d.mean() > 0.85:
        expected[:] = False
    np.testing.assert_array_equal(dab_mask(d), expected)


def test_dab_mask_no_stain_rule_and_blank() -> None:
    white = np.ones((40, 40))
    assert not dab_mask(white).any()
    pale = np.full((40, 40), 0.9)
    pale[10:20, 10:20] = 0.5
    details = dab_mask_details(pale)
    assert details.zeroed and not details.mask.any()
    assert details.raw_fraction > 0
    kept = dab_mask_details(pale, no_stain_mean=0.95)
    assert not kept.zeroed and kept.mask[15, 15]


def test_dab_mask_fixed_threshold() -> None:
    d = np.linspace(0, 1, 100).reshape(10, 10)
    mask = dab_mask(d, sigma=0, closing_radius=0, threshold=0.5, no_stain_mean=1.0)
    np.testing.assert_array_equal(mask, d < 0.5)


def test_dab_mask_reproduces_reference_ihc_tile(shared_data) -> None:
    ref = json.loads((shared_data / "reference" / "ihc_000.json").read_text())
    rgb = np.asarray(Image.open(shared_data / "tiles" / "roigan" / "ihc_000.png").convert("RGB"))
    d = separate(rgb, channels="d", dtype=np.float64).d
    details = dab_mask_details(d)
    info = ref["pipeline_info"]
    assert details.threshold == pytest.approx(info["otsu_T"], abs=1e-12)
    assert details.mean_dab == pytest.approx(info["mean_dab_gray"], abs=1e-12)
    assert details.zeroed == info["adhoc_rule_zeroed_mask"]
    assert details.raw_fraction == info["dab_mask_fraction"]
    full = np.asarray(Image.open(shared_data / "reference" / "ihc_000_full_mask.png")) > 0
    np.testing.assert_array_equal(details.mask, full)
    # float32 (the public default) gives the same mask on this real tile
    np.testing.assert_array_equal(dab_mask(separate(rgb, channels="d").d), full)
