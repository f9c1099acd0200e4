"""``histolib transfer`` end to end: CliRunner and subprocess, outputs and errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_transfer import textured_slide, tiny_checkpoint

pytest.importorskip("torch")
openslide = pytest.importorskip("openslide")
runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("transfer_cli")
    checkpoint = tiny_checkpoint(root / "roi.pt")
    slide = textured_slide(root / "he.tif", width=600, height=400, mpp=0.25)
    return checkpoint, slide


def test_slide_to_pyramidal_tiff(inputs, tmp_path) -> None:
    checkpoint, slide = inputs
    out = tmp_path / "virtual_ihc.tif"
    result = runner.invoke(
        app, ["transfer", str(checkpoint), str(slide), "--out", str(out), "--no-tissue"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "0.5 um/px" in result.output  # the checkpoint's mpp
    with openslide.OpenSlide(str(out)) as handle:
        assert handle.dimensions == (300, 200)
        assert handle.level_count >= 2
        assert float(handle.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
    assert (tmp_path / "virtual_ihc.thumbnail.png").is_file()
    again = runner.invoke(app, ["transfer", str(checkpoint), str(slide), "--out", str(out)])
    assert again.exit_code == 0 and "kept" in again.output


def test_mpp_option_and_ihc2he(inputs, tmp_path) -> None:
    checkpoint, slide = inputs
    out = tmp_path / "v.tif"
    args = ["transfer", str(checkpoint), str(slide), "--out", str(out), "--mpp", "0.25"]
    args += ["--direction", "ihc2he", "--overlap", "8", "--batch-size", "3", "--workers", "1"]
    result = runner.invoke(app, [*args, "--no-tissue"])
    assert result.exit_code == 0, result.output
    with openslide.OpenSlide(str(out)) as handle:
        assert handle.dimensions == (600, 400)
        assert float(handle.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-3)


def test_folder_of_tiles(inputs, tmp_path) -> None:
    from PIL import Image

    checkpoint, _ = inputs
    src = tmp_path / "tiles"
    src.mkdir()
    for name in ("s1_x0_y0_s64.png", "s1_x64_y0_s64.png"):
        Image.fromarray(np.full((64, 64, 3), 180, np.uint8)).save(src / name)
    result = runner.invoke(
        app, ["transfer", str(checkpoint), "--images", str(src), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        p.name for p in src.iterdir()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "{slide}"], "either a SLIDE or --images"),
        (["--overlap", "64"], "overlap"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_options_are_one_line_errors(inputs, tmp_path, args, message) -> None:
    checkpoint, slide = inputs
    args = [a.replace("{slide}", str(slide.parent)) for a in args]
    result = runner.invoke(
        app, ["transfer", str(checkpoint), str(slide), "--out", str(tmp_path / "x.tif"), *args]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.tif").exists()


def test_corrupt_or_foreign_checkpoint(inputs, tmp_path) -> None:
    _, slide = inputs
    for bad in (tmp_path / "corrupt.pt", slide):
        if bad.suffix == ".pt":
            bad.write_bytes(b"\x80\x02garbage")
        result = runner.invoke(
            app, ["transfer", str(bad), str(slide), "--out", str(tmp_path / "x.tif")]
        )
        assert result.exit_code == 1
        assert "error:" in result.output and str(bad) in result.output
        assert "Traceback" not in result.output


def test_broken_slide(inputs, tmp_path, shared_data) -> None:
    checkpoint, _ = inputs
    broken = shared_data / "slides" / "broken.svs"
    result = runner.invoke(
        app, ["transfer", str(checkpoint), str(broken), "--out", str(tmp_path / "x.tif")]
    )
    assert result.exit_code == 1
    assert "broken.svs" in result.output and "Traceback" not in result.output


def _start_and_wait_for_output(cmd: list[str], folder: Path) -> subprocess.Popen:
    """Start ``cmd`` and return once its temporary output exists (it is writing)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if folder.is_dir() and any(p.name.startswith(".tmp-") for p in folder.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    return proc


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 2000 x 1500 px: minutes of work for the tiny generator; it is stopped long before.
    return textured_slide(tmp_path_factory.mktemp("big") / "big.tif", width=2000, height=1500)


def test_subprocess_killed_mid_run_leaves_no_output(inputs, big_slide, tmp_path) -> None:
    """A run killed with SIGKILL (no clean-up possible) never leaves a file at PATH."""
    checkpoint, _ = inputs
    out = tmp_path / "out" / "v.tif"
    cmd = [sys.executable, "-m", "histolib_cli.main", "transfer", str(checkpoint), str(big_slide)]
    cmd += ["--out", str(out), "--no-tissue", "--overlap", "16", "--workers", "1"]
    proc = _start_and_wait_for_output(cmd, out.parent)
    time.sleep(0.5)  # inside the run: rows are being written
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert not (out.parent / "v.thumbnail.png").exists()
    # What is left is a temporary file, which a re-run never trusts, and the stale lock.
    left = {p.name for p in out.parent.iterdir()}
    assert all(name.startswith(".tmp-") for name in left - {".v.tif.lock"}), left
    # A re-run takes the stale lock and removes the temporary, even when it then stops at once.
    rerun = subprocess.run([*cmd, "--tile-size", "30"], capture_output=True, text=True)
    assert rerun.returncode == 1 and "--tile-size must be a multiple" in rerun.stderr
    assert list(out.parent.iterdir()) == []


def test_subprocess_sigint_cleans_up(inputs, big_slide, tmp_path) -> None:
    checkpoint, _ = inputs
    out = tmp_path / "v.tif"
    cmd = [sys.executable, "-m", "histolib_cli.main", "transfer", str(checkpoint), str(big_slide)]
    cmd += ["--out", str(out), "--no-tissue", "--overlap", "16"]
    proc = _start_and_wait_for_output(cmd, tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed
