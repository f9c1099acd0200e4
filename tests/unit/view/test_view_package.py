"""The viewer's files (vendored OpenSeadragon, its licence, the page template) are package data."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[3]
VIEW = ROOT / "histolib" / "view"


def test_every_viewer_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["histolib.view"]
    files = [
        p.relative_to(VIEW).as_posix()
        for folder in ("static", "templates")
        for p in (VIEW / folder).rglob("*")
        if p.is_file()
    ]
    assert "static/openseadragon.min.js" in files and "static/openseadragon-LICENSE.txt" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_page_files_come_from_the_installed_package() -> None:
    from histolib.view.page import page_files

    files = page_files({"title": "<t>", "slides": [], "layers": []})
    assert b"&lt;t&gt;" in files["index.html"][1]
    assert files["static/openseadragon.min.js"][1].startswith(b"//! openseadragon 6.1.1")
    assert {name for name in files if name.startswith("static/images/")} == {
        f"static/images/{n}_{s}.png"
        for n in ("home", "zoomin", "zoomout", "fullpage")
        for s in ("rest", "grouphover", "hover", "pressed")
    }
