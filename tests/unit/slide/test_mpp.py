"""Implausible scales (histolib.slide.mpp): refused unless insisted on; enlargement capped."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histolib.core.limits import override_limits
from histolib.errors import ConfigError, SlideError
from histolib.slide.mpp import check_plausible, check_upsampling, is_plausible
from histolib.slide.reader import check_mpp, open_slide
from tests.helpers_tile import placeholder_tiff, tissue_image, write_slide


def test_range() -> None:
    assert is_plausible(0.05) and is_plausible(0.25) and is_plausible(50)
    assert not is_plausible(0.049) and not is_plausible(352.8)
    for value in (1e-9, 0.001, 1e9, 1e6, 1e-12):
        with pytest.raises(ConfigError) as info:
            check_mpp(value, what="--mpp")
        message = str(info.value)
        assert "plausible range" in message and "--any-mpp" in message and "\n" not in message
        with override_limits(any_mpp=True):
            assert check_mpp(value, what="--mpp") == value


def test_placeholder_dpi_tiff_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = placeholder_tiff(tmp_path / "scan.tif")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "352.8 um/px" in message and "72 dpi" in message
    assert "--slide-mpp" in message and "--any-mpp" in message
    with open_slide(path, mpp=0.5) as slide:  # the true value given
        assert slide.mpp == 0.5
    with override_limits(any_mpp=True), open_slide(path) as slide:  # insisted on
        assert slide.mpp == pytest.approx(352.78, rel=1e-3)
    with open_slide(path, require_mpp=False) as slide:  # described as it is (histolib info)
        assert slide.mpp == pytest.approx(352.78, rel=1e-3)


def test_enlargement_is_capped(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tif", tissue_image(256, 256), mpp=0.5)
    with open_slide(path, mpp=20) as slide:  # "20x" given as um/px
        with pytest.raises(SlideError) as info:
            slide.read_region(0, 0, size=64, mpp=0.5)
        message = str(info.value)
        assert "enlarges it 40x" in message and "limit of 4x" in message
        assert "--max-upsampling" in message and "0.5 for 20x" in message
        with override_limits(upsampling=50):
            assert slide.read_region(0, 0, size=8, mpp=0.5).shape == (8, 8, 3)
    with open_slide(path) as slide:
        assert slide.read_region(0, 0, size=16, mpp=0.125).shape == (16, 16, 3)  # 4x: allowed
    check_upsampling(0.25, target_mpp=0.125, slide_mpp=0.5)
    with pytest.raises(SlideError):
        check_upsampling(0.2, target_mpp=0.1, slide_mpp=0.5)


def test_check_plausible_error_class() -> None:
    with pytest.raises(SlideError, match="give the true value"):
        check_plausible(1000.0, what="x", error=SlideError, fix="give the true value")


def test_plain_image_without_mpp_can_be_described(tmp_path: Path) -> None:
    png = tmp_path / "tile.png"
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(png)
    with pytest.raises(SlideError, match="--slide-mpp"):
        open_slide(png)
    with open_slide(png, require_mpp=False) as slide:
        assert slide.mpp is None and slide.mpp_source is None
        assert "mpp=unknown" in repr(slide)
        with pytest.raises(SlideError, match="no mpp"):
            slide.read_region(0, 0, size=8, mpp=0.5)


def _dicom_without_image(path: Path) -> Path:
    """A DICOM file OpenSlide detects as a WSI but cannot open (no image attributes)."""

    def elem(group: int, element: int, vr: bytes, value: bytes) -> bytes:
        head = struct.pack("<HH", group, element) + vr
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            return head + b"\0\0" + struct.pack("<I", len(value)) + value
        return head + struct.pack("<H", len(value)) + value

    sop = b"1.2.840.10008.5.1.4.1.1.77.1.6\0"
    meta = (
        elem(0x0002, 0x0001, b"OB", b"\0\1")
        + elem(0x0002, 0x0002, b"UI", sop)
        + elem(0x0002, 0x0003, b"UI", b"1.2.3.4\0")
        + elem(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0")
    )
    body = elem(0x0008, 0x0016, b"UI", sop) + elem(0x0008, 0x0018, b"UI", b"1.2.3.4\0")
    length = elem(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta)))
    path.write_bytes(b"\0" * 128 + b"DICM" + length + meta + body)
    return path


def test_dicom_openslide_cannot_read_says_what_openslide_said(tmp_path: Path) -> None:
    import openslide

    path = _dicom_without_image(tmp_path / "slide.dcm")
    if openslide.OpenSlide.detect_format(str(path)) != "dicom":
        pytest.skip("this OpenSlide build does not detect DICOM")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert "corrupt" not in message and "\n" not in message
    assert "OpenSlide cannot read this dicom slide: " in message and "libdicom" in message
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"junk" * 10)
    with pytest.raises(SlideError, match="OpenSlide: Unsupported or missing image file"):
        open_slide(junk)
