"""``histolib cluster local``: a Dask cluster on this machine, to try ``--scheduler``."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import typer

from histolib_cli.common import cli_errors
from histolib_cli.options import allow_many_workers_option, workers_option

cluster_app = typer.Typer(
    help="Dask clusters for the --scheduler option of tile, build-library and transfer "
    "(docs/cluster.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``histolib cluster`` to ``app``."""
    app.add_typer(cluster_app, name="cluster")


def default_scheduler_file() -> Path:
    """``histolib-dask-<pid>.json`` in the temporary folder."""
    return Path(tempfile.gettempdir()) / f"histolib-dask-{os.getpid()}.json"


@cluster_app.command("local")
def local_command(
    workers: int | None = workers_option(
        "Worker processes, one thread each (default: the CPU cores, at most 8)."
    ),
    allow_many_workers: bool = allow_many_workers_option(),
    port: int = typer.Option(0, "--port", help="Scheduler port on 127.0.0.1 (0: a free one)."),
    scheduler_file: Path | None = typer.Option(
        None,
        "--scheduler-file",
        help="Where to write the scheduler file (default: `histolib-dask-<pid>.json` in "
        "the temporary folder); removed on exit.",
    ),
) -> None:
    """Start a Dask cluster on this machine (loopback only) and run until Ctrl-C.

    Prints the scheduler's address and its scheduler file; give either to --scheduler of
    `histolib tile`, `build-library` or `transfer` (another terminal). Each worker is a
    process with one thread; a worker that dies is restarted. Exit code 130 after Ctrl-C,
    143 after SIGTERM (the shell's convention: 128 + the signal).
    """
    with cli_errors():
        from histolib.core.dask_cluster import start_local_cluster
        from histolib.core.parallel import default_workers

        n = default_workers() if workers is None else workers
        path = (scheduler_file or default_scheduler_file()).absolute()
        stop = threading.Event()
        received: list[int] = []
        previous = _on_stop_signals(stop, received)
        try:
            with start_local_cluster(n, port=port, scheduler_file=path) as cluster:
                _announce(cluster.scheduler_address, path, n)
                while not stop.wait(0.5):
                    pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        typer.echo("stopped the Dask cluster")
    if received:
        raise typer.Exit(128 + received[0])


def _on_stop_signals(stop: threading.Event, received: list[int]) -> dict[int, Any]:
    """Make Ctrl-C and SIGTERM set ``stop`` (recording the signal in ``received``); returns
    the handlers they had."""

    def handler(sig: int, _frame: Any) -> None:
        received.append(sig)
        stop.set()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _announce(address: str, scheduler_file: Path, workers: int) -> None:
    typer.echo(f"Dask cluster: {workers} worker process(es), one thread each, on 127.0.0.1")
    typer.echo(f"scheduler address: {address}")
    typer.echo(f"scheduler file: {scheduler_file}")
    typer.echo(f"try: histolib tile SLIDES --out OUT --scheduler {address}")
    typer.echo("Ctrl-C stops it")
    sys.stdout.flush()
