"""Rich progress bars and a process pool that reports as work completes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def make_progress(*, transient: bool = False, disable: bool = False) -> Any:
    """A Rich ``Progress`` with a bar, counts, rate and time left, printed to stderr.

    A ``transient`` bar is not drawn at all when stderr is not a terminal: Rich would leave a
    blank line there, in front of the command's one-line error or summary.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=disable or (transient and not console.is_terminal),
    )


def imap_processes(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    max_pending: int | None = None,
    pool: Executor | None = None,
) -> Iterator[tuple[T, R | BaseException]]:
    """Apply ``fn`` to ``items`` in ``workers`` processes, yielding ``(item, result)`` as done.

    With ``workers <= 1`` and no ``pool`` (or an inline one) runs in this process (no
    pickling, easy to profile); a one-worker Dask cluster is a pool. An exception raised by
    ``fn`` is yielded in place of the result, so one bad item does not stop the rest.
    At most ``max_pending`` (default ``4 * workers``) items are in flight, so memory stays flat.
    The pool is ``pool`` when given (its owner shuts it down), else one from
    :func:`histolib.core.parallel.start_pool`, shut down here; ``KeyboardInterrupt`` cancels
    what has not started.
    """
    from histolib.core.parallel import InlineExecutor

    if workers <= 1 and (pool is None or isinstance(pool, InlineExecutor)):
        for item in items:
            try:
                yield item, fn(item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                yield item, exc
        return
    limit = max_pending or 4 * workers
    iterator = iter(items)
    pending: dict[Future[R], T] = {}
    own = pool is None
    if pool is None:
        from histolib.core.parallel import start_pool

        pool = start_pool(workers)
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                exc = fut.exception()
                yield item, (exc if exc is not None else fut.result())
    except BaseException:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if own:
        pool.shutdown(wait=True)
