"""Entry point of the ``histolib`` command."""

from __future__ import annotations

import importlib

import typer

from histolib_cli.common import set_debug

app = typer.Typer(
    name="histolib",
    help=(
        "Whole-slide tiling, cell libraries, QuPath interchange and region-guided CycleGANs "
        "for virtual IHC. Coordinates are (x, y) in level-0 slide pixels everywhere."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Each module defines ``register(app)``; they import nothing heavy at load time.
COMMAND_MODULES = (
    "synth",
    "tile",
    "split",
    "info",
    "library",
    "qupath",
    "train",
    "transfer",
    "evaluate",
    "experiment",
    "demo",
    "cluster",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    set_debug(debug)
    if version:
        from histolib import __version__

        typer.echo(__version__)
        raise typer.Exit()


for _name in COMMAND_MODULES:
    importlib.import_module(f"histolib_cli.{_name}").register(app)


def main() -> None:
    """Run the ``histolib`` command line."""
    app()


if __name__ == "__main__":
    main()
