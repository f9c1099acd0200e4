"""The one process-pool layer: default worker count, pool start-up, Ctrl-C policy.

Every stage that fans work out over processes (tiling, cell libraries, synthetic slides) gets
its pool from :func:`process_pool`, so all of them behave alike:

- ``workers`` defaults to :func:`default_workers` (the CPUs this process may use, capped);
- workers ignore SIGINT: Ctrl-C reaches the parent only, which cancels what has not started
  (work in progress finishes its atomic writes) and re-raises ``KeyboardInterrupt``;
- workers exit when their parent dies (Linux: ``PR_SET_PDEATHSIG``; elsewhere a watchdog
  thread polls the parent pid), so a killed run leaves no orphans;
- on Linux the pool forks (workers inherit imports); elsewhere the platform's safe method.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

MAX_DEFAULT_WORKERS = 8
#: ``--workers`` above ``max(MIN_WORKER_LIMIT, WORKERS_PER_CPU x the CPUs)`` is refused
#: unless the command is given ``--allow-many-workers``.
WORKERS_PER_CPU = 4
MIN_WORKER_LIMIT = 64


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(*, cap: int = MAX_DEFAULT_WORKERS) -> int:
    """The default worker count of every command: the usable CPUs, at most ``cap``."""
    return max(1, min(available_cpus(), cap))


def max_workers() -> int:
    """The most ``--workers`` a command takes without ``--allow-many-workers``."""
    return max(MIN_WORKER_LIMIT, WORKERS_PER_CPU * available_cpus())


def check_workers(
    workers: int | None,
    *,
    allow_many: bool = False,
    minimum: int | None = 1,
    flag: str = "--workers",
) -> int | None:
    """``workers`` when None or in ``[minimum, max_workers()]`` (no upper bound with
    ``allow_many``, no lower bound with ``minimum=None``).

    Raises
    ------
    ConfigError
        One line naming ``flag``, the limit and ``--allow-many-workers``.
    """
    from histolib.errors import ConfigError

    if workers is None:
        return None
    if minimum is not None and workers < minimum:
        raise ConfigError(f"{flag} must be >= {minimum}, got {workers}")
    limit = max_workers()
    if workers > limit and not allow_many:
        raise ConfigError(
            f"{flag} {workers} is above the limit of {limit} ({WORKERS_PER_CPU} x the "
            f"{available_cpus()} CPUs, at least {MIN_WORKER_LIMIT}); add --allow-many-workers "
            "to use more"
        )
    return workers


def resolve_workers(workers: int | None, *, cap: int = MAX_DEFAULT_WORKERS) -> int:
    """``workers`` when given (at least 1), else :func:`default_workers` (the commands check
    the upper bound of ``--workers`` with :func:`check_workers` as they parse it)."""
    return default_workers(cap=cap) if workers is None else max(1, int(workers))


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the process that started it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return

    def watch() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="histolib-parent-watch", daemon=True).start()


def _worker_start(parent: int, initializer: Callable[..., None] | None, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*args)


def _noop() -> int:
    return os.getpid()


class InlineExecutor(Executor):
    """Runs each submitted call at once in this process (``workers=1``: no pickling)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            future.set_exception(exc)
        return future


def start_pool(
    workers: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    start_method: str | None = None,
) -> Executor:
    """A started pool of ``workers`` processes (an :class:`InlineExecutor` for 1).

    The pool is started at once, before any progress-bar thread exists (forking a process
    with live threads is unsafe). ``initializer(*initargs)`` runs in each worker after the
    Ctrl-C and parent-death set-up. ``start_method`` (``"spawn"``...) overrides the default,
    for work such as torch training that must not run in a fork of a process whose thread
    pools are started.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        return InlineExecutor()
    import multiprocessing

    if start_method is not None:
        context = multiprocessing.get_context(start_method)
    elif sys.platform.startswith("linux"):
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context()
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_worker_start,
        initargs=(os.getpid(), initializer, initargs),
    )
    pool.submit(_noop).result()
    return pool


@contextlib.contextmanager
def process_pool(
    workers: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    start_method: str | None = None,
) -> Iterator[Executor]:
    """:func:`start_pool` as a context: on any exception (Ctrl-C included) pending work is
    cancelled and the pool shut down without waiting; on success it is shut down cleanly."""
    pool = start_pool(
        workers, initializer=initializer, initargs=initargs, start_method=start_method
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def broken_pool_message(exc: BaseException) -> str | None:
    """A one-line explanation when ``exc`` says a worker process died, else None."""
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):
        return (
            "a worker process died (killed by the system, often for lack of memory): "
            "re-run with fewer --workers; finished work is kept"
        )
    return None
