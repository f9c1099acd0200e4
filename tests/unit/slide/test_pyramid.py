"""The pyramidal TIFF writers (histolib.slide.pyramid) shared by synth, transfer, benchmarks."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from histolib.core.atomic import atomic_path
from histolib.errors import OutputError
from histolib.slide.pyramid import (
    StreamingTiffWriter,
    check_finished_tiff,
    pyramid_tiff_options,
    save_pyramidal_tiff,
    thumbnail_path_for,
    write_thumbnail,
)


def test_openslide_sees_levels_and_mpp(tmp_path: Path) -> None:
    import openslide
    import pyvips

    rgb = np.random.default_rng(0).integers(0, 255, (1100, 1300, 3), dtype=np.uint8)
    image = pyvips.Image.new_from_array(rgb, interpretation="srgb")
    out = save_pyramidal_tiff(image, tmp_path / "s.tif", mpp=0.25, description="plain")
    with openslide.OpenSlide(out) as slide:
        assert slide.dimensions == (1300, 1100)
        assert slide.level_count >= 3
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-4)
        assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_options_reject_bad_mpp() -> None:
    with pytest.raises(ValueError, match="mpp"):
        pyramid_tiff_options(mpp=0)
    assert pyramid_tiff_options(mpp=0.5)["xres"] == pytest.approx(2000.0)


def _level0(path: Path) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


# -------------------------------------------------------------------------------------------
# streaming writer


def test_streaming_writer_makes_a_pyramid_that_openslide_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = (rng.integers(100, 140, size=(700, 900, 3))).astype(np.uint8)
    path = tmp_path / "out.tif"
    with StreamingTiffWriter(path, width=900, height=700, mpp=0.25) as writer:
        for top in range(0, 700, 96):
            writer.write_rows(image[top : top + 96])
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        assert slide.dimensions == (900, 700)
        assert slide.level_count >= 3
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-3)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25, rel=1e-3)
        assert slide.properties["tiff.ResolutionUnit"] == "centimeter"
    back = _level0(path).astype(int)
    assert np.abs(back - image).mean() < 6  # JPEG Q90


def test_streaming_writer_aborted_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_path(target) as tmp:
            with StreamingTiffWriter(tmp, width=300, height=300, mpp=0.5) as writer:
                writer.write_rows(np.zeros((100, 300, 3), np.uint8))
                raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("histolib-")]


def test_streaming_writer_refuses_a_short_image(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="rows"):
        with StreamingTiffWriter(tmp_path / "x.tif", width=50, height=50, mpp=0.5) as writer:
            writer.write_rows(np.zeros((10, 50, 3), np.uint8))


def test_thumbnail_and_finished_check(tmp_path: Path) -> None:
    path = tmp_path / "virtual.tif"
    with StreamingTiffWriter(path, width=300, height=200, mpp=0.5) as writer:
        writer.write_rows(np.full((200, 300, 3), 120, np.uint8))
    thumb = thumbnail_path_for(path)
    assert thumb == tmp_path / "virtual.thumbnail.png"
    write_thumbnail(path, thumb, size=64)
    from PIL import Image

    with Image.open(thumb) as image:
        assert max(image.size) == 64
    check_finished_tiff(path, width=300, height=200)
    with pytest.raises(OutputError, match="exists with another size"):
        check_finished_tiff(path, width=301, height=200)
    foreign = tmp_path / "foreign.tif"
    foreign.write_text("not a TIFF")
    with pytest.raises(OutputError, match="not a readable TIFF"):
        check_finished_tiff(foreign, width=300, height=200)
