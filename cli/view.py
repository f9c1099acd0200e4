"""``histolib view``: the H&E slide and its virtual IHC side by side in the browser."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib_cli.common import cli_errors, out_console, warn


def register(app: typer.Typer) -> None:
    """Add the ``view`` command to ``app``."""

    @app.command("view")
    def view(
        slide: Path = typer.Argument(..., help="The H&E slide (any format histolib reads)."),
        virtual: Path | None = typer.Argument(
            None, help="Its virtual IHC slide (histolib transfer's TIFF), shown in lock-step."
        ),
        annotations: Path | None = typer.Option(
            None, "--annotations", help="Expert contours (QuPath GeoJSON, ASAP or ImageScope XML)."
        ),
        tiles: Path | None = typer.Option(
            None, "--tiles", help="A tile manifest: tiles coloured by label."
        ),
        library: Path | None = typer.Option(
            None, "--library", help="A cell library: cell boxes by class (cancer / normal)."
        ),
        evaluation: Path | None = typer.Option(
            None,
            "--evaluation",
            help="An evaluation folder (tiles.csv): per-tile DICE as a heat map (needs --tiles).",
        ),
        slide_mpp: float | None = typer.Option(
            None,
            "--slide-mpp",
            help="Level-0 microns per pixel of both slides (for the scale bar).",
        ),
        export: Path | None = typer.Option(
            None, "--export", help="Write the page as a static folder here instead of serving it."
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on (anything but loopback is public)."
        ),
        port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free)."),
        no_browser: bool = typer.Option(
            False, "--no-browser", help="Do not open the page in the default browser."
        ),
        cache_mb: int = typer.Option(
            256, "--cache-mb", min=0, help="Memory bound of the served tile cache, MiB."
        ),
    ) -> None:
        """Show SLIDE and VIRTUAL side by side, panned and zoomed together, with overlays.

        Serves the page on this machine (http://127.0.0.1:8765/ by default) until Ctrl-C, or
        with --export writes it as a folder that opens from the file system with no server.
        """
        import histolib.view as hv

        console = out_console()
        options = {
            "annotations": annotations,
            "tiles": tiles,
            "library": library,
            "evaluation": evaluation,
            "slide_mpp": slide_mpp,
            "cache_mb": cache_mb,
        }
        if export is not None:
            with cli_errors():
                page = hv.export(export, slide, virtual, **options)
            console.print(f"[bold green]view written[/]: open {page}")
            return
        from histolib.view.server import is_loopback

        if not is_loopback(host):
            warn(
                f"listening on {host}: anyone who can reach this machine can see these slides "
                "(the server has no login); use the default 127.0.0.1 unless you mean it"
            )

        def ready(url: str) -> None:
            console.print(f"[bold green]serving[/] {url}  (Ctrl-C stops)")

        with cli_errors(interrupted="stopped"):
            hv.serve(
                slide,
                virtual,
                host=host,
                port=port,
                open_browser=not no_browser,
                ready=ready,
                **options,
            )
