"""Tests of histolib.core.options and histolib_cli.options: one declaration, every use."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from typer.testing import CliRunner

from histolib.core.options import (
    OptionRangeError,
    build_options,
    check_ranges,
    coerce_value,
    document_options,
    option,
    options_dict,
    spec_map,
    strict_fields,
    strict_values,
)
from histolib.errors import ConfigError
from histolib.library.params import LibraryParams, resolve_params
from histolib.tiling.options import TilingOptions
from histolib_cli.options import field_option, given_values, options_from, parse_assignments


@document_options
@dataclass(frozen=True)
class Demo:
    """Options of a demo command."""

    count: int = option(3, help="How many.", cli="--count", strict=True)
    rate: float | None = option(None, help="Rate.", cli="--rate")
    kind: Literal["a", "b", "none"] = option("a", help="Kind.", cli="--kind", aliases={"x": "b"})
    names: tuple[str, ...] | None = option(None, help="Names (repeatable).", cli="--name")
    fast: bool = option(False, help="Go fast.", cli="--fast/--slow")
    label: str = "plain"
    share: float = option(0.5, help="Share.", cli="--share", gt=0, le=1)

    def __post_init__(self) -> None:
        check_ranges(self)


def test_specs_read_the_annotations() -> None:
    specs = spec_map(Demo)
    assert specs["count"].base is int and not specs["count"].optional
    assert specs["rate"].base is float and specs["rate"].optional
    assert specs["kind"].choices == ("a", "b", "none")
    assert specs["names"].sequence and specs["names"].optional
    assert specs["fast"].flag == "--fast"
    assert specs["label"].cli is None and specs["label"].help == ""
    assert strict_fields(Demo) == ("count",)
    assert "count (``--count``)\n    How many. Default: 3." in (Demo.__doc__ or "")


def test_coercion_from_text_and_files() -> None:
    specs = spec_map(Demo)
    assert coerce_value(specs["count"], "4") == 4
    assert coerce_value(specs["count"], 5.0) == 5
    assert coerce_value(specs["rate"], "null") is None
    assert coerce_value(specs["rate"], "0.25") == 0.25
    assert coerce_value(specs["kind"], "B") == "b"
    assert coerce_value(specs["kind"], "x") == "b"
    assert coerce_value(specs["kind"], "none") == "none"  # a choice, not None
    assert coerce_value(specs["names"], "p, q") == ("p", "q")
    assert coerce_value(specs["names"], ["p"]) == ("p",)
    assert coerce_value(specs["names"], []) is None
    assert coerce_value(specs["fast"], "yes") is True
    with pytest.raises(ConfigError, match="--count must be a whole number"):
        coerce_value(specs["count"], 2.5)
    with pytest.raises(ConfigError, match="--count must be a number, not True"):
        coerce_value(specs["count"], True)
    with pytest.raises(ConfigError, match=r"f\.yaml: count must be a number, not 'many'"):
        coerce_value(specs["count"], "many", source="f.yaml")
    with pytest.raises(ConfigError, match="--kind must be a, b or none, got 'c'"):
        coerce_value(specs["kind"], "c")
    with pytest.raises(ConfigError, match="--count cannot be empty"):
        coerce_value(specs["count"], None)
    with pytest.raises(ConfigError, match="--rate must be a finite number"):
        coerce_value(specs["rate"], "inf")
    with pytest.raises(ConfigError, match="--fast must be true or false"):
        coerce_value(specs["fast"], 1)


def test_build_options_layers_and_unknown_keys() -> None:
    demo = build_options(Demo, {"count": "7", "rate": 1}, {"count": 8, "rate": None})
    assert (demo.count, demo.rate) == (8, None)
    kept = build_options(Demo, {"rate": 2}, {"rate": None}, skip_none=True)
    assert kept.rate == 2.0
    with pytest.raises(ConfigError, match=r"c\.toml: unknown option 'colour'"):
        build_options(Demo, {"colour": 1}, sources=("c.toml",))
    demo = build_options(Demo, {"names": ["x", "y"], "count": 2})
    assert options_dict(demo)["names"] == ["x", "y"]
    assert strict_values(demo) == {"count": 2}


def test_ranges_are_checked_by_the_dataclass_once() -> None:
    assert spec_map(Demo)["share"].describe_range() == "in (0, 1]"
    assert Demo(share=1.0).share == 1.0
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(OptionRangeError, match=r"^--share must be in \(0, 1\], got"):
            Demo(share=bad)
    with pytest.raises(ConfigError, match="--kind must be a, b or none, got 'c'"):
        Demo(kind="c")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--count must be a number"):
        Demo(count="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^d\.yaml: share must be in \(0, 1\], got 2"):
        build_options(Demo, {"share": 2}, sources=("d.yaml",))
    assert "Range: in (0, 1]." in (Demo.__doc__ or "")


def test_tile_slides_takes_the_options_as_a_parameter() -> None:
    from histolib.tiling import tile_slides

    params = inspect.signature(tile_slides).parameters
    assert params["options"].annotation in ("TilingOptions | None", TilingOptions | None)
    assert params["options"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not set(params) & {"stain", "mpp", "size", "seed"}  # no hidden keywords
    assert params["workers"].default is None and params["progress"].default is True


def _demo_app(seen: dict[str, Any]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def main(
        word: str = typer.Argument(...),
        count: int = field_option(Demo, "count"),
        rate: float | None = field_option(Demo, "rate"),
        kind: str = field_option(Demo, "kind"),
        names: list[str] | None = field_option(Demo, "names"),
        fast: bool = field_option(Demo, "fast"),
        share: float = field_option(Demo, "share"),
    ) -> None:
        seen.update(word=word, demo=options_from(Demo, locals()))

    return app


def test_typer_reads_the_field_options() -> None:
    seen: dict[str, Any] = {}
    app, runner = _demo_app(seen), CliRunner()
    args = ["hi", "--count", "9", "--kind", "B", "--name", "u", "--fast"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    demo = seen["demo"]
    assert seen["word"] == "hi"
    assert (demo.count, demo.kind, demo.names, demo.fast, demo.rate) == (9, "b", ("u",), True, None)
    assert runner.invoke(app, ["hi", "--kind", "x"]).exit_code == 0 and seen["demo"].kind == "b"
    runner.invoke(app, ["hi"])
    assert seen["demo"] == Demo()
    bad = runner.invoke(app, ["hi", "--kind", "c"])
    assert bad.exit_code == 1 and "--kind must be a, b or none, got 'c'" in bad.output
    help_text = runner.invoke(app, ["--help"]).output
    assert "--count" in help_text and "How many." in help_text and "--label" not in help_text
    assert "[a|b|none]" in help_text


def test_not_given_options_only_override_when_given() -> None:
    app = typer.Typer()
    seen: dict[str, Any] = {}

    @app.command()
    def main(
        box_size: int | None = field_option(LibraryParams, "box_size", not_given=True),
        detector: str | None = field_option(LibraryParams, "detector", not_given=True),
    ) -> None:
        seen["values"] = given_values(LibraryParams, locals(), not_given=True)

    runner = CliRunner()
    assert runner.invoke(app, []).exit_code == 0 and seen["values"] == {}
    assert runner.invoke(app, ["--box-size", "64", "--detector", "SKIMAGE"]).exit_code == 0
    assert seen["values"] == {"box_size": 64, "detector": "skimage"}
    assert "(default: 48)" in runner.invoke(app, ["--help"]).output


def test_library_params_through_the_mechanism(tmp_path) -> None:
    assert resolve_params(overrides={"dab_threshold": "otsu"}).dab_threshold is None
    assert resolve_params(overrides={"detector": "SKIMAGE"}).detector == "skimage"
    with pytest.raises(ConfigError, match=r"^--detector must be fast or skimage"):
        resolve_params(overrides={"detector": "slow"})
    toml = tmp_path / "p.toml"
    toml.write_text('box_size = "wide"\n')
    with pytest.raises(ConfigError, match=r"p\.toml: box_size must be a number"):
        resolve_params(file=toml)


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", " b = x=y ", "a=2"]) == {"a": "2", "b": "x=y"}
    with pytest.raises(ConfigError, match="--set needs KEY=VALUE"):
        parse_assignments(["novalue"])


@document_options
@dataclass(frozen=True)
class WithPaths:
    """Options naming files."""

    source: Path = option(help="The input.")
    report: Path | None = option(None, help="Where to write.", cli="--report")


def test_path_fields_convert_text_and_serialise_as_text(tmp_path: Path) -> None:
    specs = spec_map(WithPaths)
    assert specs["report"].base is Path and specs["report"].optional
    assert specs["source"].required and specs["source"].describe_default() == "required"
    assert coerce_value(specs["report"], "out/r.json") == Path("out/r.json")
    assert coerce_value(specs["report"], "none") is None
    with pytest.raises(ConfigError, match="--report must be text"):
        coerce_value(specs["report"], 3)
    built = build_options(WithPaths, {"source": "a.svs", "report": str(tmp_path)})
    assert built == WithPaths(source=Path("a.svs"), report=tmp_path)
    assert options_dict(built) == {"source": "a.svs", "report": str(tmp_path)}
    assert "source\n    The input. Default: required." in (WithPaths.__doc__ or "")
