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


def set_safety_limits(**values: Any) -> None:
    """Apply the global limit options (``--max-image-pixels``...; None: not given) for this
    process and its workers; a bad value is a one-line error."""
    from histolib.core.limits import current, set_limits
    from histolib.errors import HistolibError

    try:
        set_limits(**values)
        current()  # a bad HISTOLIB_MAX_* or HISTOLIB_ANY_MPP value fails here, once
    except HistolibError as exc:
        raise fail(str(exc)) from None


def restore_safety_limits() -> Any:
    """A function that puts the limits back as they are now (the CLI runs in-process in
    tests: one command's options must not outlive it)."""
    import os

    from histolib.core.limits import LIMITS

    saved = {spec.env: os.environ.get(spec.env) for spec in LIMITS.values()}

    def restore() -> None:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value

    return restore


def err_console() -> Any:
    """A Rich console on stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Any:
    """A Rich console on stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def one_line(message: str) -> str:
    """``message`` on one line, as Rich markup text: control characters (a newline in a slide's
    file name) shown escaped (``\\n``), square brackets not taken for markup."""
    from rich.markup import escape

    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))
    return escape(text)


def fail(message: str, *, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on one line to stderr and return the Exit to raise."""
    err_console().print(f"[bold red]error:[/] {one_line(message)}", markup=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    err_console().print(f"[bold yellow]warning:[/] {one_line(message)}", markup=True)


@contextlib.contextmanager
def cli_errors(*, interrupted: str | None = None) -> Iterator[None]:
    """Turn histolib errors into a one-line message and a non-zero exit.

    ``HistolibError`` -> exit 1 with its message; ``KeyboardInterrupt`` -> exit 130 with a note
    that finished work is kept (or ``interrupted``, for a command that cannot resume); a worker
    process killed by the system (``BrokenProcessPool``) -> exit 1 with what to do. With
    ``--debug`` the traceback is shown too.
    """
    from histolib.core.parallel import broken_pool_message
    from histolib.errors import HistolibError

    try:
        yield
    except HistolibError as exc:
        if _state["debug"]:
            import traceback

            traceback.print_exc()
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        message = interrupted or "interrupted; finished work is kept and a re-run resumes"
        raise fail(message, code=130) from None
    except OSError as exc:
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        raise fail(f"{where}{exc.strerror or exc}") from None
    except RuntimeError as exc:  # BrokenProcessPool is a RuntimeError
        broken = broken_pool_message(exc)
        if broken is None or _state["debug"]:
            raise
        raise fail(broken) from None


def is_tty() -> bool:
    """Whether stderr is a terminal (progress bars are drawn live only then)."""
    return sys.stderr.isatty()
