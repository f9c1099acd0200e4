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
from typing import Any

from histolib.view.sources import ViewOptions, view_options

__all__ = ["ViewOptions", "export", "serve", "view_options"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve(
    slide: str | Path,
    virtual: str | Path | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> None:
    """Serve the view of ``slide`` (and ``virtual``) until interrupted (Ctrl-C).

    Parameters
    ----------
    slide, virtual
        The H&E slide and its virtual IHC slide (optional).
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
    **options
        The other fields of :class:`ViewOptions` (``annotations``, ``tiles``, ``library``,
        ``evaluation``, ``slide_mpp``, ``cache_mb``, ``title``).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after the server has stopped and the slides are closed.
    """
    from histolib.view.deepzoom import TileCache
    from histolib.view.page import page_files
    from histolib.view.server import start_server
    from histolib.view.sources import open_scene

    opts = view_options(slide, virtual, **options)
    cache = TileCache(opts.cache_mb * 1024 * 1024)
    with open_scene(opts, cache=cache) as scene:
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


def export(
    out: str | Path, slide: str | Path, virtual: str | Path | None = None, **options: Any
) -> Path:
    """Write the view of ``slide`` (and ``virtual``) as a static folder ``out``.

    Parameters
    ----------
    out
        The folder (created; a previous export there is replaced, any other non-empty folder
        refused).
    slide, virtual
        The H&E slide and its virtual IHC slide (optional).
    **options
        The other fields of :class:`ViewOptions`.

    Returns
    -------
    Path
        ``out/index.html``.
    """
    from histolib.view.folder import export_scene
    from histolib.view.sources import open_scene

    opts = view_options(slide, virtual, **options)
    with open_scene(opts) as scene:
        return export_scene(scene, out)
