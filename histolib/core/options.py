"""Options of a command, declared once: a dataclass whose fields carry default, help and flag.

A command's options are the fields of a (usually frozen) dataclass. Each field states its
default, its help text, its command-line flag and whether it must stay the same when a run is
resumed, with :func:`option`::

    @dataclass(frozen=True)
    class TilingOptions:
        stain: Literal["he", "ihc"] = option("he", help="he or ihc.", cli="--stain", strict=True)
        mpp: float = option(0.5, help="Microns per tile pixel.", cli="--mpp", strict=True)
        max_tiles: int | None = option(None, help="At most N tiles.", cli="--max-tiles", ge=1)
        classes: tuple[str, ...] | None = option(None, help="Classes (repeatable).", cli="--class")

        def __post_init__(self) -> None:
            check_ranges(self)

The recurring ranges have shorthands: :func:`count_option` (at least 1),
:func:`non_negative_option` (at least 0), :func:`fraction_option` (``(0, 1]``),
:func:`seed_option` (``0 .. MAX_SEED``) and
:func:`histolib.slide.mpp.mpp_option` (a microns-per-pixel value).
A plain field (``x: int = 3``) is an option too, without help, flag, range or ``strict``.
A numeric field states its range with ``ge`` / ``gt`` (lower) and ``le`` / ``lt`` (upper
bound); the dataclass checks them in its ``__post_init__`` with :func:`check_ranges`, once,
whatever built it (a call, a file, the command line). Everything else is derived from the
declaration:

- :func:`option_specs`: one :class:`OptionSpec` per field (its kind read from the annotation);
- :func:`coerce_value` / :func:`build_options`: values from a config file (TOML, YAML), a
  ``--set key=value`` string or a Python call, converted to the field's type and checked
  (unknown keys, wrong kinds, values outside a ``Literal``); the error names the flag (or the
  key, for a value from a file) and the file;
- :func:`strict_fields` / :func:`strict_values`: what must not change on resume;
- :func:`options_dict`: the JSON-ready values (tuples as lists);
- :func:`document_options`: the class docstring's ``Attributes`` section;
- :func:`check_ranges`: the declared ranges (a one-line :class:`OptionRangeError` naming the
  flag, or the key and its file);
- ``histolib_cli.options.field_option``: the ``typer.Option`` of one field (flag, default,
  help, choices), written as a real parameter in the command's ``def``.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Path`` (an input or output
file), ``Literal[...]`` of strings (choices, matched case-insensitively), ``tuple[str, ...]``
(from a list, or a comma-separated string), and any of these ``| None`` (optional: ``None``,
``"none"``, ``"null"`` or ``""``).
``aliases`` map an input string to a value before conversion (``{"jpg": "jpeg"}``,
``{"otsu": None}``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError

#: The largest seed (numpy's ``default_rng`` and ``RandomState`` take ``0 .. 2**32 - 1``).
MAX_SEED = 2**32 - 1

_NONE_WORDS = ("none", "null", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def option(
    default: Any = MISSING,
    *,
    help: str = "",
    cli: str | None = None,
    strict: bool = False,
    aliases: Mapping[str, Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    hint: str = "",
) -> Any:
    """A dataclass field declaring one option.

    Parameters
    ----------
    default
        The default value (a tuple for ``tuple[str, ...]`` fields).
    help
        One-line help text (the CLI help and the generated documentation).
    cli
        The flag(s) as Typer takes them, space-separated, e.g. ``"--min-tissue"``,
        ``"--workers -j"`` or ``"--progress/--no-progress"``; None: not a command-line option.
    strict
        The value must be the same when a run is resumed.
    aliases
        Input strings (lower case) accepted for a value: ``{"jpg": "jpeg"}``.
    ge, gt, le, lt
        The range of a numeric field: at least ``ge`` / more than ``gt``, at most ``le`` /
        less than ``lt`` (None: unbounded on that side); checked by :func:`check_ranges`.
    hint
        Appended to a range error (e.g. which option raises a limit).
    """
    metadata = {
        "help": help,
        "cli": cli,
        "strict": strict,
        "aliases": dict(aliases or {}),
        "range": (ge, gt, le, lt),
        "hint": hint,
    }
    return dataclasses.field(default=default, metadata=metadata)


def count_option(default: Any = MISSING, **keywords: Any) -> Any:
    """An :func:`option` of at least 1 (a count, a width, a quality level); ``keywords`` are
    :func:`option`'s (``help``, ``cli``, ``strict``, ``le``...)."""
    return option(default, ge=1, **keywords)


def non_negative_option(default: Any = MISSING, **keywords: Any) -> Any:
    """An :func:`option` of at least 0 (a weight, an area, a margin); ``keywords`` are
    :func:`option`'s."""
    return option(default, ge=0, **keywords)


def fraction_option(default: Any = MISSING, **keywords: Any) -> Any:
    """An :func:`option` of a fraction in ``(0, 1]``; ``keywords`` are :func:`option`'s."""
    return option(default, gt=0, le=1, **keywords)


def seed_option(default: int = 0, *, help: str, cli: str = "--seed", strict: bool = False) -> Any:
    """An :func:`option` holding a random seed, in ``[0, MAX_SEED]``."""
    return option(default, help=help, cli=cli, strict=strict, ge=0, le=MAX_SEED)


def read_yaml_file(path: str | Path, *, what: str) -> Any:
    """The parsed content of a YAML file (None for an empty one).

    Raises
    ------
    ConfigError
        ``no such <what>`` when the file is missing, or ``not a valid YAML file (<reason>)``;
        either names the file.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such {what}", path=path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConfigError(f"not a valid YAML file ({reason})", path=path) from exc


@dataclass(frozen=True)
class OptionSpec:
    """What one option field declares (see :func:`option_specs`)."""

    name: str
    base: type  # bool, int, float, str or Path (the element type of a tuple field)
    optional: bool
    sequence: bool  # tuple[str, ...]
    choices: tuple[str, ...] | None
    default: Any
    help: str
    cli: str | None
    strict: bool
    aliases: dict[str, Any]
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    hint: str = ""

    @property
    def flag(self) -> str | None:
        """The option's main flag (``--min-tissue``), None when it has none."""
        return None if self.cli is None else self.cli.split()[0].split("/")[0]

    @property
    def required(self) -> bool:
        """Whether the field has no default."""
        return self.default is MISSING

    def label(self, source: str | None) -> str:
        """How an error names the option: its flag for a call or the command line, its key for
        a value from a file."""
        return self.flag if source is None and self.flag else self.name

    def describe_default(self) -> str:
        """The default as the help shows it."""
        if self.required:
            return "required"
        if self.default is None:
            return "none"
        if self.sequence:
            return ", ".join(self.default) or "none"
        return str(self.default).lower() if self.base is bool else str(self.default)

    def describe_range(self) -> str:
        """The range as an error states it (``in [8, 8192]``, ``>= 0``), "" when unbounded."""
        low: tuple[str, float, str] | None = None
        high: tuple[str, float, str] | None = None
        if self.gt is not None:
            low = ("(", self.gt, ">")
        elif self.ge is not None:
            low = ("[", self.ge, ">=")
        if self.lt is not None:
            high = (")", self.lt, "<")
        elif self.le is not None:
            high = ("]", self.le, "<=")
        if low and high:
            return f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        one = low or high
        return "" if one is None else f"{one[2]} {_number(one[1])}"

    def in_range(self, value: float) -> bool:
        """Whether ``value`` lies in the declared range (NaN never does)."""
        checks = (
            self.ge is None or value >= self.ge,
            self.gt is None or value > self.gt,
            self.le is None or value <= self.le,
            self.lt is None or value < self.lt,
        )
        return all(checks) and value == value


def _number(value: float) -> str:
    """A bound as a message shows it: ``4294967295``, ``0.5``, ``1e-06``."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _parse_type(hint: Any, name: str) -> tuple[type, bool, bool, tuple[str, ...] | None]:
    """``(base, optional, sequence, choices)`` of a field annotation."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            raise TypeError(f"option {name}: unsupported union {hint!r}")
        hint = members[0]
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = tuple(str(c) for c in typing.get_args(hint))
        return str, optional, False, choices
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis or args[0] is not str:
            raise TypeError(f"option {name}: only tuple[str, ...] is supported, not {hint!r}")
        return str, optional, True, None
    if hint in (bool, int, float, str, Path):
        return hint, optional, False, None
    raise TypeError(f"option {name}: unsupported type {hint!r}")


@functools.cache
def option_specs(cls: type) -> tuple[OptionSpec, ...]:
    """The :class:`OptionSpec` of every field of the dataclass ``cls``, in order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        base, optional, sequence, choices = _parse_type(hints[f.name], f.name)
        default = f.default
        if default is MISSING and f.default_factory is not MISSING:
            default = f.default_factory()
        meta = f.metadata
        ge, gt, le, lt = meta.get("range", (None, None, None, None))
        specs.append(
            OptionSpec(
                name=f.name,
                base=base,
                optional=optional,
                sequence=sequence,
                choices=choices,
                default=default,
                help=meta.get("help", ""),
                cli=meta.get("cli"),
                strict=meta.get("strict", False),
                aliases=dict(meta.get("aliases", {})),
                ge=ge,
                gt=gt,
                le=le,
                lt=lt,
                hint=meta.get("hint", ""),
            )
        )
    return tuple(specs)


def spec_map(cls: type) -> dict[str, OptionSpec]:
    """``{field name: OptionSpec}`` of ``cls``."""
    return {spec.name: spec for spec in option_specs(cls)}


def strict_fields(cls: type) -> tuple[str, ...]:
    """The fields that must not change when a run is resumed."""
    return tuple(spec.name for spec in option_specs(cls) if spec.strict)


def strict_values(options: Any) -> dict[str, Any]:
    """The JSON-ready values of the strict fields of an options instance."""
    names = strict_fields(type(options))
    return {k: v for k, v in options_dict(options).items() if k in names}


def options_dict(options: Any) -> dict[str, Any]:
    """Every field of an options instance, JSON-ready (tuples become lists, paths text)."""
    return {
        f.name: list(value) if isinstance(value, tuple) else _json_ready(value)
        for f in dataclasses.fields(options)
        for value in [getattr(options, f.name)]
    }


def _json_ready(value: Any) -> Any:
    """A path as text; any other value as it is."""
    return str(value) if isinstance(value, Path) else value


class OptionRangeError(ConfigError):
    """A value outside its field's declared range (``field`` names the field)."""

    def __init__(self, spec: OptionSpec, value: Any, *, source: str | None = None) -> None:
        self.field = spec.name
        self.value = value
        hint = f"; {spec.hint}" if spec.hint else ""
        shown = f"{value:.6g}" if isinstance(value, float) else repr(value)
        super().__init__(
            f"{spec.label(source)} must be {spec.describe_range()}, got {shown}{hint}", path=source
        )


def check_ranges(options: Any) -> None:
    """Check every numeric field of an options instance against its declared range (call it
    from ``__post_init__``); None passes.

    Raises
    ------
    ConfigError
        A field that is not a number, or an :class:`OptionRangeError` for one out of its range:
        one line naming the flag (the field name when it has none) and the range.
    """
    cls: type = options.__class__
    for spec in option_specs(cls):
        value = getattr(options, spec.name)
        if value is None or spec.sequence:
            continue
        if spec.choices is not None and value not in spec.choices:
            raise _fail(spec, None, f"must be {_listed(spec.choices)}, got {value!r}")
        if spec.base not in (int, float):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(spec, None, f"must be a number, not {value!r}")
        if spec.base is int and not isinstance(value, int):
            raise _fail(spec, None, f"must be a whole number, not {value!r}")
        if not spec.in_range(value):
            raise OptionRangeError(spec, value)


def _fail(spec: OptionSpec, source: str | None, message: str) -> ConfigError:
    return ConfigError(f"{spec.label(source)} {message}", path=source)


def _choice(spec: OptionSpec, text: str, source: str | None) -> str:
    assert spec.choices is not None
    for choice in spec.choices:
        if choice.lower() == text.lower():
            return choice
    raise _fail(spec, source, f"must be {_listed(spec.choices)}, got {text!r}")


def _listed(choices: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def _scalar(spec: OptionSpec, value: Any, source: str | None) -> Any:
    """``value`` as the field's base type (never None)."""
    base = spec.base
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise _fail(spec, source, f"must be true or false, not {value!r}")
    if base is str or base is Path:
        if not isinstance(value, (str, Path)):
            raise _fail(spec, source, f"must be text, not {value!r}")
        if base is Path:
            return Path(value)
        return str(value) if spec.choices is None else _choice(spec, str(value), source)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _fail(spec, source, f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise _fail(spec, source, f"must be a finite number, not {value!r}")
    if base is float:
        return number
    if number != int(number):
        raise _fail(spec, source, f"must be a whole number, not {value!r}")
    return int(number)


def _means_none(spec: OptionSpec, text: str) -> bool:
    """Whether ``text`` stands for None (``"none"`` is a value when it is one of the choices)."""
    word = text.strip().lower()
    return word in _NONE_WORDS and word not in [c.lower() for c in spec.choices or ()]


def coerce_value(spec: OptionSpec, value: Any, *, source: str | None = None) -> Any:
    """``value`` (from a call, a file or a ``key=value`` string) as the field's type.

    ``source`` is the file the value came from (named in errors), None for a call or the
    command line.

    Raises
    ------
    ConfigError
        A value of the wrong kind, not among the choices, or empty for a required field.
    """
    if isinstance(value, str) and value.strip().lower() in spec.aliases:
        value = spec.aliases[value.strip().lower()]
    if value is None or (isinstance(value, str) and _means_none(spec, value)):
        if spec.optional:
            return None
        if value is None or not spec.sequence:
            raise _fail(spec, source, "cannot be empty")
    if spec.sequence:
        if isinstance(value, str):
            items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise _fail(spec, source, f"must be a list of text, not {value!r}")
        result = tuple(_scalar(spec, item, source) for item in items)
        return None if not result and spec.optional else result
    return _scalar(spec, value, source)


def build_options(
    cls: type,
    *layers: Mapping[str, Any],
    sources: tuple[str | None, ...] | None = None,
    skip_none: bool = False,
    unknown: str = "unknown option",
) -> Any:
    """An instance of the options dataclass ``cls`` from dicts of values over its defaults.

    Parameters
    ----------
    layers
        ``{key: value}`` dicts, lowest precedence first; keys are field names (``-`` or ``_``).
    sources
        The file each layer came from, for error messages (None: a call or the command line).
    skip_none
        Treat a ``None`` value as "not given" (command-line options without a value).
    unknown
        How an error calls an unknown key (``"unknown option"``).

    Raises
    ------
    ConfigError
        For an unknown key or a value :func:`coerce_value` refuses.
    """
    specs = spec_map(cls)
    values: dict[str, Any] = {}
    origin: dict[str, str | None] = {}
    for i, layer in enumerate(layers):
        source = sources[i] if sources else None
        for key, value in layer.items():
            name = str(key).replace("-", "_")
            if name not in specs:
                raise ConfigError(f"{unknown} {key!r}", path=source)
            if value is None and skip_none:
                continue
            values[name] = coerce_value(specs[name], value, source=source)
            origin[name] = source
    try:
        return cls(**values)
    except OptionRangeError as exc:  # name the file the value came from
        source = origin.get(exc.field)
        if source is None:
            raise
        raise OptionRangeError(specs[exc.field], exc.value, source=source) from None


def document_options(cls: type) -> type:
    """Class decorator: append to the docstring of the options dataclass ``cls`` a numpy-style
    ``Attributes`` section listing each field with its flag, help and default."""
    lines = ["Attributes", "----------"]
    for spec in option_specs(cls):
        flag = f" (``{spec.flag}``)" if spec.flag else ""
        text = f"{spec.help} " if spec.help else ""
        bounds = f" Range: {spec.describe_range()}." if spec.describe_range() else ""
        lines += [f"{spec.name}{flag}", f"    {text}Default: {spec.describe_default()}.{bounds}"]
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n\n" + "\n".join(lines)
    return cls
