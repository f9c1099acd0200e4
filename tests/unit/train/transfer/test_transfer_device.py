"""The device pipeline of slide restaining: blending on the device, buffers, events, entry point."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from histolib.slide.blend import StripeBlender

torch = pytest.importorskip("torch")

from histolib_train.transfer.device import (  # noqa: E402
    DeviceBlender,
    HostBuffers,
    Sync,
    tensor_generator,
)
from histolib_train.transfer.options import TransferOptions  # noqa: E402
from histolib_train.transfer.restaining import restain  # noqa: E402
from histolib_train.transfer.slide import transfer_slide  # noqa: E402
from tests.helpers_transfer import textured_slide, tiny_checkpoint  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("with_alpha", [False, True])
def test_device_blender_matches_the_numpy_stripe_blender(with_alpha: bool) -> None:
    """Same windows, same rows out: the torch blender is the numpy one on the device."""
    rng = np.random.default_rng(1)
    width, size, overlap = 150, 32, 8
    reference = StripeBlender(width=width, tile_size=size, overlap=overlap)
    blender = DeviceBlender(width=width, tile_size=size, overlap=overlap, device=CPU)
    xs = [0, 24, 48, 96, 120]
    for stripe in range(3):
        tiles = rng.integers(0, 256, size=(len(xs), size, size, 3), dtype=np.uint8)
        alphas = rng.random((len(xs), size, size), dtype=np.float32) if with_alpha else None
        for i, x in enumerate(xs):
            reference.add(x, tiles[i], None if alphas is None else alphas[i])
        blender.add(xs, torch.from_numpy(tiles), None if alphas is None else torch.tensor(alphas))
        reference.add_white(72)
        blender.add_white(72)
        n_rows = size if stripe == 2 else size - overlap
        expected = reference.pop(n_rows)
        got = blender.pop(n_rows).numpy()
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.abs(got.astype(int) - expected).max() <= 1
        assert (got != expected).mean() < 1e-3  # only float ties may round apart


@pytest.mark.parametrize("overlap", [0, 8, 20])
def test_device_blender_matches_numpy_when_rows_cover_different_columns(overlap: int) -> None:
    """Window rows over different column spans (and one over none): the torch blender, which
    normalises only the columns some window wrote, gives the numpy blender's rows exactly."""
    rng = np.random.default_rng(2)
    width, size = 170, 32
    stride = size - overlap
    starts = [k * stride for k in range(-(-max(width - overlap, 1) // stride))]
    reference = StripeBlender(width=width, tile_size=size, overlap=overlap)
    blender = DeviceBlender(width=width, tile_size=size, overlap=overlap, device=CPU)
    rows_of_windows = [[3, 4], [0, 1], [], [2], [len(starts) - 1], [0, len(starts) - 1]]
    for index, cols in enumerate(rows_of_windows):
        xs = [starts[c] for c in cols]
        tiles = rng.integers(0, 256, size=(len(xs), size, size, 3), dtype=np.uint8)
        alphas = rng.random((len(xs), size, size), dtype=np.float32)
        for i, x in enumerate(xs):
            reference.add(x, tiles[i], alphas[i])
        if xs:
            blender.add(xs, torch.from_numpy(tiles), torch.from_numpy(alphas))
        n_rows = size if index == len(rows_of_windows) - 1 else stride
        np.testing.assert_array_equal(blender.pop(n_rows).numpy(), reference.pop(n_rows))


def test_rows_no_window_reached_are_white() -> None:
    blender = DeviceBlender(width=70, tile_size=32, overlap=8, device=CPU)
    blender.add([0], torch.zeros((1, 32, 32, 3), dtype=torch.uint8))
    rows = blender.pop(24).numpy()
    assert (rows[:, :24] == 0).all() and (rows[:, 33:] == 255).all()


class RecordingSync(Sync):
    """A CPU event that remembers the order of records and waits (stands in for CUDA's)."""

    log: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, device) -> None:
        super().__init__(device)
        self.id = len(RecordingSync.log)
        RecordingSync.log.append(("made", self.id))

    def record(self) -> None:
        super().record()
        RecordingSync.log.append(("record", self.id))

    def wait(self) -> None:
        super().wait()
        RecordingSync.log.append(("wait", self.id))


def test_a_buffer_is_handed_out_again_only_after_its_event_is_waited_for() -> None:
    RecordingSync.log = []
    pool = HostBuffers(CPU, count=2, specs=[((4,), torch.uint8)], make_sync=RecordingSync)
    first = pool.acquire()
    pool.release(first)  # records: the device work using it is marked
    second, third = pool.acquire(), pool.acquire()
    assert first is third and second is not first
    log = RecordingSync.log
    assert log.index(("record", first.sync.id)) < len(log) - 1
    assert log[-1] == ("wait", first.sync.id)  # waited on before it was handed out again
    assert not first.tensors[0].is_pinned()  # pinned only for CUDA


def test_the_pipeline_waits_on_a_buffer_before_each_reuse(tmp_path: Path, monkeypatch) -> None:
    """A CPU run goes through the event protocol a CUDA run does: a buffer's device work is
    recorded after each use and waited for before the next (no two records without a wait),
    and every stripe of rows is waited for before it is written."""
    import histolib_train.transfer.slide as slide_module

    class Recording(HostBuffers):
        def __init__(self, device, **kwargs) -> None:
            super().__init__(device, make_sync=RecordingSync, **kwargs)

    RecordingSync.log = []
    monkeypatch.setattr(slide_module, "HostBuffers", Recording)
    slide = textured_slide(tmp_path / "in.tif", width=300, height=200)
    result = transfer_slide(
        slide,
        lambda batch: batch,
        out=tmp_path / "v.tif",
        mpp=0.5,
        tile_size=64,
        overlap=16,
        batch_size=3,
        tissue=False,
    )
    log = RecordingSync.log
    batches = -(-result.windows // 3)  # each row of 6 windows: 2 batches
    stripes = 4  # 200 px high: windows at y = 0, 48, 96, 144
    assert sum(kind == "record" for kind, _ in log) == batches + stripes
    for event in {i for kind, i in log if kind == "made"}:
        kinds = [kind for kind, i in log if i == event and kind != "made"]
        assert "record,record" not in ",".join(kinds)
    assert result.timings["device_cpu"] > 0 and result.timings["wait_input"] >= 0


@pytest.mark.parametrize("glass", ["white", "keep"])
def test_stripe_reads_give_the_pixels_of_window_reads(
    tmp_path: Path, monkeypatch, glass: str
) -> None:
    """Each window row decoded once as a stripe (the band of the row above kept) and windows
    cut from it: the same output, pixel for pixel, as reading every window on its own, on a
    slide whose size is no multiple of the window stride and whose tissue rows differ."""
    import histolib_train.transfer.slide as slide_module
    import histolib_train.transfer.windows as windows_module
    from histolib.slide.reader import open_slide

    width, height = 523, 339
    slide = textured_slide(
        tmp_path / "in.tif", width=width, height=height, background=(260, 0, width, 160)
    )
    with open_slide(slide) as opened:
        windows = windows_module.plan_windows(opened, mpp=0.5, tile_size=64, overlap=16)
        assert slide_module.stripe_level(opened, windows) is not None
        assert (
            slide_module.stripe_level(
                opened, windows_module.plan_windows(opened, mpp=0.75, tile_size=64, overlap=16)
            )
            is None
        )  # resampled: window by window

    def run(name: str) -> np.ndarray:
        out = tmp_path / f"{name}.tif"
        transfer_slide(
            slide,
            lambda b: b // 2,
            out=out,
            mpp=0.5,
            tile_size=64,
            overlap=16,
            batch_size=3,
            workers=2,
            glass=glass,
        )
        with open_slide(out) as done:
            return np.asarray(done.read_region(0, 0, size=(width, height), mpp=0.5))

    monkeypatch.setattr(windows_module, "STRIPE_CHUNK", 64)  # several chunks a stripe
    striped = run("striped")
    assert striped[:60, 460:].min() >= 250 and striped[200:].mean() < 140  # glass; tissue
    monkeypatch.setattr(slide_module, "stripe_level", lambda *args: None)
    np.testing.assert_array_equal(striped, run("windows"))


def test_a_stripe_holds_each_window_as_its_own_read(tmp_path: Path, monkeypatch) -> None:
    """Window rows over any columns (spans that grow, shrink, skip a row): every window cut
    from the stripe equals the window read on its own, edges included."""
    from concurrent.futures import ThreadPoolExecutor

    import histolib_train.transfer.slide as slide_module
    import histolib_train.transfer.windows as windows_module
    from histolib.slide.reader import open_slide

    monkeypatch.setattr(windows_module, "STRIPE_CHUNK", 64)
    path = textured_slide(tmp_path / "in.tif", width=301, height=260, period=37)
    readers = windows_module.Readers(lambda: open_slide(path))
    with open_slide(path) as opened, ThreadPoolExecutor(2) as pool:
        windows = windows_module.plan_windows(opened, mpp=0.5, tile_size=64, overlap=16)
        stripe = windows_module.Stripe(windows, slide_module.stripe_level(opened, windows), readers)
        window = np.empty((64, 64, 3), np.uint8)
        last = len(windows.xs) - 1
        for row, cols in [(0, [1, 2]), (1, [0, 3]), (2, [last]), (4, [2, last]), (5, [0, last])]:
            spent: list[tuple[float, float]] = []
            stripe.load(row, cols, pool, spent)
            for col in cols:
                x, y = windows.xs[col], windows.ys[row]
                windows_module.read_window(opened, window, x=x, y=y, windows=windows)
                np.testing.assert_array_equal(stripe.pixels[:, x : x + 64], window)
    readers.close()


def test_numpy_generators_run_on_the_cpu_through_the_host() -> None:
    run, where = tensor_generator(lambda batch: 255 - batch)
    batch = torch.full((2, 8, 8, 3), 5, dtype=torch.uint8)
    assert where == CPU and (run(batch) == 250).all()
    bad, _ = tensor_generator(lambda batch: batch[:, :4])
    with pytest.raises(ValueError, match="generator returned"):
        bad(batch)


def test_restain_takes_a_slide_or_a_folder_with_the_checkpoint_defaults(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")  # tile_size 64, mpp 0.5
    slide = textured_slide(tmp_path / "in.tif", width=160, height=120)
    options = TransferOptions(device="cpu", amp=False)
    done = restain(checkpoint, slide, out=tmp_path / "v.tif", options=options)
    assert done.tiles is None and done.notes == []
    assert (done.slide.width, done.slide.height) == (160, 120)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    from histolib.tileset.images import write_png

    write_png(tiles / "a.png", np.full((64, 64, 3), 200, np.uint8))
    done = restain(checkpoint, tiles, out=tmp_path / "out", options=options)
    assert done.tiles == {"written": 1, "skipped": 0} and (tmp_path / "out" / "a.png").is_file()


@pytest.mark.parametrize("kinds", [[1, 1, 1], [1, 0, -1], [0, 0, 0], [-1, 1, 0]])
def test_alpha_kinds_skip_work_but_not_pixels(kinds: list[int]) -> None:
    """A window whose alpha the readers found all 1 or all 0 takes a shortcut in the blender
    (no per-pixel product with its alpha): the rows are those of the full composite."""
    rng = np.random.default_rng(3)
    width, size, overlap = 100, 32, 8
    xs = [0, 24, 48]
    full = DeviceBlender(width=width, tile_size=size, overlap=overlap, device=CPU)
    short = DeviceBlender(width=width, tile_size=size, overlap=overlap, device=CPU)
    for stripe in range(2):
        tiles = torch.from_numpy(rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8))
        alphas = torch.from_numpy(rng.random((3, size, size), dtype=np.float32))
        for i, kind in enumerate(kinds):
            if kind != -1:
                alphas[i] = float(kind)
        full.add(xs, tiles, alphas)
        short.add(xs, tiles, alphas, kinds)
        n_rows = size if stripe == 1 else size - overlap
        np.testing.assert_array_equal(short.pop(n_rows).numpy(), full.pop(n_rows).numpy())
