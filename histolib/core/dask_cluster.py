"""Running a command's per-slide / per-chunk work on a Dask distributed cluster.

The local pool (:func:`histolib.core.parallel.process_pool`) and a Dask cluster both hand out
:class:`concurrent.futures.Future` objects: :func:`executor_pool` gives either, so a stage
(tiling's scheduler, the cell library) runs unchanged over both. With a scheduler:

- ``scheduler`` is a ``tcp://`` (``tls://``, ``inproc://``...) address or the path of a
  scheduler file (``dask scheduler --scheduler-file``, ``histolib cluster local``);
- the functions submitted are the same pure, module-level functions the local pool runs; they
  open slides and write their outputs (atomically, to a temporary name then renamed) inside
  the workers, so every worker must see the slides and the output folder at the same paths as
  this process (a shared file system);
- a task whose worker dies is run again elsewhere by the Dask scheduler (up to its
  ``distributed.scheduler.allowed-failures`` times, then :class:`WorkerLostError`), a task
  that raises is retried ``retries`` times; the work being idempotent, a retry neither loses
  nor duplicates anything;
- ``workers`` is the cluster's worker threads (the sum of ``nthreads``), read once at start.

Nothing here imports dask until a scheduler is given.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, InvalidStateError
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError, HistolibError, InputError

DEFAULT_RETRIES = 2
"""Times a task that raised is run again on the cluster (a dead worker is handled apart)."""

CONNECT_TIMEOUT_S = 30.0
"""Seconds to reach the scheduler."""

HANDSHAKE_TIMEOUT_S = 10.0
"""Seconds a ``tcp://`` scheduler has to greet a new connection (a Dask scheduler speaks first,
within milliseconds; another service says nothing or something else)."""

HANDSHAKE_MAX_BYTES = 1 << 20
"""Largest first message accepted from a scheduler (its greeting is a few hundred bytes)."""

WORKER_WAIT_S = 300.0
"""Seconds to wait for a first worker when the scheduler has none."""

INSTALL_HINT = "install the cluster extra: pip install 'histolib[cluster]'"

LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False}
"""Dask settings of :func:`start_local_cluster`: no statistical profiler in the workers (it
samples every thread's stack every 10 ms for a dashboard that is not started)."""


class ClusterError(HistolibError):
    """The Dask cluster cannot be used: no scheduler there, no worker, the connection lost."""


class WorkerLostError(HistolibError):
    """The workers running a task died every time it was tried (out of memory, killed)."""


def is_address(scheduler: str | Path) -> bool:
    """Whether ``scheduler`` is an address (``proto://host:port``) rather than a file."""
    return "://" in str(scheduler)


def scheduler_address(scheduler: str | Path) -> str:
    """The address of ``scheduler``: itself, or the ``address`` its scheduler file records.

    Raises
    ------
    InputError
        A scheduler file that is missing, unreadable or holds no address.
    """
    if is_address(scheduler):
        return str(scheduler)
    path = Path(scheduler)
    if not path.is_file():
        raise InputError(
            "no such scheduler file (give a tcp:// address or the file written by "
            "'dask scheduler --scheduler-file' or 'histolib cluster local')",
            path=path,
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"not a Dask scheduler file ({exc})", path=path) from None
    address = data.get("address") if isinstance(data, dict) else None
    if not isinstance(address, str) or not is_address(address):
        raise InputError("not a Dask scheduler file (it records no address)", path=path)
    return address


def _check_protocol(address: str) -> str:
    """The protocol of ``address``, refused when Dask has no such transport."""
    from distributed.comm.registry import backends

    scheme = address.split("://", 1)[0].lower()
    if scheme not in backends:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r}: unknown protocol {scheme!r} "
            f"(known: {', '.join(sorted(backends))}; e.g. tcp://127.0.0.1:8786)"
        )
    return scheme


def _read_greeting(sock: Any, timeout: float) -> bytes:
    """Up to 8 bytes the peer sends first, waiting at most ``timeout`` seconds in all."""
    import time

    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < 8:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            part = sock.recv(8 - len(data))
        except TimeoutError:
            break
        if not part:
            break
        data += part
    return data


def check_handshake(address: str, *, timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Check that a ``tcp://`` address is a Dask scheduler before a client trusts it: the
    connection must open within ``timeout`` and the peer must greet it within ``timeout``
    with the length of a plausible Dask message (a Dask scheduler writes its handshake first).
    Other protocols are checked by the client itself.

    Raises
    ------
    ClusterError
        One line: an unknown protocol, no connection, no greeting, or not Dask's greeting.
    """
    import socket
    import struct

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme = _check_protocol(address)
    if scheme != "tcp":
        return
    try:
        host, port = parse_host_port(parse_address(address)[1])
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"not a scheduler address: {address!r} ({exc})") from None
    what = f"the Dask scheduler at {address}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(f"cannot reach {what} ({reason})") from None
    with sock:
        try:
            greeting = _read_greeting(sock, timeout)
        except OSError as exc:
            raise ClusterError(f"cannot reach {what} ({exc.strerror or exc})") from None
    if len(greeting) < 8:
        raise ClusterError(
            f"{address} is not a Dask scheduler: it sent no Dask handshake within "
            f"{timeout:g} s (another service on that port?)"
        )
    (size,) = struct.unpack("<Q", greeting)
    if not 0 < size <= HANDSHAKE_MAX_BYTES:
        raise ClusterError(
            f"{address} is not a Dask scheduler: it answered {greeting!r}, not a Dask "
            "handshake (another service on that port?)"
        )


def connect(scheduler: str | Path, *, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` of the scheduler at ``scheduler`` (address or scheduler file)
    that has at least one worker (waiting up to :data:`WORKER_WAIT_S` for one).

    Raises
    ------
    ClusterError
        dask is not installed, the scheduler cannot be reached, is not a Dask scheduler
        (:func:`check_handshake`) or no worker joins it.
    InputError
        A bad scheduler file.
    """
    address = scheduler_address(scheduler)
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(f"--scheduler needs dask.distributed: {INSTALL_HINT}") from None
    check_handshake(address, timeout=min(timeout, HANDSHAKE_TIMEOUT_S))
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({reason})") from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(
            f"no Dask worker joined the scheduler at {address} within {WORKER_WAIT_S:g} s "
            f"(start some: dask worker {address})"
        ) from None
    return client


def cluster_threads(client: Any) -> int:
    """The worker threads of the cluster (at least 1)."""
    return max(1, sum(int(n) for n in client.nthreads().values()))


def _task_error(future: Any) -> BaseException:
    """The exception of a failed Dask future, a dead worker's as :class:`WorkerLostError`."""
    from distributed import KilledWorker

    exc = future.exception()
    if isinstance(exc, KilledWorker):
        return WorkerLostError(
            "the Dask workers running this task died each time it was tried (out of memory? "
            "killed?); finished work is kept and a re-run resumes"
        )
    return exc


def _notify_cancelled(cf_future: Future) -> None:
    """Wake ``concurrent.futures.wait`` for a future cancelled before it ran."""
    with contextlib.suppress(RuntimeError):  # already notified
        cf_future.set_running_or_notify_cancel()


class DaskExecutor(Executor):
    """A :class:`concurrent.futures.Executor` that runs each call as a task of a Dask cluster.

    ``submit`` returns a plain :class:`concurrent.futures.Future` (``wait``, ``cancel`` and
    ``FIRST_COMPLETED`` work as with a process pool). Tasks are impure (never merged with an
    equal call) and retried ``retries`` times when they raise. ``shutdown`` closes the client
    when the executor owns it.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    retries
        Runs again of a task that raised.
    own_client
        Close ``client`` on shutdown.
    """

    def __init__(self, client: Any, *, retries: int = DEFAULT_RETRIES, own_client: bool = False):
        self.client = client
        self.retries = int(retries)
        self.own_client = own_client
        self.workers = cluster_threads(client)
        self._live: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; a future of its result."""
        if self._closed:
            raise RuntimeError("cannot submit to a shut-down DaskExecutor")
        task = self.client.submit(fn, *args, pure=False, retries=self.retries, **kwargs)
        cf_future: Future = Future()
        with self._lock:
            self._live.add(task)

        def cancel_task(done: Future) -> None:
            if done.cancelled() and task.status not in ("finished", "error"):
                task.cancel()

        cf_future.add_done_callback(cancel_task)
        task.add_done_callback(lambda finished: self._settle(finished, cf_future))
        return cf_future

    def _settle(self, task: Any, cf_future: Future) -> None:
        """Pass a finished task's outcome on to its concurrent future (a callback thread)."""
        try:
            if cf_future.cancelled():
                _notify_cancelled(cf_future)
            elif task.status == "finished":
                cf_future.set_result(task.result())
            elif task.status == "error":
                cf_future.set_exception(_task_error(task))
            elif not self._closed:  # cancelled by the scheduler, not by this process
                cf_future.set_exception(
                    ClusterError("the Dask scheduler dropped a task (connection lost?)")
                )
            else:
                cf_future.cancel()
                _notify_cancelled(cf_future)
        except InvalidStateError:  # cancelled meanwhile
            _notify_cancelled(cf_future)
        except BaseException as exc:  # the result could not be fetched
            with contextlib.suppress(InvalidStateError):
                cf_future.set_exception(exc)
        finally:
            with self._lock:
                self._live.discard(task)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for (or with ``cancel_futures`` cancel) the tasks still out; close an owned
        client. Tasks already running on a worker run to their end there."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            live = list(self._live)
        if cancel_futures and live:
            with contextlib.suppress(Exception):
                self.client.cancel(live)
        elif wait and live:
            from distributed import wait as dask_wait

            with contextlib.suppress(Exception):  # a cancelled task ends the wait with an error
                dask_wait([task for task in live if task.status != "cancelled"])
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close()


@contextlib.contextmanager
def dask_executor(
    scheduler: str | Path,
    *,
    retries: int = DEFAULT_RETRIES,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` on the cluster of ``scheduler``, shut down on exit (pending
    tasks cancelled on an exception, Ctrl-C included).

    ``initializer(*initargs)`` runs once on each worker present now: a warm-up (imports), not
    a set-up the work relies on, since a worker that joins or restarts later does not run it.
    """
    executor = DaskExecutor(connect(scheduler), retries=retries, own_client=True)
    try:
        if initializer is not None:
            executor.client.run(initializer, *initargs)
        yield executor
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def check_scheduler(scheduler: str | Path | None, workers: int | None) -> None:
    """Refuse ``--workers`` with ``--scheduler`` (the cluster's workers do the work)."""
    if scheduler is not None and workers is not None:
        raise ConfigError("give --workers (a local pool) or --scheduler (a Dask cluster), not both")


@contextlib.contextmanager
def executor_pool(
    workers: int,
    *,
    scheduler: str | Path | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[tuple[Executor, int]]:
    """``(executor, workers)``: the local process pool of ``workers`` processes, or with
    ``scheduler`` a :class:`DaskExecutor` and the cluster's worker threads.

    Both cancel pending work and re-raise on an exception (Ctrl-C included) and shut down
    cleanly on success (:func:`histolib.core.parallel.process_pool`, :func:`dask_executor`).
    """
    if scheduler is None:
        from histolib.core.parallel import process_pool

        with process_pool(workers, initializer=initializer, initargs=initargs) as pool:
            yield pool, workers
        return
    with dask_executor(scheduler, initializer=initializer, initargs=initargs) as executor:
        yield executor, executor.workers


def start_local_cluster(
    workers: int,
    *,
    port: int = 0,
    scheduler_file: str | Path | None = None,
    silence_logs: int = 30,
) -> Any:
    """A ``distributed.LocalCluster`` on the loopback interface: ``workers`` processes of one
    thread each (each restarted by its nanny if it dies), the scheduler on ``127.0.0.1:port``
    (0: a free port) writing ``scheduler_file`` when given, the HTTP endpoints on loopback
    free ports, the workers' profiler off (:data:`LOCAL_CLUSTER_CONFIG`). Close it (or use it
    as a context manager) to stop it.

    Raises
    ------
    ClusterError
        dask is not installed or the cluster does not start (the port in use...).
    ConfigError
        ``workers`` below 1 or a port out of range.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    try:
        import dask
        from distributed import LocalCluster
    except ImportError:
        raise ClusterError(f"a Dask cluster needs dask.distributed: {INSTALL_HINT}") from None
    scheduler_kwargs: dict[str, Any] = {}
    if scheduler_file is not None:
        scheduler_kwargs["scheduler_file"] = str(scheduler_file)
    try:
        with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the workers take it along
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                scheduler_port=port,
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                scheduler_kwargs=scheduler_kwargs,
                silence_logs=silence_logs,
            )
    except (OSError, RuntimeError) as exc:
        cause = exc.__cause__ or exc
        raise ClusterError(f"the local Dask cluster did not start ({cause})") from None
