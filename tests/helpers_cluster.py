"""Helpers for the Dask cluster tests: a task that kills its worker the first time it runs.

A worker process runs these by reference (``tests.helpers_cluster``): the test process's
``sys.path`` reaches the workers of a ``LocalCluster`` (they are spawned from it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def dying_call(marker: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, except that the first call of all (the one that creates ``marker``,
    writing its pid there) kills its worker process on the spot, as a crash or the kernel's
    out-of-memory killer would."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(*args)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


def dies_once(marker: Path, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped by :func:`dying_call` (picklable)."""
    return functools.partial(dying_call, str(marker), fn)


def always_dies() -> None:
    """Kill the worker process running this, every time."""
    os._exit(1)


def worker_pid() -> int:
    """The pid of the worker process running this."""
    return os.getpid()


def fails_with(message: str) -> None:
    """Raise a histolib error (it must reach the client as itself)."""
    from histolib.errors import InputError

    raise InputError(message, path="/somewhere/slide.svs")


def slow_square(value: int, seconds: float) -> int:
    """``value ** 2`` after ``seconds``."""
    import time

    time.sleep(seconds)
    return value * value


def profiler_enabled() -> bool:
    """Whether the Dask worker running this samples its threads' stacks."""
    import dask

    return bool(dask.config.get("distributed.worker.profile.enabled"))
