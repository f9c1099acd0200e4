"""``--scheduler`` cannot hang (issue 23, item 4): a port on 127.0.0.1 that accepts and says
nothing, one that answers like another service, one that is closed and an unknown protocol
each end in one line, within the handshake timeout, with no traceback from the client."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from histolib.core.dask_cluster import ClusterError, check_handshake

pytest.importorskip("distributed")


def _serve(greeting: bytes | None) -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts and sends ``greeting`` (None: nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if greeting is not None:
                conn.sendall(greeting)
            held.append(conn)  # kept open: the peer waits for more

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def silent() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture
def http_like() -> Iterator[str]:
    yield from _serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_silent_service_is_not_a_scheduler(silent: str) -> None:
    with pytest.raises(ClusterError, match=r"sent no Dask handshake within 0\.5 s") as info:
        check_handshake(silent, timeout=0.5)
    assert "\n" not in str(info.value)


def test_a_service_answering_something_else_is_not_a_scheduler(http_like: str) -> None:
    with pytest.raises(ClusterError, match=r"answered b'HTTP/1.1', not a Dask handshake"):
        check_handshake(http_like, timeout=5)


def test_a_closed_port_and_unknown_protocols() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        check_handshake(f"tcp://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ClusterError, match="unknown protocol 'garbage'"):
        check_handshake("garbage://x")


def test_a_real_scheduler_passes() -> None:
    import asyncio

    from distributed import Scheduler

    async def main() -> None:
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as scheduler:
            await asyncio.to_thread(check_handshake, scheduler.address, timeout=10)

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["garbage", "silent", "http"])
def test_connect_fails_in_one_line_and_exits_promptly(
    kind: str, silent: str, http_like: str
) -> None:
    """In a fresh process, as the CLI runs it: no hang, no traceback at exit (the issue:
    ``garbage://x`` hung 60 s, then ``Client.__del__`` printed one)."""
    address = {"garbage": "garbage://x", "silent": silent, "http": http_like}[kind]
    code = textwrap.dedent(
        f"""
        from histolib.core import dask_cluster
        dask_cluster.HANDSHAKE_TIMEOUT_S = 2.0
        try:
            dask_cluster.connect({address!r})
        except dask_cluster.ClusterError as exc:
            print("error:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_tile_with_a_silent_scheduler_is_one_line(silent: str, tmp_path, monkeypatch) -> None:
    """The issue's reproduction: ``tile --scheduler tcp://127.0.0.1:PORT`` on a port that is
    not Dask was silent until killed (330 s)."""
    from typer.testing import CliRunner

    from histolib.core import dask_cluster
    from histolib_cli.main import app
    from tests.helpers_tile import disc_slide

    monkeypatch.setattr(dask_cluster, "HANDSHAKE_TIMEOUT_S", 1.0)
    slide = disc_slide(tmp_path / "s.tif", width=512, height=384)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tile", str(slide), "--out", str(out), "--scheduler", silent])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "is not a Dask scheduler: it sent no Dask handshake within 1 s" in lines[0]
    assert not (out / "tiles.parquet").exists()
