"""Tests of histolib.slide.reader: opening slides and plain images, metadata, reading at an mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histolib.errors import ConfigError, SlideError
from histolib.slide.reader import is_slide_file, open_slide, slide_id_from_path
from tests.helpers_tile import tissue_image, write_slide

CMU = "slides/CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 1024 x 768 pyramidal TIFF at 0.5 um/px (lossless, so pixels can be compared)."""
    rgb = tissue_image(1024, 768, discs=[(400, 380, 300)], rects=[(700, 100, 1000, 700)])
    path = write_slide(tmp_path_factory.mktemp("slide") / "pyr.tif", rgb, compression="deflate")
    return path, rgb


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.b.svs", "a.b"),
        ("slide.SVS", "slide"),
        ("x.ome.tiff", "x.ome"),
        ("case-01.ndpi", "case-01"),
        ("tile.png", "tile"),
        ("noext", "noext"),
        ("odd.name.xyz", "odd.name"),
    ],
)
def test_slide_id_strips_only_the_slide_extension(name: str, expected: str) -> None:
    assert slide_id_from_path(Path("/some/dir") / name) == expected


def test_is_slide_file() -> None:
    assert is_slide_file("a.svs") and is_slide_file("b.MRXS") and is_slide_file("c.png")
    assert not is_slide_file("cells.csv") and not is_slide_file("a.geojson")


def test_cmu_metadata(shared_data: Path) -> None:
    with open_slide(shared_data / CMU) as slide:
        assert slide.slide_id == "CMU-1-Small-Region"
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.level_dimensions == ((2220, 2967),)
        assert slide.level_downsamples == (1.0,)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.mpp_source == "metadata"
        assert slide.objective_power == 20
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        meta = slide.metadata()
        assert meta["dimensions"] == [2220, 2967] and meta["vendor"] == "aperio"
        label = slide.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3


def test_slide_mpp_overrides_metadata(shared_data: Path) -> None:
    with open_slide(shared_data / CMU, mpp=0.25) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "option"


def test_read_region_at_native_mpp_is_openslide_pixels(shared_data: Path) -> None:
    import openslide

    with open_slide(shared_data / CMU) as slide, openslide.OpenSlide(shared_data / CMU) as raw:
        ours = slide.read_region(300, 500, size=(200, 120), mpp=0.499)
        theirs = np.asarray(raw.read_region((300, 500), 0, (200, 120)).convert("RGB"))
    assert ours.shape == (120, 200, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)


def test_read_region_resamples_to_exact_size(shared_data: Path) -> None:
    with open_slide(shared_data / CMU) as slide:
        tile = slide.read_region(1000, 1000, size=256, mpp=0.5)
        assert tile.shape == (256, 256, 3)
        choice = slide.choose_level(0.5)
        assert choice.resample and choice.downsample == pytest.approx(0.5 / 0.499)
        # With a 1 % tolerance, 0.499 um/px counts as 0.5 and is read pixel for pixel.
        snapped = slide.choose_level(0.5, mpp_tolerance=0.01)
        assert not snapped.resample and snapped.downsample == 1.0


def test_downsampled_read_is_area_average(pyramid: tuple[Path, np.ndarray]) -> None:
    path, rgb = pyramid
    with open_slide(path) as slide:
        # mpp 1.0 on a 0.5 slide: level 1 (downsample 2) is read pixel for pixel.
        choice = slide.choose_level(1.0)
        assert (choice.level, choice.resample) == (1, False)
        # mpp 1.5: level 1 resampled by 1.5 with area averaging.
        choice = slide.choose_level(1.5)
        assert choice.level == 1 and choice.resample
        assert choice.downsample == pytest.approx(3.0)
        # mpp 2.0 on a 4-level pyramid: level 2, read unresampled.
        assert slide.choose_level(2.0).level == 2
        # level 0 with a 2x box: the mean of 2x2 blocks (level 1 comes from the pyramid, which
        # pyvips also builds by 2x2 averaging).
        region = slide.read_region(200, 100, size=64, mpp=1.0).astype(float)
    blocks = rgb[100:228, 200:328].astype(float).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(region - blocks).mean() < 1.5


def test_read_region_outside_slide_is_white(pyramid: tuple[Path, np.ndarray]) -> None:
    path, rgb = pyramid
    with open_slide(path) as slide:
        region = slide.read_region(1000, 700, size=64, mpp=0.5)
    np.testing.assert_array_equal(region[:, 30:], 255)
    np.testing.assert_array_equal(region[:, :24], rgb[700:764, 1000:1024])


def test_thumbnail_fits_max_size(pyramid: tuple[Path, np.ndarray]) -> None:
    path, _rgb = pyramid
    with open_slide(path) as slide:
        thumb = slide.thumbnail(max_size=256)
    assert max(thumb.shape[:2]) == 256 and thumb.shape[2] == 3
    assert thumb.shape[0] == 192


def test_plain_png_needs_mpp(tmp_path: Path) -> None:
    rgb = tissue_image(300, 200, discs=[(150, 100, 80)])
    path = tmp_path / "plain.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(SlideError, match="--slide-mpp") as info:
        open_slide(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.vendor == "image" and slide.level_count == 1
        assert slide.dimensions == (300, 200)
        np.testing.assert_array_equal(
            slide.read_region(10, 20, size=(50, 40), mpp=0.5), rgb[20:60, 10:60]
        )
        assert slide.read_region(0, 0, size=50, mpp=1.0).shape == (50, 50, 3)


def test_plain_png_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :32, 3] = 255  # left half opaque red-ish, right half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    with open_slide(path, mpp=0.5) as slide:
        region = slide.read_region(0, 0, size=64, mpp=0.5)
    np.testing.assert_array_equal(region[:, 40:], 255)
    np.testing.assert_array_equal(region[:, :32, 0], 200)


def test_untiled_tiff_opens_through_pyvips(tmp_path: Path) -> None:
    rgb = tissue_image(128, 96, discs=[(64, 48, 40)])
    path = tmp_path / "stripped.tif"
    Image.fromarray(rgb).save(path)  # PIL writes a stripped (untiled) TIFF
    with open_slide(path, mpp=1.0) as slide:
        assert slide.vendor == "image"
        np.testing.assert_array_equal(slide.read_region(0, 0, size=(128, 96), mpp=1.0), rgb)


def test_broken_svs_is_one_line_slide_error(shared_data: Path) -> None:
    path = shared_data / "slides/broken.svs"
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "corrupt" in message


def test_missing_and_folder_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideError, match="folder"):
        open_slide(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SlideError, match="OpenSlide"):
        open_slide(text)
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"not a png at all")
    with pytest.raises(SlideError, match="not a readable image"):
        open_slide(fake_png, mpp=0.5)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "abc"])
def test_bad_mpp_is_config_error(shared_data: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="--slide-mpp"):
        open_slide(shared_data / CMU, mpp=bad)  # type: ignore[arg-type]


def test_closed_slide_cannot_be_read(pyramid: tuple[Path, np.ndarray]) -> None:
    slide = open_slide(pyramid[0])
    slide.close()
    slide.close()  # idempotent
    with pytest.raises(SlideError, match="closed"):
        slide.read_region(0, 0, size=8, mpp=0.5)
