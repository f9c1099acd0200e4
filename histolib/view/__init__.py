"""``histolib view``: an H&E slide and its virtual IHC side by side in the browser.

Two deep-zoom viewers (OpenSeadragon, vendored under ``static/`` with its licence) pan and zoom
in lock-step; the pipeline's products are overlays that toggle: expert contours, tiles by
label, cell boxes by class, the evaluation's per-tile DICE as a heat map. A scale bar follows
the slide's mpp; the pointer's position is shown in level-0 pixels.

- :func:`serve`: a local server (127.0.0.1 by default) until stopped;
- :func:`export`: the same page as a static folder, openable with no server.

Modules: :mod:`~histolib.view.sources` (the inputs, opened), :mod:`~histolib.view.overlays`
(GeoJSON layers), :mod:`~histolib.view.deepzoom` (tiles and their cache),
:mod:`~histolib.view.page` (the page's files), :mod:`~histolib.view.server` (the server and its
security model), :mod:`~histolib.view.folder` (the static export).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from histolib.view.sources import ViewOptions

__all__ = ["ViewOptions", "export", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve(
    options: ViewOptions,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the view of ``options.slide`` (and ``options.virtual``) until interrupted (Ctrl-C).

    Parameters
    ----------
    options
        The slides and overlays (:class:`ViewOptions`, e.g. ``ViewOptions(slide=he,
        virtual=ihc, annotations=contours)``).
    host
        Address to bind (127.0.0.1: this machine only; anything else is reachable by others).
    port
        TCP port (0: any free port).
    open_browser
        Open the page in the default browser once serving.
    ready
        Called with the page's URL once serving (e.g. to print it).
    stop
        Serve until this event is set (default: until interrupted).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after the server has stopped and the slides are closed.
    """
    from histolib.view.deepzoom import TileCache
    from histolib.view.page import page_files
    from histolib.view.server import start_server
    from histolib.view.sources import open_scene

    cache = TileCache(options.cache_mb * 1024 * 1024)
    with open_scene(options, cache=cache) as scene:
        try:
            server, thread = start_server(
                page_files(scene.document()), scene.slides, host=host, port=port
            )
        except OSError as exc:
            from histolib.errors import ConfigError

            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        try:
            if ready is not None:
                ready(server.url)
            if open_browser:
                import webbrowser

                webbrowser.open(server.url)
            (stop or threading.Event()).wait()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def export(out: str | Path, options: ViewOptions) -> Path:
    """Write the view of ``options.slide`` (and ``options.virtual``) as a static folder ``out``.

    Parameters
    ----------
    out
        The folder (created; a previous export there is replaced, any other non-empty folder
        refused).
    options
        The slides and overlays (:class:`ViewOptions`).

    Returns
    -------
    Path
        ``out/index.html``.
    """
    from histolib.view.folder import export_scene
    from histolib.view.sources import open_scene

    with open_scene(options) as scene:
        return export_scene(scene, out)
