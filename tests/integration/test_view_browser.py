"""``histolib view`` in headless Chromium: served and exported, the page loads with no failed
request, both viewers draw tiles, panning one moves the other, every overlay draws its shapes."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_view import (
    evaluate,
    failed_requests,
    make_view_inputs,
    report_check,
    serving,
    wait_for,
)

CHECK = report_check()
LOADED = (
    "window.histolibView && histolibView.state.opened === 2"
    " && histolibView.state.tilesLoaded.every(n => n > 0)"
)
#: Centre of each viewer in level-0 px of the first slide (the second is at half its scale).
CENTRES = (
    "histolibView.viewers.map((v, i) => {"
    " const c = v.viewport.viewportToImageCoordinates(v.viewport.getCenter(true));"
    " const f = HISTOLIB_SCENE.slides[i].scale; return [c.x / f, c.y / f]; })"
)

#: Both viewers at rest (no animation under way).
SETTLED = (
    "histolibView.viewers.every(v => { const a = v.viewport.getCenter(true),"
    " b = v.viewport.getCenter(false); return Math.abs(a.x - b.x) + Math.abs(a.y - b.y) < 1e-9"
    " && Math.abs(v.viewport.getZoom(true) - v.viewport.getZoom(false)) < 1e-9; })"
)


@pytest.fixture(scope="module")
def browser() -> Any:
    executable = CHECK.find_browser()
    if executable is None:
        pytest.skip("no Chromium or Chrome installed (apt-get install chromium)")
    chrome = CHECK.Browser(executable)
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_view_inputs(tmp_path_factory.mktemp("view-browser"))


def _open(browser: Any, url: str) -> str:
    session = browser.open_tab()
    browser.send("Network.enable", session=session)
    error = browser.navigate(session, url)
    assert error is None, error
    assert wait_for(browser, session, LOADED), evaluate(
        browser, session, "JSON.stringify(window.histolibView && histolibView.state)"
    )
    return session


def _check_page(browser: Any, session: str, counts: dict[str, int]) -> None:
    """Every overlay draws its shapes in both viewers; a pan of one moves the other."""
    for layer in counts:
        evaluate(browser, session, f"histolibView.setLayer('{layer}', true)")
    drawn = evaluate(browser, session, "histolibView.state.drawn")
    assert drawn == {"0": counts, "1": counts}
    evaluate(browser, session, "histolibView.setLayer('cells', false)")
    assert evaluate(browser, session, "histolibView.state.drawn[1].cells") == 0
    assert wait_for(browser, session, SETTLED)
    before = evaluate(browser, session, CENTRES)
    assert before[0] == pytest.approx(before[1], abs=1.0)
    evaluate(
        browser,
        session,
        "void histolibView.viewers[0].viewport.panBy(new OpenSeadragon.Point(0.2, 0.1))",
    )
    time.sleep(0.1)  # the animation starts
    assert wait_for(browser, session, SETTLED)
    after = evaluate(browser, session, CENTRES)
    # Viewer 0 moved by the pan (0.2 of the image width, 0.1 of it down); viewer 1 with it.
    assert after[0][0] - before[0][0] == pytest.approx(0.2 * 1536, abs=2)
    assert after[0][1] - before[0][1] == pytest.approx(0.1 * 1536, abs=2)
    assert after[1] == pytest.approx(after[0], abs=1.0)
    state = evaluate(browser, session, "histolibView.state")
    assert state["tilesFailed"] == [0, 0]
    assert failed_requests(browser.events) == []
    _check_pointer(browser, session)
    label = evaluate(browser, session, "document.querySelector('#scalebar0 .label').textContent")
    assert label.endswith("µm") or label.endswith("mm")


def _check_pointer(browser: Any, session: str) -> None:
    """The pointer over the second viewer at the first slide's level-0 pixel (700, 450), its
    own (350, 225), reads 700, 450."""
    assert wait_for(browser, session, SETTLED)
    where = evaluate(
        browser,
        session,
        "(() => { const v = histolibView.viewers[1];"
        " const p = v.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(350, 225));"
        " const r = v.container.getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; })()",
    )
    for x in (where[0] - 5, where[0]):  # a move the tracker sees as a move
        browser.send(
            "Input.dispatchMouseEvent",
            {"type": "mouseMoved", "x": x, "y": where[1]},
            session=session,
        )
    text = wait_for(
        browser,
        session,
        "(t => /\\d/.test(t) && t)(document.querySelector('#pointer').textContent)",
    )
    x, y = (int(v) for v in re.findall(r"\d+", text))
    assert abs(x - 700) <= 1 and abs(y - 450) <= 1, text


def test_served_page(browser: Any, inputs: Any) -> None:
    with serving(inputs) as url:
        assert url.startswith("http://127.0.0.1:")
        session = _open(browser, url)
        _check_page(browser, session, inputs.counts)


def test_exported_folder_from_file_url(browser: Any, inputs: Any, tmp_path: Path) -> None:
    import histolib.view as hv

    page = hv.export(tmp_path / "view", inputs.view_options())
    session = _open(browser, page.resolve().as_uri())
    _check_page(browser, session, inputs.counts)
