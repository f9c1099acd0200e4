"""Typer options written from an options dataclass, and the options several commands share.

A command lists every flag as a real parameter of its ``def``; the ``typer.Option`` of a flag
that an options dataclass (:mod:`histolib.core.options`) declares comes from the field, so its
flag, default, help and choices are written once::

    @app.command("tile")
    def tile_command(
        slides: list[Path] = typer.Argument(...),
        stain: str = field_option(TilingOptions, "stain"),
        size: int = field_option(TilingOptions, "size"),
        ...
    ) -> None:
        options = options_from(TilingOptions, locals())  # ranges checked by the dataclass
        tile_slides(slides, options=options)

Typer converts each value once (a ``Literal`` field's parser takes its choices in any case,
and its aliases); the dataclass's ``__post_init__`` checks the ranges, inside the command's
``cli_errors()``, so a bad value is one line. With ``not_given=True`` (options layered under
a preset or a file) the options default to None and :func:`given_values` keeps only those
given.

The factories below (:func:`out_option`, :func:`workers_option`,
:func:`allow_many_workers_option`, :func:`seed_option`, :func:`mpp_option`,
:func:`slide_mpp_option`, :func:`overwrite_option`, :func:`progress_option`,
:func:`scheduler_option`) are the options many commands have, with
one wording and, where a value can be out of bounds, one check (:func:`in_range`);
:func:`parse_assignments` reads repeated ``--set KEY=VALUE`` options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import typer

from histolib.core.options import OptionSpec, coerce_value, option_specs, spec_map

T = TypeVar("T")


def field_option(cls: type, name: str, *, not_given: bool = False, help: str | None = None) -> Any:
    """The ``typer.Option`` of field ``name`` of the options dataclass ``cls``.

    Parameters
    ----------
    cls, name
        The options dataclass and the field (it must declare a ``cli`` flag).
    not_given
        Default None, meaning "not given" (the option overrides a preset or a file only when
        given); the help names the real default.
    help
        Help text instead of the field's (same option, a command-specific wording).
    """
    spec = spec_map(cls)[name]
    if spec.cli is None:
        raise TypeError(f"{cls.__name__}.{name} has no command-line flag")
    help_text = spec.help if help is None else help
    if spec.describe_range():
        help_text = f"{help_text} Range: {spec.describe_range()}.".strip()
    if not_given:
        default: Any = None
        help_text = f"{help_text} (default: {spec.describe_default()})".strip()
    else:
        default = ... if spec.required else spec.default
        if spec.sequence and default is not None:
            default = list(default)
    extra: dict[str, Any] = {}
    if spec.choices:  # one conversion, by Typer: case-insensitive, aliases accepted
        extra = {"parser": _choice_parser(spec), "metavar": "[" + "|".join(spec.choices) + "]"}
    return typer.Option(
        default, *spec.cli.split(" "), help=help_text, show_default=not not_given, **extra
    )


def _choice_parser(spec: OptionSpec) -> Callable[[str], str | None]:
    """Typer's parser of a ``Literal`` field: the choice (any case, or an alias), else one
    line naming the flag and the choices, exit 1 (as every bad value)."""

    def parse(text: str) -> str | None:
        from histolib.errors import ConfigError
        from histolib_cli.common import fail

        try:
            return coerce_value(spec, text)
        except ConfigError as exc:
            raise fail(str(exc)) from None

    return parse


def given_values(
    cls: type, params: Mapping[str, Any], *, not_given: bool = False
) -> dict[str, Any]:
    """``{field: value}`` of the fields of ``cls`` with a ``cli`` flag, from a command's
    parameters (``locals()``): lists become tuples; with ``not_given``, the options left at
    None are left out."""
    values: dict[str, Any] = {}
    for spec in option_specs(cls):
        if spec.cli is None or spec.name not in params:
            continue
        value = params[spec.name]
        if value is None and not_given:
            continue
        if isinstance(value, list):
            value = tuple(value) or (None if spec.optional else ())
        values[spec.name] = value
    return values


def options_from(cls: type[T], params: Mapping[str, Any]) -> T:
    """An instance of the options dataclass ``cls`` from a command's parameters (``locals()``);
    its ``__post_init__`` checks the ranges (ConfigError naming the flag)."""
    return cls(**given_values(cls, params))


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
    """``--workers``: processes of the command's pool (None: ``default_workers()``), at least
    1 and at most :func:`~histolib.core.parallel.max_workers` unless the command is given
    ``--allow-many-workers`` (:func:`allow_many_workers_option`, which the command lists
    too); a value outside is a one-line error before the command runs."""
    decls = ("--workers", "-j") if short else ("--workers",)
    return typer.Option(None, *decls, help=f"{help} {WORKERS_LIMIT_HELP}", callback=_check_workers)


WORKERS_LIMIT_HELP = "At most 4 x the CPUs (at least 64) without --allow-many-workers."


def allow_many_workers_option() -> Any:
    """``--allow-many-workers``: accept ``--workers`` above the limit, knowingly (read before
    ``--workers``, whatever their order)."""
    return typer.Option(
        False,
        "--allow-many-workers",
        help="Accept --workers above 4 x the CPUs (at least 64).",
        is_eager=True,
        callback=_note_allow_many,
    )


def _note_allow_many(ctx: typer.Context, value: bool) -> bool:
    ctx.meta["allow_many_workers"] = bool(value)
    return value


def _check_workers(ctx: typer.Context, value: int | None) -> int | None:
    from histolib.core.parallel import check_workers
    from histolib.errors import ConfigError
    from histolib_cli.common import fail

    if ctx.resilient_parsing:
        return value
    try:
        return check_workers(value, allow_many=ctx.meta.get("allow_many_workers", False))
    except ConfigError as exc:
        raise fail(str(exc)) from None


def seed_option(help: str, *, default: int | None = 0) -> Any:
    """``--seed``: the seed of the command's random draws, in ``[0, MAX_SEED]`` (numpy's
    range; a value outside is a one-line error before the command runs)."""
    from histolib.core.options import MAX_SEED

    return typer.Option(default, "--seed", help=help, callback=in_range("--seed", 0, MAX_SEED))


def in_range(flag: str, low: float, high: float) -> Callable[[Any], Any]:
    """A Typer callback refusing a value outside ``[low, high]`` (None passes) with one line
    naming ``flag`` and the range, exit 1, before the command runs."""

    def check(value: Any) -> Any:
        from histolib_cli.common import fail

        if value is not None and not low <= value <= high:
            raise fail(f"{flag} must be in [{low}, {high}], got {value}")
        return value

    return check


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
