"""Shared CLI plumbing: error handling, the ``--debug`` flag, consoles."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import typer

_state: dict[str, Any] = {"debug": False}


def set_debug(value: bool) -> None:
    """Record the global ``--debug`` flag."""
    _state["debug"] = value


def err_console() -> Any:
    """A Rich console on stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Any:
    """A Rich console on stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def fail(message: str, *, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on one line to stderr and return the Exit to raise."""
    err_console().print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    err_console().print(f"[bold yellow]warning:[/] {message}")


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn histolib errors into a one-line message and a non-zero exit.

    ``HistolibError`` -> exit 1 with its message; ``KeyboardInterrupt`` -> exit 130 with a note
    that finished work is kept. With ``--debug`` the traceback is shown too.
    """
    from histolib.errors import HistolibError

    try:
        yield
    except HistolibError as exc:
        if _state["debug"]:
            import traceback

            traceback.print_exc()
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; finished work is kept and a re-run resumes", code=130) from None
    except OSError as exc:
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        raise fail(f"{where}{exc.strerror or exc}") from None


def is_tty() -> bool:
    """Whether stderr is a terminal (progress bars are drawn live only then)."""
    return sys.stderr.isatty()
