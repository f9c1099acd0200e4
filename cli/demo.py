"""``histolib demo``: the whole pipeline on synthetic data, with an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, out_console
from histolib_cli.options import seed_option


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(
            Path("histolib-demo"), "--out", "-o", help="Output folder (reused if it exists)."
        ),
        minutes: float = typer.Option(
            5.0, "--minutes", min=0.1, help="Time budget of the training stage, in minutes."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        seed: int = seed_option("Seed of the synthetic data and training."),
        slide_size: int = typer.Option(
            3072, "--slide-size", min=512, help="Side of the synthetic training slides, px."
        ),
    ) -> None:
        """Run the whole pipeline on synthetic slides and write report.html.

        Synthesises slides, tiles them, builds both cell libraries, exports them to QuPath,
        trains a small RoI CycleGAN, restains a held-out slide and evaluates it.
        """
        console = out_console()
        with cli_errors(), output_lock(out, command="demo"):
            from histolib_train.demo.pipeline import run_demo

            result = run_demo(
                out,
                minutes=minutes,
                device=device,
                seed=seed,
                slide_px=slide_size,
                heldout_px=max(512, slide_size * 2 // 3),
                log=console.print,
            )
        console.print(f"[bold green]demo finished[/]: open {result.report}")
