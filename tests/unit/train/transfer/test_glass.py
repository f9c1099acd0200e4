"""Glass stays glass in the virtual slide (histolib_train.transfer.glass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histolib.errors import ConfigError
from histolib.slide.blend import StripeBlender
from histolib_train.transfer.glass import (
    EDGE_UM,
    GATE_UM,
    GlassMask,
    LowResTissue,
    glass_difference,
    input_tissue,
)
from histolib_train.transfer.slide import transfer_slide
from tests.helpers_transfer import textured_slide, tiny_checkpoint

openslide = pytest.importorskip("openslide")

#: What "glass stays white" means here: JPEG noise on white is well under these; a block's
#: figure includes the few-micron fade past the tissue edge, which an untrained generator
#: (grey where it should be stained) makes its worst.
GLASS_MEAN_MAX = 1.5
GLASS_BLOCK_MAX = 10.0


def _level0(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


def inventive_generator(batch: np.ndarray) -> np.ndarray:
    """Restains tissue and invents grey texture on white input, as trained generators do."""
    rng = np.random.default_rng(int(batch.sum()) % 2**32)
    out = 0.6 * batch.astype(np.float32) + 50 + rng.normal(0, 12, size=batch.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _both_modes(slide: Path, generator, tmp_path: Path, **kwargs) -> dict[str, np.ndarray]:
    outputs = {}
    for mode in ("keep", "white"):
        out = tmp_path / f"{mode}.tif"
        result = transfer_slide(slide, generator, out=out, mpp=0.5, glass=mode, **kwargs)
        assert result.glass == mode
        outputs[mode] = _level0(out)
    return outputs


def _check_glass(outputs: dict[str, np.ndarray], tissue: np.ndarray) -> dict[str, dict]:
    from scipy import ndimage

    numbers = {mode: glass_difference(rgb, tissue) for mode, rgb in outputs.items()}
    print(f"glass |255 - output| outside the input's tissue: {numbers}")
    keep, white = numbers["keep"], numbers["white"]
    # Today's behaviour fails the thresholds: the measure sees grey squares on the glass...
    assert keep["mean"] > 3 * GLASS_MEAN_MAX and keep["block_max"] > 2 * GLASS_BLOCK_MAX
    # ...and the default passes them.
    assert white["mean"] < GLASS_MEAN_MAX and white["block_max"] < GLASS_BLOCK_MAX
    # Inside the tissue the output is the generator's (glass masking decides at the edge).
    inner = ndimage.binary_erosion(tissue, iterations=2 * round(GATE_UM / 0.5))
    change = np.abs(outputs["white"].astype(np.float32) - outputs["keep"]).mean(axis=2)
    assert change[inner].mean() < 1.5
    return numbers


def test_glass_is_white_on_a_synthetic_slide(tmp_path: Path) -> None:
    slide = textured_slide(
        tmp_path / "in.tif", width=900, height=600, background=(420, 0, 900, 600)
    )
    outputs = _both_modes(slide, inventive_generator, tmp_path, tile_size=128, overlap=32)
    tissue = input_tissue(slide, mpp=0.5, shape=outputs["keep"].shape[:2])
    assert tissue[:, :400].mean() > 0.95 and not tissue[:, 440:].any()
    _check_glass(outputs, tissue)
    # Right at the tissue edge (x = 420) the output is the generator's; 4 um past it, white.
    white = outputs["white"].astype(np.float32)
    keep = outputs["keep"].astype(np.float32)
    assert np.abs(white[:, 405:418] - keep[:, 405:418]).mean() < 3
    assert (255 - white[:, 420 + round(EDGE_UM / 0.5) + 4 :]).mean() < 1


def test_glass_is_white_on_a_real_slide_restained_by_a_checkpoint(
    shared_data: Path, tmp_path: Path
) -> None:
    """The Aperio slide restained by a small checkpoint's generator (random weights: its
    instance norms turn the JPEG noise of the glass into texture)."""
    from histolib_train.transfer.generator import load_transfer_generator

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", seed=3)
    generator, _ = load_transfer_generator(checkpoint, device="cpu")
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    outputs = _both_modes(slide, generator, tmp_path, tile_size=256, overlap=64, batch_size=4)
    tissue = input_tissue(slide, mpp=0.5, shape=outputs["keep"].shape[:2])
    assert 0.2 < tissue.mean() < 0.8
    _check_glass(outputs, tissue)


def test_keep_leaves_the_generator_output_on_glass_inside_tissue_windows(tmp_path: Path) -> None:
    slide = textured_slide(
        tmp_path / "in.tif", width=400, height=256, background=(200, 0, 400, 256)
    )
    outputs = _both_modes(slide, inventive_generator, tmp_path, tile_size=128, overlap=32)
    # Glass within 100 px of tissue ran through the generator: grey in keep, white in white.
    assert (255 - outputs["keep"][:, 230:290].astype(int)).mean() > 30
    assert (255 - outputs["white"][:, 230:290].astype(int)).mean() < 1


def test_glass_option_is_checked(tmp_path: Path) -> None:
    slide = textured_slide(tmp_path / "in.tif", width=128, height=128)
    with pytest.raises(ConfigError, match="--glass"):
        transfer_slide(slide, inventive_generator, out=tmp_path / "o.tif", glass="grey")


# -------------------------------------------------------------------------------------------
# The pieces


def test_alpha_is_one_on_tissue_zero_on_glass_and_fades_within_a_few_microns() -> None:
    size = 192
    # Low-resolution mask: 64 px cells (32 um), tissue in the two left columns (x < 128).
    low = np.zeros((4, 4), bool)
    low[:, :2] = True
    lowres = LowResTissue(mask=low, scale_x=64.0, scale_y=64.0, threshold=0.1, mpp=32.0)
    glass = GlassMask(lowres, mpp=0.5, downsample=1.0)
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[:, :100] = (200, 120, 180)  # tissue on the left, glass from x = 100
    rgb[:, 20:30] = 255  # a gap deep inside the low-resolution mask: tissue all the same
    alpha = glass.alpha(rgb, x=0, y=0)
    assert alpha.shape == (size, size) and alpha.dtype == np.float32
    row = alpha[64]
    assert (row[:98] == 1).all()  # tissue, up to its edge
    assert (np.diff(row[90:130]) <= 1e-6).all()  # fades monotonically
    assert row[100 + round(EDGE_UM / 0.5) + 2 :].max() < 0.05  # white a few microns out
    # Tissue that the slide's low-resolution mask does not have (dust, debris) is glass.
    gated = GlassMask(
        LowResTissue(np.zeros((4, 4), bool), 64.0, 64.0, 0.1, 32.0), mpp=0.5, downsample=1.0
    )
    assert not gated.alpha(rgb, x=0, y=0).any()


def test_stripe_blender_with_alpha_is_white_where_alpha_is_zero() -> None:
    stripe = StripeBlender(width=64, tile_size=32, overlap=8)
    alpha = np.zeros((32, 32), np.float32)
    alpha[:, :16] = 1.0
    stripe.add(0, np.full((32, 32, 3), 40, np.uint8), alpha)
    rows = stripe.pop(24)
    assert (rows[:, :16] == 40).all() and (rows[:, 16:] == 255).all()


def test_glass_difference_means_and_blocks() -> None:
    rgb = np.full((512, 512, 3), 255, np.uint8)
    rgb[:256, :256] = 235  # 20 grey levels off white on one glass block
    tissue = np.zeros((512, 512), bool)
    tissue[300:, 300:] = True  # tissue (ignored)
    rgb[300:, 300:] = 0
    numbers = glass_difference(rgb, tissue)
    glass_px = 512 * 512 - 212 * 212
    assert numbers["mean"] == pytest.approx(20 * 256 * 256 / glass_px, rel=1e-4)
    assert numbers["block_max"] == pytest.approx(20.0)
    assert numbers["blocks"] == 4


def test_cli_glass_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from histolib_cli.main import app

    # Glass must be larger than the tissue mask's largest filled hole (10,000 um^2).
    slide = textured_slide(
        tmp_path / "in.tif", width=600, height=300, background=(250, 0, 600, 300)
    )
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    base = ["transfer", str(checkpoint), str(slide), "--device", "cpu", "--tile-size", "64"]
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a.tif"), "--glass", "grey"])
    assert bad.exit_code != 0 and "--glass must be white or keep" in bad.output
    assert not (tmp_path / "a.tif").exists()
    for mode in ("keep", "white"):
        out = tmp_path / f"{mode}.tif"
        result = CliRunner().invoke(app, [*base, "--out", str(out), "--glass", mode])
        assert result.exit_code == 0, result.output
    glass = (255 - _level0(tmp_path / "white.tif")[:, 300:].astype(int)).mean()
    assert glass < 1.0
    assert (255 - _level0(tmp_path / "keep.tif")[:, 260:290].astype(int)).mean() > 5


def test_fill_alpha_says_its_kind_and_the_shortcuts_agree_with_the_full_mask() -> None:
    """Windows wholly inside the low-resolution interior, wholly outside its grown gate, and
    across the edge: the kind returned and the alpha written are those of the full mask."""
    from histolib_train.transfer.glass import ALL_GLASS, ALL_TISSUE, MIXED

    low = np.zeros((16, 16), bool)
    low[2:10, 2:10] = True
    lowres = LowResTissue(mask=low, scale_x=64.0, scale_y=64.0, threshold=0.1, mpp=32.0)
    glass = GlassMask(lowres, mpp=0.5, downsample=1.0)
    rgb = np.full((128, 128, 3), 255, np.uint8)
    rgb[:, :64] = (200, 120, 180)
    expected = {(320, 320): ALL_TISSUE, (900, 900): ALL_GLASS, (600, 300): MIXED}
    for (x, y), kind in expected.items():
        out = np.full((128, 128), np.nan, np.float32)
        assert glass.fill_alpha(rgb, x=x, y=y, out=out) == kind
        gy, gx = glass._cells(x=x, y=y, rows=64, cols=64)
        cells = np.ix_(gy, gx)
        full = (glass._saturated(rgb, 64, 64) & glass.gate[cells]) | glass.interior[cells]
        np.testing.assert_array_equal(glass.fine_mask(rgb, x=x, y=y), full)
        if kind != MIXED:
            assert (out == kind).all()
        np.testing.assert_array_equal(out, glass.alpha(rgb, x=x, y=y))
