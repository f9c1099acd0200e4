"""Slide and tile restaining (histolib_train.transfer): windows, slides, tile folders, atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histolib.errors import CheckpointError, ConfigError, InputError, OutputError
from histolib.slide.blend import window_starts
from histolib.slide.pyramid import thumbnail_path_for
from histolib_train.transfer.generator import TorchGenerator, load_transfer_generator
from histolib_train.transfer.images import transfer_image, transfer_images
from histolib_train.transfer.slide import tissue_window_grid, transfer_slide
from tests.helpers_transfer import (
    border_and_interior_differences,
    identity_generator,
    textured_slide,
    tinted_generator,
    tiny_checkpoint,
    write_pyramid,
)

openslide = pytest.importorskip("openslide")


def _level0(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


# -------------------------------------------------------------------------------------------
# windows


def test_transfer_image_with_identity_reproduces_the_image() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(150, 211, 3), dtype=np.uint8)
    out = transfer_image(rgb, identity_generator, tile_size=64, overlap=16, batch_size=5)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).max() <= 1


def test_tissue_window_grid_from_a_low_resolution_mask() -> None:
    tissue = np.zeros((10, 10), bool)
    tissue[0:2, 0:2] = True  # level-0 [0, 80) x [0, 80) at 40 px per mask px
    xs = ys = window_starts(400, tile_size=64, overlap=16)  # output px, downsample 1
    grid = tissue_window_grid(
        tissue, scale_x=40, scale_y=40, xs=xs, ys=ys, tile_size=64, downsample=1.0
    )
    assert grid[0, 0] and grid[1, 1] and grid[0, 1]
    assert grid.sum() == 4  # windows starting at 0 and 48 reach mask px 1 (level-0 40..80)
    everything = tissue_window_grid(
        None, scale_x=1, scale_y=1, xs=xs, ys=ys, tile_size=64, downsample=1.0
    )
    assert everything.all()


# -------------------------------------------------------------------------------------------
# slides


def test_slide_output_has_levels_mpp_and_thumbnail(tmp_path: Path) -> None:
    slide = textured_slide(tmp_path / "in.tif", width=700, height=520, mpp=0.25)
    out = tmp_path / "virtual.tif"
    result = transfer_slide(
        slide, identity_generator, out=out, mpp=0.5, tile_size=64, overlap=16, tissue=False
    )
    assert (result.width, result.height) == (350, 260)
    with openslide.OpenSlide(str(out)) as handle:
        assert handle.dimensions == (350, 260)
        assert handle.level_count >= 2
        assert float(handle.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
    assert thumbnail_path_for(out).is_file()
    assert set(result.timings) >= {"read", "inference", "blend", "write", "wall"}
    # Identity generator: the output is the slide at 0.5 um/px (JPEG twice, resampling).
    with openslide.OpenSlide(str(slide)) as handle:
        expected = np.asarray(handle.get_thumbnail((350, 260)).convert("RGB")).astype(int)
    assert np.abs(_level0(out).astype(int) - expected).mean() < 8


def test_seams_hidden_by_blending_and_visible_without(tmp_path: Path) -> None:
    """On one repeated texture, the mean |difference| of horizontal neighbours across window
    borders is no larger than within windows once overlaps are blended; the generator tints
    every window differently (like instance-norm statistics that differ between windows, the
    worst case). Without overlap the borders stand out, so the measure can see seams.

    Geometry: the texture period (41 px) and the stride (43 px) are coprime and the stride is
    odd, so window borders meet every texture phase and every JPEG 8x8 block phase as often as
    the other columns do (a fair comparison).
    """
    slide = textured_slide(tmp_path / "tex.tif", width=1830, height=120, period=41)
    numbers = {}
    for overlap in (0, 17):
        out = tmp_path / f"o{overlap}.tif"
        transfer_slide(
            slide,
            tinted_generator(3),
            out=out,
            mpp=0.5,
            tile_size=60,
            overlap=overlap,
            tissue=False,
        )
        rgb = _level0(out)
        starts = window_starts(rgb.shape[1], tile_size=60, overlap=overlap)
        numbers[overlap] = border_and_interior_differences(rgb, starts=starts, tile_size=60)
    print(f"seam test (across borders, within windows): {numbers}")
    hard_border, hard_within = numbers[0]
    blended_border, blended_within = numbers[17]
    assert hard_border > 2 * hard_within  # the test can see seams
    assert blended_border <= blended_within


def test_background_stays_white_and_tissue_is_restained(tmp_path: Path) -> None:
    slide = textured_slide(
        tmp_path / "half.tif", width=640, height=320, background=(320, 0, 640, 320)
    )
    out = tmp_path / "v.tif"

    def dark(batch: np.ndarray) -> np.ndarray:
        return (batch // 2).astype(np.uint8)

    result = transfer_slide(slide, dark, out=out, mpp=0.5, tile_size=64, overlap=16)
    assert 0 < result.tissue_windows < result.windows
    rgb = _level0(out).astype(int)
    assert rgb[:, 400:].min() >= 250  # glass: white, never run through the generator
    assert rgb[:, :250].mean() < 140  # tissue: restained (halved)


def test_generator_failure_leaves_no_partial_output(tmp_path: Path) -> None:
    slide = textured_slide(tmp_path / "tex.tif", width=500, height=400)
    out = tmp_path / "res" / "v.tif"
    calls = {"n": 0}

    def failing(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return batch

    with pytest.raises(RuntimeError, match="simulated"):
        transfer_slide(
            slide, failing, out=out, mpp=0.5, tile_size=64, overlap=16, batch_size=4, tissue=False
        )
    assert calls["n"] == 4
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file, no thumbnail
    # A re-run completes; a third run keeps the finished output.
    done = transfer_slide(slide, identity_generator, out=out, tile_size=64, overlap=16)
    assert out.is_file() and not done.skipped
    again = transfer_slide(slide, failing, out=out, tile_size=64, overlap=16)
    assert again.skipped
    # ... but only when it is this run's output: another mpp makes another size
    from histolib.errors import OutputError

    with pytest.raises(OutputError, match="exists with another size"):
        transfer_slide(slide, failing, out=out, mpp=1.0, tile_size=64, overlap=16)
    foreign = out.with_name("foreign.tif")
    foreign.write_text("not a TIFF")
    with pytest.raises(OutputError, match="not a readable TIFF; use --overwrite"):
        transfer_slide(slide, failing, out=foreign, tile_size=64, overlap=16)
    with pytest.raises(OutputError, match=r"must end in \.tif"):
        transfer_slide(slide, failing, out=out.with_suffix(".png"), tile_size=64, overlap=16)
    folder = out.with_name("folder.tif")
    folder.mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        transfer_slide(slide, failing, out=folder, tile_size=64, overlap=16)


def test_unreadable_slide_is_a_clear_error(tmp_path: Path) -> None:
    from histolib.errors import SlideError

    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    with pytest.raises(SlideError):
        transfer_slide(bad, identity_generator, out=tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


# -------------------------------------------------------------------------------------------
# tile folders and the torch generator


def test_transfer_images_keeps_names_and_resumes(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "tiles"
    src.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in (("a.b.png", (64, 64)), ("c.png", (64, 64)), ("big.png", (90, 150))):
        Image.fromarray(rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)).save(src / name)
    (src / "notes.txt").write_text("ignored")
    counts = transfer_images(
        src, identity_generator, out=tmp_path / "out", tile_size=64, overlap=16
    )
    assert counts == {"written": 3, "skipped": 0}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.b.png", "big.png", "c.png"]
    big = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    assert big.shape == (90, 150, 3)
    assert np.abs(big.astype(int) - np.asarray(Image.open(src / "big.png"))).max() <= 1
    assert transfer_images(src, identity_generator, out=tmp_path / "out") == {
        "written": 0,
        "skipped": 3,
    }
    with pytest.raises(ConfigError, match="overlap"):
        transfer_images(src, identity_generator, out=tmp_path / "o3", tile_size=64, overlap=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a tile")
    with pytest.raises(InputError, match="no image tiles"):
        transfer_images(empty, identity_generator, out=tmp_path / "o2")
    with pytest.raises(OutputError, match="must differ"):
        transfer_images(src, identity_generator, out=src)


def test_transfer_images_keeps_sub_folders_and_skips_its_own_output(tmp_path: Path) -> None:
    """Tiles in sub-folders (``histolib tile`` writes ``tiles/<slide>/*.png``) keep their
    relative path; a JPEG tile becomes a PNG; an output folder inside the input is not read."""
    from PIL import Image

    src = tmp_path / "tiles"
    for rel in ("s1/a.png", "s2/b.png", "c.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 180, np.uint8)).save(src / rel)
    out = src / "restained"
    counts = transfer_images(src, identity_generator, out=out, tile_size=64, overlap=16)
    assert counts == {"written": 3, "skipped": 0}
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["c.png", "s1/a.png", "s2/b.png"]
    again = transfer_images(src, identity_generator, out=out, tile_size=64, overlap=16)
    assert again == {"written": 0, "skipped": 3}


def test_torch_generator_keeps_shape_for_any_size(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    generator, config = load_transfer_generator(tiny_checkpoint(tmp_path / "c.pt"), device="cpu")
    assert config["tile_size"] == 64
    assert isinstance(generator, TorchGenerator)
    for shape in ((2, 64, 64, 3), (1, 37, 50, 3)):
        out = generator(np.zeros(shape, np.uint8))
        assert out.shape == shape and out.dtype == np.uint8


def test_checkpoint_of_another_kind_or_corrupt_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    corrupt = tmp_path / "corrupt.pt"
    good = tiny_checkpoint(tmp_path / "good.pt")
    corrupt.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_transfer_generator(corrupt, device="cpu")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a histolib"):
        load_transfer_generator(other, device="cpu")
    with pytest.raises(ConfigError, match="direction"):
        load_transfer_generator(good, direction="he2he", device="cpu")


def test_text_or_truncated_checkpoint_gets_a_short_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(
        CheckpointError, match=r"neither a torch\.save zip archive nor a pickle"
    ) as info:
        load_transfer_generator(text, device="cpu")
    assert "\n" not in str(info.value) and "PyTorch" not in str(info.value)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint(tmp_path / "good.pt").read_bytes()[:10000])
    with pytest.raises(CheckpointError, match="corrupt or truncated: incomplete zip archive"):
        load_transfer_generator(cut, device="cpu")


def test_weights_that_do_not_fit_the_config_give_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tiny_checkpoint(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["config"]["n_blocks"] += 3
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"do not fit its config.*Missing key") as info:
        load_transfer_generator(path, device="cpu")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_bad_options_and_non_rgb_tiles_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    from histolib.errors import ImageError

    src = tmp_path / "tiles"
    src.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "a.png")
    for kwargs, message in (
        ({"tile_size": 0}, "--tile-size"),
        ({"batch_size": 0}, "--batch-size"),
    ):
        with pytest.raises(ConfigError, match=message):
            transfer_images(src, identity_generator, out=tmp_path / "o", **kwargs)
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        transfer_slide(tmp_path / "s.tif", identity_generator, out=tmp_path / "o.tif", workers=0)
    for mode, array in (
        ("L", np.zeros((64, 64), np.uint8)),
        ("I;16", np.zeros((64, 64), np.uint16)),
    ):
        Image.fromarray(array).save(src / "a.png")
        with pytest.raises(ImageError, match=rf"a\.png: expected an 8-bit RGB image.*{mode}"):
            transfer_images(src, identity_generator, out=tmp_path / "o")
    assert not list((tmp_path / "o").glob("*.png"))
    # a non-image file: the path once, and the reason
    (src / "a.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"a\.png: cannot read image \(not a format") as info:
        transfer_images(src, identity_generator, out=tmp_path / "o")
    assert str(info.value).count("a.png") == 1


def test_write_pyramid_helper_round_trip(tmp_path: Path) -> None:
    rgb = np.full((40, 50, 3), 200, np.uint8)
    path = write_pyramid(tmp_path / "p.tif", rgb, mpp=0.5)
    assert _level0(path).shape == (40, 50, 3)
