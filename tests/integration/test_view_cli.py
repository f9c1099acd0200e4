"""``histolib view`` as a process: it prints its loopback URL, serves, and Ctrl-C stops it with
exit 130 and no traceback."""

from __future__ import annotations

import http.client
import re
import time
from pathlib import Path

from tests.helpers_proc import command_process, interrupt
from tests.helpers_tile import disc_slide


def test_serve_then_ctrl_c(tmp_path: Path) -> None:
    slide = disc_slide(tmp_path / "he.tif", width=600, height=400)
    with command_process("view", str(slide), "--port", "0", "--no-browser") as proc:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        conn.request("GET", "/dzi/s0_files/0/0_0.jpeg")
        response = conn.getresponse()
        assert response.status == 200 and response.read()[:2] == b"\xff\xd8"
        conn.close()
        time.sleep(0.2)
        _, stderr = interrupt(proc, timeout=30)
    assert proc.returncode == 130, stderr
    assert "stopped" in stderr and "Traceback" not in stderr


def test_loopback_names() -> None:
    from histolib.view.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.org", "::"))
