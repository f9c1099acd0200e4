"""``histolib view``: the H&E slide and its virtual IHC side by side in the browser."""

from __future__ import annotations

from pathlib import Path

import typer

from histolib.core.options import spec_map
from histolib.view.sources import ViewOptions
from histolib_cli.common import cli_errors, out_console, warn
from histolib_cli.options import field_option, given_values

V = spec_map(ViewOptions)  # the arguments' help, declared with the options


def register(app: typer.Typer) -> None:
    """Add the ``view`` command to ``app``."""

    @app.command("view")
    def view(
        slide: Path = typer.Argument(..., help=V["slide"].help),
        virtual: Path | None = typer.Argument(None, help=V["virtual"].help),
        annotations: Path | None = field_option(ViewOptions, "annotations"),
        tiles: Path | None = field_option(ViewOptions, "tiles"),
        library: Path | None = field_option(ViewOptions, "library"),
        evaluation: Path | None = field_option(ViewOptions, "evaluation"),
        slide_mpp: float | None = field_option(ViewOptions, "slide_mpp"),
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
        cache_mb: int = field_option(ViewOptions, "cache_mb"),
    ) -> None:
        """Show SLIDE and VIRTUAL side by side, panned and zoomed together, with overlays.

        Serves the page on this machine (http://127.0.0.1:8765/ by default) until Ctrl-C, or
        with --export writes it as a folder that opens from the file system with no server.
        """
        import histolib.view as hv

        console = out_console()
        with cli_errors():
            flags = given_values(ViewOptions, locals())
            options = ViewOptions(slide=slide, virtual=virtual, **flags)
        if export is not None:
            with cli_errors():
                page = hv.export(export, options)
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
            hv.serve(options, host=host, port=port, open_browser=not no_browser, ready=ready)
