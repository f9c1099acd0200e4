"""Check an HTML report in a real headless browser: images load, links resolve, tables are tables.

Opens the page in headless Chromium (or Chrome), driven over the DevTools protocol through a
pipe (``--remote-debugging-pipe``: no port, no extra Python package), and reports:

- every ``<img>``: loaded (``complete`` with a natural width), its natural and shown width;
- every ``<a href>``: opened in a second tab; broken when the browser cannot find it (a file
  the browser would download, e.g. a ``.tif``, counts as found);
- the ``<table>`` elements and whether one holds the evaluation (DICE);
- every ``<figure>`` with and without a legend or caption;
- a full-page screenshot (``--screenshot PNG``).

Exit code 0 when nothing is broken, 1 otherwise, 2 when no browser is installed.

    python benchmarks/report_check.py histolib-demo/report.html --screenshot report.png
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PAGE_FACTS = """(() => {
  const imgs = [...document.images].map(i => ({
    src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
    natural: i.naturalWidth, shown: Math.round(i.getBoundingClientRect().width)}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const tables = [...document.querySelectorAll('table')];
  const figures = [...document.querySelectorAll('figure')].map(f => ({
    src: f.querySelector('img') ? f.querySelector('img').getAttribute('src') : null,
    caption: !!f.querySelector('figcaption'), legend: !!f.querySelector('.legend')}));
  return {title: document.title, imgs, links, figures,
          tables: tables.length,
          evaluation_table: tables.some(t => /DICE/.test(t.textContent) && t.rows.length > 1),
          pre_blocks: [...document.querySelectorAll('pre')].map(p => p.textContent.slice(0, 60)),
          legends: document.querySelectorAll('.legend').length};
})()"""


def find_browser() -> str | None:
    """The path of an installed Chromium or Chrome, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, executable: str, *, width: int = 1280, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="histolib-browser-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [
            executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--allow-file-access-from-files",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},900",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        """Wait for the event ``method`` of ``session``."""
        deadline = time.monotonic() + self.timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._read_message(deadline))

    def open_tab(self) -> str:
        """A new tab; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.send("Page.enable", session=session["sessionId"])
        return session["sessionId"]

    def navigate(self, session: str, url: str) -> str | None:
        """Open ``url``; returns the browser's error text, None when it loaded."""
        self.events.clear()
        result = self.send("Page.navigate", {"url": url}, session=session)
        if result.get("errorText"):
            return str(result["errorText"])
        self.wait_event("Page.loadEventFired", session)
        return None

    def close(self) -> None:
        """Close the browser and remove its profile."""
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)


def _screenshot(browser: Browser, session: str, path: Path) -> None:
    metrics = browser.send("Page.getLayoutMetrics", session=session)
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.send(
        "Page.captureScreenshot",
        {"format": "png", "clip": clip, "captureBeyondViewport": True},
        session=session,
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(
    page: str | Path, *, screenshot: str | Path | None = None, browser: str | None = None
) -> dict[str, Any]:
    """Open ``page`` in headless Chromium and report what loads (see the module docstring).

    Raises
    ------
    FileNotFoundError
        When no browser is installed (``browser`` None and none on PATH).
    """
    executable = browser or find_browser()
    if executable is None:
        raise FileNotFoundError("no Chromium or Chrome on PATH (apt-get install chromium)")
    url = Path(page).resolve().as_uri()
    chrome = Browser(executable)
    try:
        chrome.send("Browser.setDownloadBehavior", {"behavior": "deny"})
        session = chrome.open_tab()
        error = chrome.navigate(session, url)
        if error:
            raise RuntimeError(f"{page}: the browser could not open it ({error})")
        facts = chrome.send(
            "Runtime.evaluate",
            {"expression": PAGE_FACTS, "returnByValue": True},
            session=session,
        )["result"]["value"]
        if screenshot:
            _screenshot(chrome, session, Path(screenshot))
        link_tab = chrome.open_tab()
        broken = []
        for link in dict.fromkeys(facts["links"]):
            error = chrome.navigate(link_tab, link)
            # A file the browser would download (denied here) is found; a missing one is not.
            if error and "ERR_ABORTED" not in error:
                broken.append({"href": link, "error": error})
    finally:
        chrome.close()
    facts["broken_links"] = broken
    facts["broken_images"] = [img for img in facts["imgs"] if not img["ok"]]
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="the HTML file (e.g. histolib-demo/report.html)")
    parser.add_argument("--screenshot", default=None, help="write a full-page PNG here")
    parser.add_argument("--browser", default=None, help="the browser (default: on PATH)")
    parser.add_argument("--json", default=None, help="also write the findings here")
    args = parser.parse_args()
    try:
        facts = check_page(args.page, screenshot=args.screenshot, browser=args.browser)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    images = facts["imgs"]
    print(f"{args.page}: {facts['title']!r}")
    print(f"images: {len(images) - len(facts['broken_images'])} of {len(images)} load")
    for img in images:
        state = "ok" if img["ok"] else "BROKEN"
        print(f"  {state:6s} {img['src']} ({img['natural']} px wide, shown {img['shown']} px)")
    print(f"links: {len(set(facts['links']))} distinct, {len(facts['broken_links'])} broken")
    for link in facts["broken_links"]:
        print(f"  BROKEN {link['href']} ({link['error']})")
    print(
        f"tables: {facts['tables']} <table> (evaluation table: {facts['evaluation_table']}); "
        f"<pre> blocks: {len(facts['pre_blocks'])}; legends: {facts['legends']}"
    )
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    if args.json:
        Path(args.json).write_text(json.dumps(facts, indent=2))
    bad = facts["broken_images"] or facts["broken_links"] or not facts["evaluation_table"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
