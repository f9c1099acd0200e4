"""histolib.view: the server answers only its own files and tiles; the cache is bounded; the
overlays hold the expected shapes; the export is a complete folder."""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_view import make_view_inputs, serving


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_view_inputs(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def server(inputs: Any) -> Any:
    """The view of ``inputs`` served on a free loopback port; yields (host, port)."""
    with serving(inputs) as url:
        yield "127.0.0.1", int(url.rstrip("/").rsplit(":", 1)[1])


def get(
    address: tuple[str, int],
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=bool(headers and "Host" in headers))
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_page_files_and_tiles_are_served(server: Any) -> None:
    status, body = get(server, "/")
    assert status == 200 and b"static/openseadragon.min.js" in body
    status, body = get(server, "/scene.js")
    scene = json.loads(body.decode().split("=", 1)[1].rstrip().rstrip(";"))
    assert [s["id"] for s in scene["slides"]] == ["s0", "s1"]
    assert [s["mpp"] for s in scene["slides"]] == pytest.approx([0.5, 1.0])
    assert [s["scale"] for s in scene["slides"]] == pytest.approx([1.0, 0.5])
    status, body = get(server, "/dzi/s1_files/0/0_0.jpeg")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert get(server, "/static/openseadragon.min.js")[0] == 200
    assert get(server, "/overlays/contours.geojson")[0] == 200
    assert get(server, "/dzi/s0_files/11/0_0.jpeg", method="HEAD")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../he.tif",
        "/static/../../he.tif",
        "/static/%2e%2e/%2e%2e/he.tif",
        "/%2e%2e%2fhe.tif",
        "/%2E%2E/%2E%2E/etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        "http://127.0.0.1/etc/passwd",
        "/he.tif",
        "/dzi/s0.dzi",
        "/dzi/s2_files/0/0_0.jpeg",
        "/dzi/s0_files/99/0_0.jpeg",
        "/dzi/s0_files/11/999_0.jpeg",
        "/dzi/s0_files/0/0_0.jpeg/..",
        "/static/%ff",
        "/static/images/../../scene.js",
        "/link-out",
        "/static/link-out",
    ],
)
def test_anything_else_is_404(server: Any, inputs: Any, path: str) -> None:
    link = inputs.slide.parent / "link-out"
    if not link.is_symlink():
        os.symlink("/etc/passwd", link)
    assert get(server, path)[0] == 404


def test_bad_requests_are_4xx(server: Any) -> None:
    assert get(server, "/" + "a" * 5000)[0] == 414
    assert get(server, "/", method="POST")[0] == 405
    assert get(server, "/", method="BREW")[0] == 405
    assert get(server, "/", headers={"Host": "evil.example:80"})[0] == 403
    for line in (b"GET / JUNK/1.1", b"GET / HTTP/9.9", b"GET / HTTP/1.1 extra", b"GET\x00 /"):
        with socket.create_connection(server, timeout=10) as raw:
            raw.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
            assert raw.recv(64).split()[1] in (b"400", b"405"), line
    assert get(server, "/")[0] == 200  # still serving


def test_tile_cache_is_bounded() -> None:
    from histolib.view.deepzoom import TileCache

    cache = TileCache(100)
    for i in range(10):
        cache.put(i, bytes(30))
    assert cache.bytes <= 100 and len(cache) == 3
    assert cache.get(0) is None and cache.get(9) == bytes(30)
    cache.put(10, bytes(30))  # 9 was used last: 7 goes
    assert cache.get(7) is None and cache.get(9) is not None
    cache.put("big", bytes(101))
    assert cache.get("big") is None


def test_overlay_counts(inputs: Any) -> None:
    from histolib.view.sources import build_layers

    layers = {
        layer["id"]: layer for layer in build_layers(inputs.view_options(virtual=False), "he")
    }
    assert {key: layers[key]["count"] for key in inputs.counts} == inputs.counts
    assert set(layers["cells"]["legend"]) == {"cancer", "normal"}
    assert not layers["tiles"]["visible"] and layers["dice0"]["visible"]
    values = [f["properties"]["value"] for f in layers["dice0"]["geojson"]["features"]]
    assert values[0] is None and values[-1] == pytest.approx(11 / 12, abs=1e-3)
    labels = [f["properties"]["label"] for f in layers["dice0"]["geojson"]["features"]]
    assert labels[0] == "n/a" and labels[-1] == "dice 0.917"


def test_dice_label_shows_both_conventions_where_the_evaluation_has_them() -> None:
    from histolib.view.overlays import dice_label

    assert dice_label(1.0, 0.0) == "dice 1.000, dice_empty0 0.000"  # a tile empty in both
    assert dice_label(0.5, None) == "dice 0.500"
    assert dice_label(float("nan"), 0.0) == "n/a"


def test_evaluation_needs_tiles(inputs: Any) -> None:
    from histolib.errors import ConfigError
    from histolib.view import ViewOptions

    with pytest.raises(ConfigError, match="--tiles"):
        ViewOptions(slide=inputs.slide, evaluation=inputs.evaluation)
    with pytest.raises(ConfigError, match="--cache-mb must be >= 0"):
        ViewOptions(slide=inputs.slide, cache_mb=-1)
    assert ViewOptions(slide=str(inputs.slide)).slide == inputs.slide  # text becomes a path


def test_export_is_complete_and_replaces_only_exports(inputs: Any, tmp_path: Path) -> None:
    import histolib.view as hv
    from histolib.errors import OutputError

    out = tmp_path / "view"
    page = hv.export(out, inputs.view_options())
    assert page == out / "index.html" and page.is_file()
    for key, top, last in (("s0", 11, "5_3"), ("s1", 10, "3_2")):  # 1536 and 768 px wide
        levels = sorted(int(p.name) for p in (out / "dzi" / f"{key}_files").iterdir())
        assert levels == list(range(top + 1))
        assert (out / "dzi" / f"{key}_files" / str(top) / f"{last}.jpeg").is_file()
    assert (out / "static" / "openseadragon-LICENSE.txt").is_file()
    assert (out / "overlays" / "cells.geojson").is_file()
    hv.export(out, inputs.view_options(virtual=False))  # replaces the previous export
    assert not (out / "dzi" / "s1.dzi").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a histolib view export"):
        hv.export(other, hv.ViewOptions(slide=inputs.slide))
    assert (other / "mine.txt").read_text() == "keep"


def test_cli_export_and_errors(inputs: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from histolib_cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli-view"
    result = runner.invoke(
        app,
        [
            "view",
            str(inputs.slide),
            str(inputs.virtual),
            "--annotations",
            str(inputs.annotations),
            "--export",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file()
    result = runner.invoke(app, ["view", str(tmp_path / "missing.tif"), "--export", str(out)])
    assert result.exit_code == 1 and "missing.tif" in result.output
    assert "Traceback" not in result.output


def test_openslide_pyramid_matches_dzsave(inputs: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Formats pyvips cannot read get the same pyramid, tile by tile from OpenSlide."""
    import numpy as np
    from PIL import Image

    from histolib.view import folder
    from histolib.view.deepzoom import DeepZoomSlide

    with DeepZoomSlide(inputs.slide) as slide:
        folder.dzsave(slide, tmp_path / "vips")
        monkeypatch.setattr(folder, "_pyvips_level0", lambda slide: None)
        folder.dzsave(slide, tmp_path / "openslide")

    def tiles(name: str) -> list[str]:
        root = tmp_path / f"{name}_files"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpeg"))

    assert tiles("vips") == tiles("openslide") and len(tiles("vips")) > 30
    for tile in ("11/2_1.jpeg", "9/0_0.jpeg", "0/0_0.jpeg"):
        a, b = (
            np.asarray(Image.open(tmp_path / f"{n}_files" / tile), dtype=np.int16)
            for n in ("vips", "openslide")
        )
        assert a.shape == b.shape and np.abs(a - b).mean() < 6, tile
    assert "254" in (tmp_path / "openslide.dzi").read_text()
