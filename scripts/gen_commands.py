"""Write docs/commands.md, the command reference, from the ``histolib`` Typer app.

``python scripts/gen_commands.py`` rewrites the page; ``--check`` exits 1 when the page differs
from what the app would give (``tests/unit/test_docs.py`` runs it, so a flag added, renamed or
re-documented without regenerating the page fails the tests).

Every command and sub-command, in the app's order: its usage line, its help text and a table of
its arguments and options (flags, type, default, help), taken from the Click parameters Typer
builds, the same ones ``histolib COMMAND --help`` prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "commands.md"

HEADER = """# Command reference

Generated from the `histolib` command line by `python scripts/gen_commands.py`; do not edit by
hand (a test fails when this page and `--help` disagree). What each command does, beyond its
options, is in the [guide](guide.md).
"""


def _cell(text: str) -> str:
    """``text`` on one line, safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _context(command: Any, name: str, parent: Any | None = None) -> Any:
    """A Click context of ``command`` (Typer's vendored Click or Click itself)."""
    return command.context_class(command, info_name=name, parent=parent)


def _row(param: Any, ctx: Any) -> str | None:
    """One table row: the parameter's names and metavar, and its help with its default and
    choices, as ``--help`` prints them (None for a parameter ``--help`` does not show)."""
    record = param.get_help_record(ctx)
    if record is None:
        if param.param_type_name != "argument":
            return None
        record = (param.make_metavar(ctx), getattr(param, "help", None) or "")
    names, help_text = record
    return f"| `{_cell(names)}` | {_cell(help_text)} |"


def _commands(group: Any, ctx: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under ``group``, depth first, in the app's order."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*path, name), command
        if hasattr(command, "list_commands"):
            yield from _commands(command, _context(command, name, ctx), (*path, name))


def _table(command: Any, ctx: Any, title: str) -> list[str]:
    rows = [_row(p, ctx) for p in command.params if p.name != "help"]
    rows = [row for row in rows if row is not None]
    if not rows:
        return []
    return [f"| {title} | help |", "|---|---|", *rows, ""]


def _section(path: tuple[str, ...], command: Any, ctx: Any) -> list[str]:
    sub = _context(command, path[-1], ctx)
    usage = " ".join(("histolib", *path, *command.collect_usage_pieces(sub)))
    lines = [f"## `{' '.join(('histolib', *path))}`", "", "```", usage, "```", ""]
    if command.help:
        lines += [command.help.strip().replace("\b\n", ""), ""]
    return lines + _table(command, sub, "argument / option")


def render() -> str:
    """The page, as the app describes itself now."""
    import typer

    from histolib_cli.main import app

    root = typer.main.get_command(app)
    ctx = _context(root, "histolib")
    lines = [HEADER, "## `histolib`", "", (root.help or "").strip(), ""]
    lines += _table(root, ctx, "global option")
    for path, command in _commands(root, ctx, ()):
        lines += _section(path, command, ctx)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/gen_commands.py")
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
