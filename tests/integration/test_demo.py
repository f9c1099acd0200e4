"""``histolib demo`` end to end on small synthetic slides (a short training budget)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import torch
    from typer.testing import CliRunner

    from histolib_cli.main import app

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--minutes", "0.1", "--slide-size", "1280"]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_stage_reports_what_it_made(demo_run: tuple[Path, str]) -> None:
    _, output = demo_run
    for stage in range(1, 10):
        assert f"[{stage}/9]" in output
    assert "demo finished" in output


def test_artefacts_exist_and_are_usable(demo_run: tuple[Path, str]) -> None:
    import geopandas as gpd
    import openslide

    out, _ = demo_run
    he = gpd.read_parquet(out / "tiles_he" / "tiles.parquet")
    assert len(he) > 0 and set(he["label"]) <= {"positive", "negative", "boundary"}
    for name in ("library_he.geojson", "library_ihc.geojson"):
        lib = gpd.read_file(out / name)
        assert set(lib["label"]) <= {"cancer", "normal"}
    qupath = json.loads((out / "qupath" / "he_train.geojson").read_text())
    assert qupath["type"] == "FeatureCollection" and qupath["features"]
    assert (out / "run" / "checkpoints" / "latest.pt").is_file()
    assert list((out / "run" / "samples").glob("step_*.png"))
    virtual = out / "virtual_ihc" / "he_heldout_virtual_ihc.tif"
    with openslide.OpenSlide(virtual) as slide:
        assert slide.level_count > 1
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary
    assert (out / "evaluation" / "table.md").read_text().count("|") > 6


def test_side_by_side_viewer(demo_run: tuple[Path, str]) -> None:
    """The held-out slide and its virtual IHC as a static viewer, linked from the report."""
    out, _ = demo_run
    page = out / "view" / "index.html"
    assert 'href="view/index.html"' in (out / "report.html").read_text()
    scene = json.loads((out / "view" / "scene.js").read_text().split("=", 1)[1].strip()[:-1])
    assert [s["name"] for s in scene["slides"]] == [
        "H&E: he_heldout.tif",
        "virtual IHC: he_heldout_virtual_ihc.tif",
    ]
    layers = {layer["kind"]: layer["count"] for layer in scene["layers"]}
    assert set(layers) == {"contours", "tiles", "dice"} and all(layers.values())
    assert page.is_file() and (out / "view" / "dzi" / "s1.dzi").is_file()


def test_report_links_resolve(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = (out / "report.html").read_text()
    links = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', report)
    assert len(links) > 10
    for link in links:
        assert (out / link).exists(), link


def test_rerun_reuses_finished_stages(demo_run: tuple[Path, str]) -> None:
    from typer.testing import CliRunner

    from histolib_cli.main import app

    out, _ = demo_run
    import geopandas as gpd

    slide = out / "slides" / "he_train.tif"
    tile = next((out / "tiles_he" / "tiles").rglob("*.png"))
    manifest = out / "tiles_he" / "tiles.parquet"
    rows = gpd.read_parquet(manifest)
    before = (slide.stat().st_mtime_ns, tile.stat().st_mtime_ns)
    result = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--minutes", "0.1", "--slide-size", "1280"]
    )
    assert result.exit_code == 0, result.output
    assert (slide.stat().st_mtime_ns, tile.stat().st_mtime_ns) == before
    assert gpd.read_parquet(manifest).equals(rows)


def test_report_in_a_real_browser(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    """Every image loads, no link is broken, the evaluation is a <table>, every picture has a
    caption, the stages' pictures their legends, and the QC pictures show at their size."""
    import importlib

    check = importlib.import_module("benchmarks.report_check")
    if check.find_browser() is None:
        pytest.skip("no Chromium or Chrome installed (apt-get install chromium)")
    out, _ = demo_run
    shot = tmp_path / "report.png"
    facts = check.check_page(out / "report.html", screenshot=shot)
    assert len(facts["imgs"]) >= 8 and not facts["broken_images"], facts["broken_images"]
    assert len(set(facts["links"])) > 10 and not facts["broken_links"], facts["broken_links"]
    assert facts["evaluation_table"] and not facts["pre_blocks"]
    assert all(figure["caption"] for figure in facts["figures"])
    # QC (1), overlays (2: H&E and IHC), samples, distribution, panel: each has its legend.
    assert facts["legends"] >= 6
    qc = [img for img in facts["imgs"] if "/qc/" in img["src"]]
    assert qc and all(img["shown"] >= min(img["natural"], 900) for img in qc)
    assert shot.stat().st_size > 100_000
