"""histolib.core.overwrite.check_output: what counts as writing over an input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from histolib.core.overwrite import check_output
from histolib.errors import OutputError


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "tiles.parquet"
    path.parent.mkdir()
    path.write_bytes(b"manifest")
    return path


def test_the_same_file_by_any_name_is_refused(tmp_path: Path, source: Path) -> None:
    link = tmp_path / "link.parquet"
    link.symlink_to(source)
    hard = tmp_path / "hard.parquet"
    os.link(source, hard)
    dotted = tmp_path / "in" / ".." / "in" / "tiles.parquet"
    for out in (source, link, hard, dotted):
        with pytest.raises(OutputError, match=f"would overwrite the input {source}"):
            check_output(out, inputs=[source], folder=False)


def test_a_folder_output_is_refused_where_it_writes_over_an_input(
    tmp_path: Path, source: Path
) -> None:
    folder = source.parent
    with pytest.raises(OutputError, match="holds the input"):
        check_output(folder, inputs=[source], folder=True, writes=("tiles.parquet",))
    check_output(folder, inputs=[source], folder=True, writes=("tiles/*", "qc/*"))
    alias = tmp_path / "alias"
    alias.symlink_to(folder)  # the same folder through a link
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(alias, inputs=[folder], folder=True)
    out = tmp_path / "out"
    out.mkdir()
    os.link(source, out / "tiles.parquet")  # what the command writes is a hard link of the input
    with pytest.raises(OutputError, match=r"is the input .* \(a link\)"):
        check_output(out, inputs=[source], folder=True, writes=("tiles.parquet",))


def test_top_level_patterns_and_scanned_folders(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "ann"
    (out / "sub").mkdir(parents=True)
    nested = out / "sub" / "s1.geojson"
    nested.write_text("{}")
    check_output(out, inputs=[nested], folder=True, writes=("*.geojson",))  # top level only
    top = out / "s1.geojson"
    top.write_text("{}")
    with pytest.raises(OutputError, match="holds the input"):
        check_output(out, inputs=[top], folder=True, writes=("*.geojson",))
    with pytest.raises(OutputError, match="lies inside the input folder"):
        check_output(source.parent / "lib.parquet", scanned=[source.parent], folder=False)
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path / "lib.parquet", inputs=[source], folder=False, side=[source])
    check_output(tmp_path / "x", inputs=[None, "", tmp_path / "missing"], folder=True)
