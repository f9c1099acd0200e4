"""Processes: Python run in a child, and, seen through /proc, the children of a process and
whether one still runs."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def run_python(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``args`` in ``cwd``; its output as text (a non-zero exit does
    not raise: the caller asserts on ``returncode``)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def command_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``histolib args...`` started as a process with piped text output; killed (and reaped) on
    leaving the block if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "histolib_cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def interrupt(proc: subprocess.Popen[str], *, timeout: float) -> tuple[str, str]:
    """Ctrl-C (SIGINT) to ``proc``; what it wrote to stdout and stderr until it ended."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def survivors(pids: list[int], *, wait: float = 5.0) -> list[int]:
    """Those of ``pids`` still running after up to ``wait`` seconds for them to end."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]
