"""Typer options derived from an options dataclass, and the options several commands share.

:func:`command_options` gives a command one ``typer.Option`` per field of an options dataclass
(:mod:`histolib.core.options`) that declares a ``cli`` flag: the flag, default and help are
the field's, written once. The command function declares a ``values: dict`` parameter instead
of the fields; it receives ``{field name: value}`` (converted and checked when the options are
built, inside the command's ``cli_errors()``, so a bad value is a one-line error)::

    @app.command("tile")
    @command_options(TilingOptions)
    def tile(slides: list[Path] = typer.Argument(...), *, values: dict[str, Any]) -> None:
        tile_slides(slides, **values)

Typer reads the generated ``__signature__`` of the wrapper (``inspect.signature`` honours it).

The factories below (:func:`out_option`, :func:`workers_option`, :func:`seed_option`,
:func:`mpp_option`, :func:`slide_mpp_option`, :func:`overwrite_option`,
:func:`progress_option`, :func:`scheduler_option`) are the options many commands have, with
one wording;
:func:`parse_assignments` reads repeated ``--set KEY=VALUE`` options.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from histolib.core.options import OptionSpec, option_specs


def _annotation(spec: OptionSpec, *, optional: bool) -> Any:
    base: Any = list[str] if spec.sequence else spec.base
    return base | None if optional or spec.optional or spec.sequence else base


def _parameter(spec: OptionSpec, *, not_given: bool) -> inspect.Parameter:
    """The Typer parameter of one option field."""
    assert spec.cli is not None
    help_text = spec.help
    if not_given:
        default: Any = None
        help_text = f"{help_text} (default: {spec.describe_default()})".strip()
    else:
        default = ... if spec.required else spec.default
        if spec.sequence and default is not None:
            default = list(default)
    info = typer.Option(
        default, *spec.cli.split(" "), help=help_text, show_default=not not_given
    )
    return inspect.Parameter(
        spec.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=info,
        annotation=_annotation(spec, optional=not_given),
    )


def command_options(
    cls: type, *, param: str = "values", not_given: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command taking ``values: dict`` with the options of dataclass ``cls``.

    Parameters
    ----------
    cls
        An options dataclass (:mod:`histolib.core.options`); its fields with a ``cli`` flag
        become options of the command, in field order, after the command's own parameters.
    param
        The parameter that receives ``{field name: value}``.
    not_given
        The options default to None, meaning "not given" (they override a preset or a file
        only when given, and ``values`` holds only those); the help names the real default.
    """
    specs = [spec for spec in option_specs(cls) if spec.cli is not None]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != param]
        generated = [_parameter(spec, not_given=not_given) for spec in specs]
        names = [spec.name for spec in specs]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            if not_given:
                values = {k: v for k, v in values.items() if v is not None}
            return func(*args, **kwargs, **{param: values})

        wrapper.__signature__ = signature.replace(parameters=own + generated)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            p.name: p.annotation for p in own + generated if p.annotation is not p.empty
        }
        return wrapper

    return decorate


def parse_assignments(items: list[str], *, flag: str = "--set") -> dict[str, str]:
    """``{key: value}`` from repeated ``KEY=VALUE`` options (a later key wins); the values stay
    text, for :func:`histolib.core.options.build_options` to convert.

    Raises
    ------
    ConfigError
        An item without ``=`` or without a key.
    """
    from histolib.errors import ConfigError

    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} needs KEY=VALUE, not {item!r}")
        values[key.strip()] = value.strip()
    return values


def out_option(help: str, *, short: bool = True, default: Any = ...) -> Any:
    """``--out`` (and ``-o``): where the command writes; required unless ``default`` given."""
    decls = ("--out", "-o") if short else ("--out",)
    return typer.Option(default, *decls, help=help)


def workers_option(
    help: str = "Processes (default: the CPU cores, at most 8; 1 = in this process).",
    *,
    short: bool = False,
) -> Any:
    """``--workers``: processes of the command's pool (None: ``default_workers()``)."""
    decls = ("--workers", "-j") if short else ("--workers",)
    return typer.Option(None, *decls, help=help)


def seed_option(help: str, *, default: int | None = 0) -> Any:
    """``--seed``: the seed of the command's random draws."""
    return typer.Option(default, "--seed", help=help)


def mpp_option(help: str, *, default: float | None = 0.5) -> Any:
    """``--mpp``: microns per pixel."""
    return typer.Option(default, "--mpp", help=help)


def slide_mpp_option(
    help: str = "Level-0 microns per pixel of the slides (overrides their metadata).",
) -> Any:
    """``--slide-mpp``: the slides' level-0 mpp, overriding (or supplying) their metadata."""
    return typer.Option(None, "--slide-mpp", help=help)


def overwrite_option(
    help: str = "Replace outputs that exist instead of keeping them.",
    *,
    flag: str = "--overwrite",
) -> Any:
    """``--overwrite`` (or another flag, e.g. ``--force``): redo work whose output exists."""
    return typer.Option(False, flag, help=help)


def progress_option() -> Any:
    """``--progress/--no-progress``: a progress bar on stderr (drawn on a terminal only)."""
    return typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr.")



def scheduler_option(
    help: str = "Run on a Dask cluster instead of a local pool: its scheduler's address "
    "(tcp://HOST:PORT) or scheduler file. Workers must see the inputs and outputs at the same "
    "paths (docs/cluster.md).",
) -> Any:
    """``--scheduler``: the Dask scheduler to run the command's work on (None: a local pool)."""
    return typer.Option(None, "--scheduler", metavar="ADDRESS_OR_FILE", help=help)
