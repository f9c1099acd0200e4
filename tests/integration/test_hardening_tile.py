"""Issue 14, as a hostile but realistic user meets ``histolib tile`` and ``build-library``:
implausible scales, bombs, two runs in one folder, killed parents and workers, folders that
grow slide by slide. Each test failed before the fix."""

from __future__ import annotations

import gzip
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from histolib.tileset.manifest import read_manifest
from histolib_cli.main import app
from tests.helpers_proc import children, survivors
from tests.helpers_tile import (
    disc_slide,
    placeholder_tiff,
    tissue_image,
    write_contours,
    write_slide,
)

CLI = [sys.executable, "-m", "histolib_cli.main"]


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disc_slide(tmp_path_factory.mktemp("harden") / "disc.tif", width=1024, height=768)


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tissue everywhere: hundreds of tiles, seconds of work for two workers."""
    rgb = tissue_image(5120, 5120, rects=[(0, 0, 5120, 5120)])
    return write_slide(tmp_path_factory.mktemp("big") / "big.tif", rgb, mpp=0.5)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """Exactly one ``error:`` line and no traceback (CliRunner result or CompletedProcess)."""
    text = result.output if hasattr(result, "output") else result.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


# ------------------------------------------------------------------ 2. implausible scales


def test_placeholder_resolution_is_refused_before_any_tile(tmp_path: Path) -> None:
    path = placeholder_tiff(tmp_path / "scan.tif")
    out = tmp_path / "out"
    result = invoke("tile", path, "--out", out, "--workers", "1")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "352.8 um/px" in line and "--slide-mpp" in line and "--any-mpp" in line
    assert not out.exists()  # nothing was written, not even an empty folder
    ok = invoke("tile", path, "--out", out, "--slide-mpp", "0.5", "--workers", "1")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(
    "args",
    [
        ("--mpp", "1e-9"),
        ("--mpp", "1e9"),
        ("--mpp", "0.001"),
        ("--slide-mpp", "1e-12"),
        ("--slide-mpp", "1e6"),
    ],
)
def test_absurd_mpp_is_one_line(tmp_path: Path, slide: Path, args: tuple[str, str]) -> None:
    result = invoke("tile", slide, "--out", tmp_path / "o", "--workers", "1", *args)
    assert result.exit_code == 1
    assert "plausible range" in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_magnification_given_as_mpp_is_refused(tmp_path: Path, slide: Path) -> None:
    result = invoke("tile", slide, "--out", tmp_path / "o", "--slide-mpp", "20", "--workers", "1")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "enlarges it 40x" in line and "0.5 for 20x" in line and "--max-upsampling" in line


def test_tile_ids_are_unique_by_construction(tmp_path: Path, slide: Path) -> None:
    # Insisting on a 0.02 um/px grid over a 0.5 um/px slide: tiles under one slide pixel.
    result = invoke(
        "--any-mpp",
        "--max-upsampling",
        "1000",
        "tile",
        slide,
        "--out",
        tmp_path / "o",
        "--mpp",
        "0.001",
        "--size",
        "8",
        "--workers",
        "1",
    )
    assert result.exit_code == 1
    assert "less than one slide pixel" in one_error_line(result)
    # Allowed enlargement (2x): every row names its own file.
    out = tmp_path / "ok"
    ok = invoke(
        "--max-upsampling",
        "2",
        "tile",
        slide,
        "--out",
        out,
        "--mpp",
        "0.25",
        "--size",
        "32",
        "--workers",
        "1",
        "--max-tiles",
        "300",
    )
    assert ok.exit_code == 0, ok.output
    gdf, _ = read_manifest(out / "tiles.parquet")
    assert gdf["tile_id"].is_unique and gdf["path"].is_unique
    assert len(list((out / "tiles" / "disc").glob("*.png"))) == len(gdf)


def test_grid_limit(tmp_path: Path, slide: Path) -> None:
    result = invoke("--max-grid-tiles", "10", "tile", slide, "--out", tmp_path / "o")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "over the limit of 10" in line and "--max-grid-tiles" in line


# ------------------------------------------------------------------ 3. bombs


def _peak_rss_kib(cmd: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cmd`` in a fresh process and return it with its peak resident memory (KiB)."""
    wrapper = textwrap.dedent(
        """
        import resource, subprocess, sys
        done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        sys.stderr.write(f"\\nPEAK {peak}\\n")
        sys.exit(done.returncode)
        """
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    text, _, peak = done.stderr.rpartition("\nPEAK ")
    done.stderr = text
    return done, int(peak)


def test_gzip_bomb_annotations_stop_at_the_limit(tmp_path: Path, slide: Path) -> None:
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
    bomb = tmp_path / "disc.geojson.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        fh.write(b'{"type": "FeatureCollection", "features": [')
        for _ in range(300):
            fh.write(b" " * (1 << 20))  # 300 MiB of white space inside
        fh.write(b"]}")
    assert bomb.stat().st_size < 1_000_000
    small = write_contours(tmp_path / "small.geojson", [box(0, 0, 100, 100)])
    base = [*CLI, "--max-annotation-mb", "8", "tile", str(slide), "--workers", "1", "--format"]
    done, peak = _peak_rss_kib(
        [*base, "none", "--out", str(tmp_path / "a"), "--annotations", str(bomb)]
    )
    assert done.returncode == 1
    line = one_error_line(done)
    assert "8 MiB limit" in line and "--max-annotation-mb" in line and str(bomb) in line
    reference, ref_peak = _peak_rss_kib(
        [*base, "none", "--out", str(tmp_path / "b"), "--annotations", str(small)]
    )
    assert reference.returncode == 0, reference.stderr
    # The 300 MiB inside were never held: the run peaks like a run on a tiny file.
    assert peak < ref_peak + 64 * 1024, (peak, ref_peak)


def _black_png(path: Path, width: int, height: int, *, bands: int = 3) -> Path:
    import pyvips

    pyvips.Image.black(width, height, bands=bands).cast("uchar").pngsave(str(path))
    return path


def test_decompression_bomb_png_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    bomb = _black_png(folder / "bomb.png", 20000, 20000, bands=1)
    assert bomb.stat().st_size < 2_000_000
    result = invoke(
        "build-library",
        "--images",
        folder,
        "--stain",
        "ihc",
        "--out",
        tmp_path / "lib.parquet",
        "--workers",
        "1",
    )
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(bomb) in line and "--max-image-pixels" in line


def test_huge_tile_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    _black_png(folder / "huge.png", 8000, 8000)
    out = tmp_path / "lib.parquet"
    cmd = [*CLI, "build-library", "--images", str(folder), "--stain", "ihc", "--out", str(out)]
    done, peak = _peak_rss_kib([*cmd, "--workers", "1"])
    assert done.returncode == 1
    line = one_error_line(done)
    assert "8000 x 8000" in line and "--max-image-pixels" in line
    assert peak < 1024 * 1024, peak  # KiB: far from the 8.7 GB it took


# ------------------------------------------------------------------ 4. two runs, one folder


HOLD = textwrap.dedent(
    """
    import sys, time
    from histolib.core.lock import output_lock
    with output_lock(sys.argv[1], command="tile"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_second_tile_run_into_a_busy_folder_is_refused(tmp_path: Path, slide: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = invoke("tile", slide, "--out", out, "--mpp", "1.0", "--workers", "1")
        assert result.exit_code == 1
        line = one_error_line(result)
        assert "in use by another histolib run" in line and f"pid {holder.pid}" in line
        assert not (out / "tiles.parquet").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock is stale, the next run takes it.
    assert invoke("tile", slide, "--out", out, "--workers", "1").exit_code == 0


# ------------------------------------------------------------------ 5. orphans


def _start_with_workers(cmd: list[str], workers: int = 2) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = children(proc.pid)
        if len(kids) >= workers:
            time.sleep(0.3)  # the workers are at work
            return proc, kids
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the workers never started")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_workers_die_with_their_parent(tmp_path: Path, big_slide: Path, sig: int) -> None:
    cmd = [*CLI, "tile", str(big_slide), "--out", str(tmp_path / "o"), "--workers", "2"]
    proc, workers = _start_with_workers(cmd)
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    assert not survivors(workers)
    # The killed run left its lock: stale, taken over by the next run.
    assert (
        invoke(
            "tile", big_slide, "--out", tmp_path / "o", "--workers", "2", "--format", "none"
        ).exit_code
        == 0
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_library_workers_die_with_their_parent(tmp_path: Path) -> None:
    from tests.helpers_library import ihc_tile, write_png

    folder = tmp_path / "tiles"
    for i in range(60):
        write_png(folder / f"t{i:02d}.png", ihc_tile(i))
    out = tmp_path / "lib.parquet"
    cmd = [*CLI, "build-library", "--images", str(folder), "--stain", "ihc", "--out", str(out)]
    proc, workers = _start_with_workers([*cmd, "--workers", "2"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not survivors(workers)


# ------------------------------------------------------------------ 7. a worker killed


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_worker_killed_by_the_system_is_one_line(tmp_path: Path, big_slide: Path) -> None:
    out = tmp_path / "o"
    cmd = [*CLI, "tile", str(big_slide), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tiles = out / "tiles" / "big"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if tiles.is_dir() and len(list(tiles.glob("*.png"))) > 5:
            break  # the workers are cutting tiles
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a worker could be killed"
    os.kill(children(proc.pid)[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert "a worker process died" in lines[0] and "--workers" in lines[0]


# ------------------------------------------------------------------ 8. smaller


def test_version_needs_no_command() -> None:
    done = subprocess.run([*CLI, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip()


def test_disk_full_names_the_tile(tmp_path: Path, slide: Path, monkeypatch) -> None:
    import errno

    from PIL import Image

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    result = invoke("tile", slide, "--out", tmp_path / "o", "--workers", "1")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "No space left on device" in line and str(tmp_path / "o") in line


def test_contour_past_the_slide_edge_is_clipped(tmp_path: Path, slide: Path) -> None:
    # 7% of the slide's width past its right edge (the slide is 1024 x 768).
    contours = write_contours(tmp_path / "disc.geojson", [box(700, 100, 1024 + 72, 400)])
    out = tmp_path / "out"
    result = invoke("tile", slide, "--out", out, "--annotations", contours, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "clipped 1 contour(s) reaching up to 72 px (7.0% of the slide)" in result.output
    gdf, _ = read_manifest(out / "tiles.parquet")
    assert "positive" in set(gdf["label"])
    away = write_contours(tmp_path / "away.geojson", [box(5000, 5000, 6000, 6000)])
    bad = invoke("tile", slide, "--out", tmp_path / "bad", "--annotations", away)
    assert bad.exit_code == 1 and "outside the slide" in one_error_line(bad)


def test_two_links_to_one_slide_give_one_set_of_rows(tmp_path: Path, slide: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "a.tif").symlink_to(slide)
    (folder / "b.tif").symlink_to(slide)
    out = tmp_path / "out"
    result = invoke("tile", folder, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    gdf, meta = read_manifest(out / "tiles.parquet")
    assert gdf["tile_id"].is_unique and set(meta["params"]["slides"]) == {"disc"}


def test_slide_named_dots_is_refused(tmp_path: Path, slide: Path) -> None:
    for name in ("..tif", "...tif"):
        odd = tmp_path / name
        odd.write_bytes(slide.read_bytes())
        result = invoke("tile", odd, "--out", tmp_path / "out", "--workers", "1")
        assert result.exit_code == 1
        assert "slide id" in one_error_line(result)
        assert not (tmp_path / "out").exists()


def test_failed_run_leaves_no_empty_output_folder(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "new" / "out"
    result = invoke("tile", shared_data / "slides/broken.svs", "--out", out)
    assert result.exit_code == 1
    assert not (tmp_path / "new").exists()


def test_cohort_grows_slide_by_slide(tmp_path: Path, slide: Path) -> None:
    second = disc_slide(tmp_path / "second.tif", width=768, height=768)
    out = tmp_path / "cohort"
    assert invoke("tile", slide, "--out", out, "--workers", "1").exit_code == 0
    first, _ = read_manifest(out / "tiles.parquet")
    assert invoke("tile", second, "--out", out, "--workers", "1").exit_code == 0
    both, meta = read_manifest(out / "tiles.parquet")
    assert list(dict.fromkeys(both["slide_id"])) == ["disc", "second"]
    assert list(meta["params"]["slides"]) == ["disc", "second"]
    assert set(first["tile_id"]) < set(both["tile_id"])
    assert all((out / p).is_file() for p in both["path"])
    # A re-run of either slide writes the same manifest (resumable, order kept).
    for again in (slide, second):
        assert invoke("tile", again, "--out", out, "--workers", "1").exit_code == 0
        gdf, _ = read_manifest(out / "tiles.parquet")
        assert list(gdf["tile_id"]) == list(both["tile_id"])
    # A slide tiled with other options cannot join the cohort.
    third = disc_slide(tmp_path / "third.tif", width=512, height=512)
    other = invoke("tile", third, "--out", out, "--mpp", "1.0", "--workers", "1")
    assert other.exit_code == 1
    line = one_error_line(other)
    assert "'disc'" in line and "mpp 0.5 there, 1.0 now" in line
    gdf, _ = read_manifest(out / "tiles.parquet")
    assert list(gdf["tile_id"]) == list(both["tile_id"])


def test_nan_and_inf_parameters_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    from tests.helpers_library import ihc_tile, write_png

    write_png(folder / "t.png", ihc_tile(0))
    params = tmp_path / "p.toml"
    params.write_text("graph_distance = nan\n")
    out = tmp_path / "lib.parquet"
    base = ("build-library", "--images", folder, "--stain", "ihc", "--out", out)
    for extra in (
        ("--dilation-radius", "nan"),
        ("--set", "graph_distance=inf"),
        ("--graph-distance", "inf"),
        ("--params", params),
    ):
        result = invoke(*base, *extra)
        assert result.exit_code == 1 and "finite" in one_error_line(result)
    assert not out.exists()
