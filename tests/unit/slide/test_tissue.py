"""Tests of histolib.slide.tissue: the tissue mask, its clean-up in microns, and its PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histolib.errors import ConfigError, ImageError
from histolib.slide.reader import open_slide
from histolib.slide.tissue import (
    block_fractions,
    load_mask_png,
    saturation,
    save_mask_png,
    tissue_mask,
    tissue_threshold,
)
from tests.helpers_tile import GLASS, tissue_image

MPP = 4.0  # um per px of the low-resolution images below


def disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (cols - cx) ** 2 + (rows - cy) ** 2 <= r * r


def test_saturation_range() -> None:
    rgb = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0], [100, 50, 50]]], dtype=np.uint8)
    np.testing.assert_allclose(saturation(rgb)[0], [0.0, 1.0, 0.0, 0.5])
    with pytest.raises(ImageError):
        saturation(np.zeros((4, 4)))


def test_finds_tissue_drops_specks_fills_small_holes() -> None:
    shape = (200, 300)
    rgb = tissue_image(300, 200, discs=[(100, 100, 60), (250, 40, 2)])
    hole_small = disc(shape, 100, 100, 5)  # 78 px * 16 um^2 = 1257 um^2 < 10000: filled
    hole_large = disc(shape, 100, 130, 20)  # 1257 px * 16 = 20000 um^2: kept open
    rgb[hole_small] = GLASS
    rgb[hole_large] = GLASS
    mask = tissue_mask(rgb, mpp=MPP)
    truth = disc(shape, 100, 100, 60)
    assert mask[hole_small].all()
    assert not mask[disc(shape, 100, 130, 15)].any()
    assert not mask[disc(shape, 250, 40, 4)].any()  # the speck (50 um^2) is gone
    inside = truth & ~hole_large
    assert mask[inside].mean() > 0.97
    assert mask[~disc(shape, 100, 100, 64)].sum() == 0


def test_min_region_area_is_in_square_microns() -> None:
    rgb = tissue_image(200, 100, discs=[(50, 50, 10)])  # ~314 px
    assert tissue_mask(rgb, mpp=MPP, min_region_um2=200 * 16).any()  # kept at 4 um/px
    assert not tissue_mask(rgb, mpp=MPP, min_region_um2=1000 * 16).any()
    # The same pixels at 8 um/px cover 4x the area and survive the larger limit.
    assert tissue_mask(rgb, mpp=2 * MPP, min_region_um2=1000 * 16).any()


def test_blank_slide_has_no_tissue_and_full_tissue_is_all_tissue() -> None:
    glass = np.full((120, 160, 3), GLASS, dtype=np.uint8)
    assert not tissue_mask(glass, mpp=MPP).any()
    full = tissue_image(160, 120, rects=[(0, 0, 160, 120)])
    assert tissue_mask(full, mpp=MPP).mean() > 0.99


def test_pale_tissue_joins_stained_tissue() -> None:
    rgb = np.full((100, 200, 3), 255, dtype=np.uint8)
    rgb[20:80, 20:180] = (238, 238, 246)  # pale counterstain, barely saturated
    rgb[40:60, 40:60] = (150, 90, 60)  # a stained (DAB-brown) nest inside it
    rgb[5:15, 190:198] = (238, 238, 246)  # an isolated pale patch touching no stained tissue
    mask = tissue_mask(rgb, mpp=MPP, min_region_um2=0, pale=True)
    assert mask[25:75, 25:175].all()
    assert not mask[5:15, 190:198].any()
    strict = tissue_mask(rgb, mpp=MPP, min_region_um2=0)
    assert strict[45:55, 45:55].all() and not strict[25:35, 100:170].any()


def test_threshold_is_clipped() -> None:
    high = np.r_[np.full(1000, 0.3), np.full(1000, 0.9)].astype(np.float32)
    assert tissue_threshold(high) == pytest.approx(0.15)
    low = np.r_[np.zeros(1000), np.full(1000, 0.03)].astype(np.float32)
    assert tissue_threshold(low) == pytest.approx(0.05)
    middle = np.r_[np.zeros(1000), np.full(1000, 0.3)].astype(np.float32)
    assert 0.05 <= tissue_threshold(middle, max_threshold=0.5) < 0.3
    assert tissue_threshold(np.zeros(10, np.float32)) == pytest.approx(0.05)


def test_bad_options() -> None:
    rgb = tissue_image(20, 20)
    with pytest.raises(ConfigError):
        tissue_mask(rgb, mpp=0)
    with pytest.raises(ConfigError, match="min_region_um2"):
        tissue_mask(rgb, mpp=1, min_region_um2=-1)


def test_block_fractions() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[:4, :4] = True
    mask[4:8, 4:6] = True
    fractions = block_fractions(mask, block=4, rows=3, cols=3)
    assert fractions.shape == (3, 3)
    assert fractions[0, 0] == 1.0 and fractions[1, 1] == 0.5 and fractions[0, 1] == 0.0
    # the third row of blocks runs past the mask (rows 8..11): missing pixels count as glass
    assert fractions[2].max() == 0.0


def test_mask_png_roundtrip(tmp_path: Path) -> None:
    mask = disc((40, 50), 20, 20, 10)
    path = save_mask_png(tmp_path / "m.png", mask, info={"downsample": 8.0, "slide_id": "a.b"})
    loaded, info = load_mask_png(path)
    np.testing.assert_array_equal(loaded, mask)
    assert info == {"downsample": 8.0, "slide_id": "a.b"}
    assert not list(tmp_path.glob(".tmp-*"))
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(ImageError):
        load_mask_png(tmp_path / "bad.png")


def test_cmu_tissue(shared_data: Path) -> None:
    with open_slide(shared_data / "slides/CMU-1-Small-Region.svs") as slide:
        low = slide.read_level_image(8.0)
    mask = tissue_mask(low, mpp=0.499 * 8)
    # The tissue runs down the middle of the slide; the left and right edges are glass.
    assert 0.25 < mask.mean() < 0.6
    rows, cols = mask.shape
    assert mask[rows // 2, cols // 2 - 20 : cols // 2 + 20].mean() > 0.8
    assert mask[:, :10].mean() < 0.05 and mask[: rows // 3, -10:].mean() < 0.05
