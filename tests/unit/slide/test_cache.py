"""The one cache of open slides (histolib.slide.cache), as tiling workers use it: one set per
thread, a changed file opened again."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from histolib.slide.cache import cached_slide, close_slides
from tests.helpers_tile import tissue_image, write_slide


def test_each_thread_opens_its_own_slide_and_closes_its_own(tmp_path: Path) -> None:
    path = str(write_slide(tmp_path / "s.tif", tissue_image(512, 384, rects=[(0, 0, 256, 256)])))
    mine = cached_slide(path).slide
    assert cached_slide(path).slide is mine
    theirs: list[object] = []

    def other() -> None:
        theirs.append(cached_slide(path).slide)
        close_slides()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    assert cached_slide(path).slide is mine  # still open here
    close_slides()


def test_a_slide_file_replaced_between_runs_is_read_anew(tmp_path: Path) -> None:
    """A long-lived Dask worker keeps slides open across runs: a new file is not the old."""
    path = tmp_path / "s.tif"
    write_slide(path, np.full((384, 512, 3), 240, np.uint8))
    first = cached_slide(str(path)).slide
    write_slide(path, tissue_image(640, 384, rects=[(0, 0, 256, 256)]))
    second = cached_slide(str(path)).slide
    assert second is not first
    assert second.dimensions == (640, 384)
    close_slides()
