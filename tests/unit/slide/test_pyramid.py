"""The pyramidal TIFF writer shared by synth, transfer and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histolib.slide.pyramid import pyramid_tiff_options, save_pyramidal_tiff


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
