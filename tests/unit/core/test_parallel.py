"""histolib.core.parallel: pools of either start method ignore Ctrl-C and die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from histolib.core.parallel import process_pool
from tests.helpers_proc import children, survivors

POOL = textwrap.dedent(
    """
    import sys, time
    from histolib.core.parallel import process_pool
    with process_pool(2, start_method=sys.argv[1]) as pool:
        futures = [pool.submit(time.sleep, 60) for _ in range(2)]
        time.sleep(1.0)
        print("working", flush=True)
        for future in futures:
            future.result()
    """
)


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_pool_of_either_start_method_runs_work(start_method: str) -> None:
    with process_pool(2, start_method=start_method) as pool:
        assert [f.result() for f in [pool.submit(_square, i) for i in range(5)]] == [
            0,
            1,
            4,
            9,
            16,
        ]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_die_with_a_killed_parent(start_method: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", POOL, start_method], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "working"
        workers = children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert not survivors(workers, wait=10.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
