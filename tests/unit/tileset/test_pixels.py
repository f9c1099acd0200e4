"""histolib.tileset.pixels: tiles read straight from their slides equal their PNGs; handles
are per process, opened lazily, bounded, reopened when the file changes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from histolib.errors import ImageError, ManifestError, SlideError
from histolib.slide import cache
from histolib.slide.cache import close_slides, open_slide_paths
from histolib.tileset import pixels
from histolib.tileset.pixels import check_readable, read_slide_tile, read_tile
from histolib.tileset.sources import TileRecord, manifest_tiles
from tests.helpers_tile import disc_slide


def _tile(slide: Path, out: Path, *, image_format: str, mpp: float, size: int) -> Path:
    from histolib.tiling.options import TilingOptions
    from histolib.tiling.tiler import tile_slides

    return tile_slides(
        slide,
        out=out,
        options=TilingOptions(stain="he", mpp=mpp, size=size, image_format=image_format),
        workers=1,
        progress=False,
    )


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disc_slide(tmp_path_factory.mktemp("slide") / "disc.tif", width=1536, height=1024)


@pytest.mark.parametrize(
    ("mpp", "size", "how"),
    [(0.5, 128, "level 0 as is"), (1.0, 64, "level 1 as is"), (0.75, 96, "resampled")],
)
def test_tiles_read_from_the_slide_equal_their_pngs(
    slide: Path, tmp_path: Path, mpp: float, size: int, how: str
) -> None:
    pngs = manifest_tiles(_tile(slide, tmp_path / "png", image_format="png", mpp=mpp, size=size))
    bare = manifest_tiles(_tile(slide, tmp_path / "none", image_format="none", mpp=mpp, size=size))
    assert [r.tile_id for r in pngs.records] == [r.tile_id for r in bare.records]
    assert len(bare.records) >= 8 and all(r.image_path is None for r in bare.records)
    from histolib.slide.reader import open_slide

    with open_slide(slide) as opened:
        choice = pixels.level_choice(opened, bare.records[0].downsample)
    assert choice.resample == (how == "resampled")
    assert choice.level == (1 if how == "level 1 as is" else 0)
    for png, record in zip(pngs.records, bare.records, strict=True):
        from_slide = read_tile(record)
        assert from_slide.shape == (size, size, 3) and from_slide.dtype == np.uint8
        np.testing.assert_array_equal(from_slide, read_tile(png), err_msg=record.tile_id)
    check_readable(bare.records, source=bare.path)


def test_a_slide_opens_once_per_process_and_lazily(slide: Path, tmp_path: Path) -> None:
    close_slides()
    assert open_slide_paths() == {}  # nothing is opened before the first read
    record = TileRecord("t", "disc", None, x0=256, y0=256, mpp=0.5, size=64, slide_path=str(slide))
    first = read_tile(record)
    for x in range(0, 512, 64):
        read_slide_tile(slide, x0=x, y0=0, size=64, mpp=0.5, downsample=1.0)
    assert open_slide_paths() == {str(slide): 1}
    np.testing.assert_array_equal(read_tile(record), first)
    close_slides()
    assert open_slide_paths() == {}


def _opened_in_child(slide: str) -> dict[str, int]:
    before = open_slide_paths()
    read_slide_tile(slide, x0=0, y0=0, size=32, mpp=0.5, downsample=1.0)
    read_slide_tile(slide, x0=32, y0=0, size=32, mpp=0.5, downsample=1.0)
    assert before == {}, "a forked child must not use its parent's handles"
    return open_slide_paths()


def test_a_forked_child_opens_its_own_handle(slide: Path) -> None:
    read_slide_tile(slide, x0=0, y0=0, size=32, mpp=0.5, downsample=1.0)  # the parent's handle
    parent = open_slide_paths()
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        children = pool.map(_opened_in_child, [str(slide)] * 4)
    assert all(child == {str(slide): 1} for child in children)
    assert open_slide_paths() == parent  # the parent's handle is untouched


def test_handles_are_bounded_and_a_replaced_slide_is_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers_tile import tissue_image, write_slide

    close_slides()
    monkeypatch.setattr(cache, "MAX_OPEN_SLIDES", 1)
    a = write_slide(tmp_path / "a.tif", tissue_image(512, 512, rects=[(0, 0, 512, 512)]))
    b = write_slide(tmp_path / "b.tif", tissue_image(512, 512, seed=3))
    read_slide_tile(a, x0=0, y0=0, size=64, mpp=0.5, downsample=1.0)
    read_slide_tile(b, x0=0, y0=0, size=64, mpp=0.5, downsample=1.0)
    assert list(open_slide_paths()) == [str(b)]  # a was closed to make room
    monkeypatch.setattr(cache, "MAX_OPEN_SLIDES", 16)
    old = read_slide_tile(a, x0=0, y0=0, size=64, mpp=0.5, downsample=1.0)
    replacement = tmp_path / "new.tif"
    write_slide(replacement, np.zeros((512, 512, 3), np.uint8) + 30, compression="deflate")
    os.replace(replacement, a)
    new = read_slide_tile(a, x0=0, y0=0, size=64, mpp=0.5, downsample=1.0)
    assert not np.array_equal(old, new) and int(new.max()) == 30
    close_slides()


def test_the_slides_of_a_process_share_one_cache_of_the_configured_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from histolib.errors import ConfigError
    from histolib.slide.reader import Slide
    from tests.helpers_tile import tissue_image, write_slide

    used: list[tuple[str, object]] = []
    use_cache = Slide.use_cache

    def spy(self: Slide, cache: object) -> None:
        used.append((self.slide_id, cache))
        use_cache(self, cache)

    monkeypatch.setattr(Slide, "use_cache", spy)
    a = write_slide(tmp_path / "a.tif", tissue_image(512, 512, seed=1))
    b = write_slide(tmp_path / "b.tif", tissue_image(512, 512, seed=2))
    reads = {}
    for mib in ("3", "0", ""):  # 3 MiB; no cache at all; the default
        close_slides()
        monkeypatch.setenv(cache.CACHE_ENV, mib)
        used.clear()
        reads[mib] = [
            read_slide_tile(path, x0=x, y0=37, size=100, mpp=0.501, downsample=1.002)
            for path in (a, b)
            for x in (0, 99, 0)
        ]
        assert [slide_id for slide_id, _ in used] == ["a", "b"]  # opened once, each
        assert used[0][1] is used[1][1]  # one cache for both
        expected = (int(mib) if mib else cache.DEFAULT_CACHE_MB) << 20
        assert used[0][1]._capacity == expected == cache.cache_bytes()
    for mib in ("3", "0"):  # the cache changes the time a read takes, never its pixels
        for got, want in zip(reads[mib], reads[""], strict=True):
            np.testing.assert_array_equal(got, want)
    close_slides()
    for bad in ("-1", "lots", "1.5"):
        monkeypatch.setenv(cache.CACHE_ENV, bad)
        with pytest.raises(ConfigError, match=f"HISTOLIB_SLIDE_CACHE_MB must be .*{bad}"):
            read_slide_tile(a, x0=0, y0=0, size=32, mpp=0.5, downsample=1.0)
    close_slides()


def test_missing_slides_and_images_are_one_line_errors(tmp_path: Path) -> None:
    gone = tmp_path / "gone.svs"
    record = TileRecord("t1", "gone", None, mpp=0.5, size=32, slide_path=str(gone))
    with pytest.raises(SlideError, match=r"gone\.svs: slide of tile t1 is missing"):
        check_readable([record], source=tmp_path / "tiles.parquet")
    with pytest.raises(SlideError, match=r"gone\.svs: no such slide file"):
        read_tile(record)
    nowhere = TileRecord("t2", "s", None, mpp=0.5, size=32)
    with pytest.raises(ManifestError, match="t2 has no image and no slide_path"):
        check_readable([nowhere], source=tmp_path / "tiles.parquet")
    with pytest.raises(ManifestError, match="t2 has neither an image nor a slide"):
        read_tile(nowhere)
    with pytest.raises(ImageError, match="tile image listed in the manifest is missing"):
        check_readable([TileRecord("t3", "s", tmp_path / "t3.png")], source=tmp_path)
