"""``python -m histolib_train train ...``: ``histolib train`` as a module, for ``torchrun``.

``torchrun --nproc_per_node N -m histolib_train train --he ... --out RUN`` starts N processes
that train one DistributedDataParallel run (:mod:`histolib_train.training.distributed`); the
options are those of ``histolib train`` (``python -m histolib_train train --help``).
"""

from __future__ import annotations

import typer


def make_app() -> typer.Typer:
    """The command line of ``python -m histolib_train``: the ``train`` command of ``histolib``
    and the global ``--debug`` flag."""
    from histolib_cli import train as train_cli
    from histolib_cli.common import set_debug

    app = typer.Typer(
        name="histolib_train",
        help="Train the region-guided CycleGAN (the `train` command of `histolib`); start it "
        "with torchrun for several GPUs.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    ) -> None:
        set_debug(debug)

    train_cli.register(app)
    return app


def main() -> None:
    """Run ``python -m histolib_train``."""
    make_app()(prog_name="python -m histolib_train")


if __name__ == "__main__":
    main()
