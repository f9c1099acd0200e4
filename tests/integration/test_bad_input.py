"""Bad input across commands: one line ``error: <file>: <problem>``, non-zero exit, no traceback.

Run as a subprocess, the way a user meets these errors (stderr is not a terminal there).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histolib.synthetic.slides import make_slide


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_input")
    slide = make_slide(root, name="s", width=512, height=512, seed=1)
    tiles = root / "tiles"
    tiles.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tiles / "t.png")
    masks = root / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "t.png")
    gray = root / "gray"
    gray.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(gray / "t.png")
    text = root / "notes.pt"
    text.write_text("not a checkpoint\n")
    a_file = root / "a_file"
    a_file.write_text("a regular file, not a folder\n")
    (root / "a_folder.parquet").mkdir()
    (root / "a_folder.tif").mkdir()
    out = {
        "root": root,
        "slide": slide.slide_path,
        "tiles": tiles,
        "masks": masks,
        "gray": gray,
        "text": text,
        "a_file": a_file,
    }
    if _has_torch():
        from tests.helpers_transfer import tiny_checkpoint

        out["checkpoint"] = tiny_checkpoint(root / "tiny.pt")
    return out


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "histolib_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), repr(res.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# Each case: (argv with {placeholders}, texts the error line must hold, needs torch).
CASES = [
    # a progress bar drawn before the error used to leave a blank line in front of it
    (["synth", "{root}/syn", "--width", "0"], ["--width must be in [64, 65536], got 0"], False),
    # an output under a regular file names that file
    (
        ["tile", "{slide}", "--out", "{a_file}/x", "--no-progress"],
        ["{a_file}/x", "{a_file} is a file, not a folder"],
        False,
    ),
    (
        ["build-library", "--images", "{tiles}", "--stain", "ihc", "--out", "{a_file}/x.parquet"],
        ["{a_file} is a file, not a folder"],
        False,
    ),
    # an output that is an existing folder: named, not the temporary file beside it
    (
        "build-library --images {tiles} --stain ihc --out {root}/a_folder.parquet".split(),
        ["{root}/a_folder.parquet: is a folder, not a file"],
        False,
    ),
    (
        ["transfer", "{checkpoint}", "{slide}", "--out", "{root}/a_folder.tif"],
        ["{root}/a_folder.tif: is a folder"],
        True,
    ),
    # an existing file that is not a finished output of this run is not reported as "kept"
    (
        ["transfer", "{checkpoint}", "{slide}", "--out", "{a_file}"],
        ["{a_file}: the virtual slide must end in .tif"],
        True,
    ),
    (
        "build-library --images {tiles} --stain ihc --out {root}/l.parquet --workers 0".split(),
        ["--workers must be >= 1"],
        False,
    ),
    (
        ["transfer", "{text}", "{slide}", "--out", "{root}/v.tif"],
        ["{text}: not a readable torch checkpoint"],
        True,
    ),
    (
        ["transfer", "{checkpoint}", "{slide}", "--out", "{root}/v.tif", "--tile-size", "0"],
        ["--tile-size"],
        True,
    ),
    (
        ["transfer", "{checkpoint}", "{slide}", "--out", "{root}/v.tif", "--workers", "0"],
        ["--workers"],
        True,
    ),
    (
        ["transfer", "{checkpoint}", "--images", "{gray}", "--out", "{root}/vt"],
        ["{gray}/t.png", "8-bit RGB"],
        True,
    ),
    (
        "evaluate {checkpoint} --images {tiles} --masks {masks} --out {root}/ev "
        "--batch-size 0".split(),
        ["--batch-size must be >= 1"],
        True,
    ),
]


@pytest.mark.parametrize(("argv", "needles", "needs_torch"), CASES, ids=lambda v: str(v)[:40])
def test_bad_input_is_one_clear_line(
    inputs: dict[str, Path], argv: list[str], needles: list[str], needs_torch: bool
) -> None:
    if needs_torch and "checkpoint" not in inputs:
        pytest.skip("torch is not installed")
    names = {key: str(value) for key, value in inputs.items()}
    res = _run([a.format(**names) for a in argv], cwd=inputs["root"])
    _assert_one_line_error(res, *(n.format(**names) for n in needles))
    for final in ("v.tif", "l.parquet", "ev/summary.json", "vt/t.png"):
        assert not (inputs["root"] / final).exists()


def _with_version(path: Path, out: Path, version: str) -> Path:
    import json

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    hist = json.loads(meta[b"histolib"])
    hist["version"] = version
    meta[b"histolib"] = json.dumps(hist).encode()
    pq.write_table(table.replace_schema_metadata(meta), out)
    return out


def test_tables_of_another_histolib_version_are_refused_by_every_reader(tmp_path: Path) -> None:
    """Not only ``export qupath``: build-library, import, train and evaluate read them too."""
    import json

    from histolib.errors import ManifestError
    from histolib.library.cellio import empty_library, read_library, write_library
    from histolib.tileset.manifest import read_manifest, write_manifest
    from tests.helpers_qupath import write_manifest_for

    manifest = write_manifest_for(tmp_path / "m", slide_id="s", cols=1, rows=1)
    gdf, meta = read_manifest(manifest)
    write_manifest(gdf, manifest, params=meta["params"])  # round trip: this version reads
    old_manifest = _with_version(manifest, tmp_path / "old_tiles.parquet", "0.9.3")
    with pytest.raises(ManifestError, match=r"old_tiles\.parquet: written by histolib 0\.9\.3"):
        read_manifest(old_manifest)

    library = write_library(empty_library(), tmp_path / "lib.parquet", params={})
    old_library = _with_version(library, tmp_path / "old_lib.parquet", "7.0")
    with pytest.raises(ManifestError, match=r"old_lib\.parquet: written by histolib 7\.0"):
        read_library(old_library)

    geo = write_library(empty_library(), tmp_path / "lib.geojson", params={})
    doc = json.loads(geo.read_text())
    doc["histolib"]["version"] = "0.9.3"
    old_geo = tmp_path / "old_lib.geojson"
    old_geo.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"old_lib\.geojson: written by histolib 0\.9\.3"):
        read_library(old_geo)
