"""Tests of the shared safety layer: histolib.core.{names, limits, lock} and atomic write errors."""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from histolib.core.atomic import atomic_path
from histolib.core.limits import (
    LIMITS,
    check_image_size,
    current,
    override_limits,
    read_bounded,
    set_limits,
)
from histolib.core.lock import LOCK_NAME, lock_path_for, output_lock, remove_stale_temporaries
from histolib.core.names import (
    check_name,
    child_path,
    name_problem,
    same_file,
    sanitize_name,
)
from histolib.core.overwrite import check_output
from histolib.errors import AnnotationError, ConfigError, ImageError, InputError, OutputError

# ----------------------------------------------------------------------------------- names

UNSAFE = [
    "",
    " ",
    ".",
    "..",
    "a/b",
    "/abs/ESCAPED",
    "../../ESCAPED",
    "a\\b",
    "a\x00b",
    "x\ny",
    " lead",
    "trail ",
    "CON",
    "nul.txt",
    "Lpt1",
    "a" * 201,
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_in_one_line(name: str, tmp_path: Path) -> None:
    assert name_problem(name) is not None
    with pytest.raises(InputError) as info:
        check_name(name, what="slide id", path=tmp_path / "t.parquet")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "t.parquet"))
    assert "slide id" in message
    with pytest.raises(OutputError):
        child_path(tmp_path, name, suffix=".geojson")
    safe = sanitize_name(name)
    assert name_problem(safe) is None, safe
    assert (tmp_path / safe).parent == tmp_path


@pytest.mark.parametrize("name", ["case1", "a.b.c", "...", "..x", "TCGA-01_x100_y200_s256", "é"])
def test_plain_names_pass(name: str, tmp_path: Path) -> None:
    assert check_name(name) == name
    assert child_path(tmp_path, name, suffix=".png") == tmp_path / f"{name}.png"


def test_sanitize_keeps_plain_names_and_is_deterministic() -> None:
    assert sanitize_name("TCGA-01_x1_y2_s256") == "TCGA-01_x1_y2_s256"
    assert sanitize_name("a/b c") == sanitize_name("a/b c") == "a_b_c"
    assert sanitize_name("..") == "_.."


def test_same_file_and_the_output_check(tmp_path: Path) -> None:
    source = tmp_path / "x.tif"
    source.write_bytes(b"slide")
    link = tmp_path / "link.tif"
    link.symlink_to(source)
    hard = tmp_path / "hard.tif"
    os.link(source, hard)
    assert same_file(source, link) and same_file(hard, source)
    assert same_file(tmp_path / "sub" / ".." / "x.tif", source)
    assert not same_file(tmp_path / "other.tif", source)
    for out in (source, link, hard):
        with pytest.raises(OutputError, match="would overwrite the input"):
            check_output(out, inputs=[source], folder=False)
    check_output(tmp_path / "other.tif", inputs=[source], folder=False)


# ----------------------------------------------------------------------------------- limits


def test_limits_defaults_and_overrides() -> None:
    limits = current()
    assert limits.image_pixels == 4096 * 4096 and limits.annotation_bytes == 512 * 1024 * 1024
    assert limits.upsampling == 4.0 and limits.any_mpp is False
    with override_limits(image_pixels=100, any_mpp=True, upsampling=8) as inside:
        assert inside.image_pixels == 100 and inside.any_mpp and inside.upsampling == 8
        assert os.environ[LIMITS["image_pixels"].env] == "100.0"
    assert current() == limits
    for bad in ({"image_pixels": 0}, {"upsampling": 0.5}, {"grid_tiles": -3}, {"nope": 1}):
        with pytest.raises(ConfigError):
            set_limits(**bad)
    assert current() == limits


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOLIB_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="HISTOLIB_MAX_IMAGE_PIXELS"):
        current()


def test_image_size_limit_names_the_option(tmp_path: Path) -> None:
    check_image_size(4096, 4096, path=tmp_path, error=ImageError)
    with pytest.raises(ImageError) as info:
        check_image_size(20000, 20000, path=tmp_path / "big.png", error=ImageError)
    message = str(info.value)
    assert "20000 x 20000" in message and "--max-image-pixels" in message and "\n" not in message
    with override_limits(image_pixels=20000 * 20000):
        check_image_size(20000, 20000, path=tmp_path, error=ImageError)


def test_read_bounded_stops_a_gzip_bomb_at_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.geojson.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        for _ in range(64):
            fh.write(b" " * (1 << 20))  # 64 MiB of spaces
    assert bomb.stat().st_size < 200_000
    with override_limits(annotation_bytes=1 << 20):
        with pytest.raises(AnnotationError) as info:
            read_bounded(bomb, error=AnnotationError)
    assert "1 MiB limit" in str(info.value) and "--max-annotation-mb" in str(info.value)
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"[]" * 1000)
    with override_limits(annotation_bytes=1000):
        with pytest.raises(AnnotationError, match="2000 bytes"):
            read_bounded(plain, error=AnnotationError)
    assert read_bounded(plain, error=AnnotationError) == b"[]" * 1000
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(os.urandom(5000))[:2500])  # cut inside the stream
    with pytest.raises(AnnotationError, match="cannot read file"):
        read_bounded(broken, error=AnnotationError)


# ----------------------------------------------------------------------------------- atomic


def test_disk_full_names_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "tiles.parquet"
    with pytest.raises(OutputError) as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).startswith(str(target)) and "No space left" in str(info.value)
    assert list(target.parent.iterdir()) == []


# ----------------------------------------------------------------------------------- lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from histolib.core.lock import output_lock
    with output_lock(sys.argv[1], command="tile"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _hold(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        with pytest.raises(OutputError) as info:
            with output_lock(out, command="tile"):
                pass
        message = str(info.value)
        assert f"pid {holder.pid}" in message and "tile" in message and "\n" not in message
        assert (out / LOCK_NAME).exists()  # the refused run does not remove the owner's lock
    finally:
        holder.kill()
        holder.wait()
    # The owner died without cleaning up: its lock is stale and is taken over.
    assert (out / LOCK_NAME).exists()
    with output_lock(out, command="tile") as lock:
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["command"] == "tile"
    assert not (out / LOCK_NAME).exists()


def test_lock_of_a_file_output_and_stale_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "virtual.tif"
    stale = tmp_path / ".tmp-virtual-ab12cd_9.tif"
    stale.write_bytes(b"half a tiff")
    other = tmp_path / ".tmp-virtual-b-ab12cd_9.tif"  # another output's temporary: kept
    other.write_bytes(b"x")
    with output_lock(out, command="transfer", folder=False) as lock:
        assert lock == lock_path_for(out, folder=False) == tmp_path / ".virtual.tif.lock"
        assert not stale.exists() and other.exists()
    assert not lock.exists()
    assert remove_stale_temporaries(tmp_path / "none.tif") == []


def test_failed_run_leaves_no_empty_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with output_lock(out, command="tile"):
            (out / "tiles" / "slide").mkdir(parents=True)
            raise RuntimeError("the slide was bad")
    assert list(tmp_path.iterdir()) == []
    # Work already done is kept.
    with pytest.raises(RuntimeError):
        with output_lock(out, command="tile"):
            (out / "parts").mkdir()
            (out / "parts" / "a.parquet").write_bytes(b"done")
            raise RuntimeError("the second slide was bad")
    assert (out / "parts" / "a.parquet").exists() and not (out / LOCK_NAME).exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        with output_lock(existing, command="tile"):
            raise RuntimeError("bad")
    assert existing.is_dir()  # a folder the user made stays


def test_lock_on_a_file_where_a_folder_is_needed(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        with output_lock(a_file, command="tile"):
            pass
    with pytest.raises(OutputError, match="is a folder"):
        with output_lock(tmp_path, command="build-library", folder=False):
            pass
