"""The evaluation's pictures and page: distribution.png, the panel's legend, report.html with
the table as an HTML table (checked in a real browser where one is installed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from histolib_train.evaluation.evaluator import evaluate_generators
from histolib_train.evaluation.plot import write_distribution
from histolib_train.evaluation.report import table_html
from tests.helpers_transfer import blank_generator, lookup_generator, synthetic_eval_tiles

ROOT = Path(__file__).resolve().parents[4]


def report_check():
    """benchmarks/report_check.py as a module."""
    return importlib.import_module("benchmarks.report_check")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eval")
    _layout, tiles, truth, _ = synthetic_eval_tiles(root)
    out = root / "out"
    summary = evaluate_generators(
        {"perfect": lookup_generator(truth), "blank": blank_generator}, tiles, out=out
    )
    return out, summary


def test_evaluation_writes_the_distribution_plot_and_an_html_page(evaluated) -> None:
    from PIL import Image

    out, _ = evaluated
    plot = np.asarray(Image.open(out / "distribution.png").convert("RGB"))
    assert plot.shape[0] > 300 and plot.shape[1] > 600
    # The groups' colours are drawn (all tiles blue, tumour tiles orange; these synthetic
    # tiles are at least 40 % tumour or none, so no border tile: its box says n/a).
    for colour in ((70, 110, 200), (230, 130, 30)):
        assert (np.abs(plot.astype(int) - colour).sum(axis=2) == 0).sum() > 50
    page = (out / "report.html").read_text()
    assert "<table>" in page and "<pre>" not in page
    # scores: header + 2 models x 3 groups; paired: header + 1 pair x 2 DICE conventions
    assert page.count("<tr>") == (1 + 2 * 3) + (1 + 2)
    assert "DICE (both empty = 0)" in page and "border tiles" in page
    assert "distribution.png" in page and "panel.png" in page
    assert page.count('class="legend"') == 2


def test_table_html_holds_every_model_and_the_figures() -> None:
    stat = {"mean": 0.5, "std": 0.25}
    result = {
        "all": {"dice": stat, "bac": stat, "pred_fraction": stat},
        "tumour_tiles": {"dice": stat, "bac": {"mean": float("nan"), "std": 0.0}},
    }
    html = table_html({"n_tiles": 7, "checkpoints": {"a<b": result, "c": result}})
    assert "a&lt;b" in html and html.count("<tr>") == 1 + 2 * 3
    assert "0.500 ± 0.250" in html and "n/a" in html and "7 H&amp;E tiles" in html


def test_distribution_plot_copes_with_models_without_tumour_tiles(tmp_path: Path) -> None:
    rows = [
        {"checkpoint": "m", "dice": 1.0, "dice_empty0": 0.0, "bac": float("nan"), "tp": 0},
        {"checkpoint": "m", "dice": 0.0, "dice_empty0": 0.0, "bac": 0.5, "tp": 0},
    ]
    for row in rows:
        row.update(fn=0, truth_fraction=0.0)
    path = write_distribution(tmp_path / "d.png", rows)
    assert path.is_file()


def test_the_panel_has_its_legend(evaluated) -> None:
    from PIL import Image

    out, _ = evaluated
    panel = np.asarray(Image.open(out / "panel.png").convert("RGB"))
    footer = panel[-40:]
    assert (footer < 100).all(axis=2).sum() > 100  # the legend's text


def test_evaluation_page_in_a_real_browser(evaluated, tmp_path: Path) -> None:
    check = report_check()
    if check.find_browser() is None:
        pytest.skip("no Chromium or Chrome installed (apt-get install chromium)")
    out, _ = evaluated
    facts = check.check_page(out / "report.html", screenshot=tmp_path / "eval.png")
    assert len(facts["imgs"]) == 2 and not facts["broken_images"]
    assert not facts["broken_links"] and facts["evaluation_table"]
    assert (tmp_path / "eval.png").stat().st_size > 10_000


def test_the_browser_check_sees_broken_images_links_and_markdown_tables(tmp_path: Path) -> None:
    check = report_check()
    if check.find_browser() is None:
        pytest.skip("no Chromium or Chrome installed (apt-get install chromium)")
    from PIL import Image

    Image.new("RGB", (20, 10), "red").save(tmp_path / "ok.png")
    (tmp_path / "page.html").write_text(
        "<!doctype html><html><head><title>t</title></head><body>"
        "<img src='ok.png'><img src='missing.png'><a href='ok.png'>ok</a>"
        "<a href='nowhere.csv'>gone</a><pre>| model | DICE |</pre></body></html>"
    )
    facts = check.check_page(tmp_path / "page.html")
    assert [img["src"] for img in facts["broken_images"]] == ["missing.png"]
    assert [Path(link["href"]).name for link in facts["broken_links"]] == ["nowhere.csv"]
    assert not facts["evaluation_table"] and facts["pre_blocks"]
