"""The local viewer server: the standard library's ``ThreadingHTTPServer``, safe by construction.

Why the standard library: the server answers GET for a fixed set of in-memory files and for
tiles addressed by numbers; it needs no routing, templating or async framework, and a new
dependency would only widen what is installed and audited.

The security model:

- only the files named on the command line are read: they are opened at start-up under opaque
  ids (``s0``, ``s1``); a request path is never joined onto the file system. A request names
  either one of the page's fixed files (an exact key of a dict made at start-up, package files
  that are links left out) or a tile ``dzi/sN_files/<level>/<col>_<row>.jpeg`` (numbers checked
  against the pyramid). Anything else (``..``, ``%2e%2e``, absolute paths, links) is 404;
- it binds to 127.0.0.1 unless told otherwise; on loopback, a request whose ``Host`` is not a
  loopback name is refused (403: a web page cannot reach it through DNS rebinding);
- a request line over :data:`MAX_PATH` characters is 414, an unknown method 405, a malformed
  request 400 (the standard library's parser); errors are answered, never shown as tracebacks;
- the tile cache is bounded in bytes (:class:`~histolib.view.deepzoom.TileCache`).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from histolib.view.page import content_type

#: Longest request path answered (a longer one is 414).
MAX_PATH = 1024
TILE_PATH = re.compile(r"dzi/(s[0-9])_files/([0-9]{1,2})/([0-9]{1,7})_([0-9]{1,7})\.jpeg")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViewServer(ThreadingHTTPServer):
    """A threading HTTP server holding the page's files and the scene's slides."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], files: dict[str, tuple[str, bytes]], slides: dict[str, Any]
    ) -> None:
        self.files = files
        self.slides = slides
        self.loopback = is_loopback(address[0])
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, ViewHandler)

    @property
    def url(self) -> str:
        """The page's URL."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is not an error worth a traceback."""


class ViewHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD for the page's files and tiles; 404 for anything else."""

    server: ViewServer
    server_version = "histolib-view"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    #: Headers and body go out as two writes: with Nagle's algorithm on, a keep-alive client
    #: waits for the delayed ACK (40 ms a tile on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base's errors, with the client's faults as 4xx: an unknown method is 405 (not
        501), an unknown HTTP version 400 (not 505)."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code = HTTPStatus.BAD_REQUEST
        # A request line that failed to parse leaves HTTP/0.9, whose answers have no status
        # line: nobody speaks 0.9 now, so the status line is always sent.
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        super().send_error(code, message, explain)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        if len(self.path) > MAX_PATH:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if self.server.loopback and not self._host_is_loopback():
            self.send_error(HTTPStatus.FORBIDDEN, "not a loopback Host")
            return
        try:
            found = self._lookup(unquote(urlsplit(self.path).path, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            found = None
        except Exception:  # a slide that fails to decode a region: answered, not a traceback
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "the tile could not be read")
            return
        if found is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        kind, data = found
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Cache-Control", "no-cache" if kind.startswith("text/html") else "max-age=3600"
        )
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _host_is_loopback(self) -> bool:
        host = self.headers.get("Host", "")
        name = urlsplit(f"//{host}").hostname if host else None
        return name is not None and is_loopback(name)

    def _lookup(self, path: str) -> tuple[str, bytes] | None:
        """The content type and bytes of a request path, or None (404)."""
        if not path.startswith("/"):
            return None
        key = path[1:] or "index.html"
        if key in self.server.files:
            return self.server.files[key]
        match = TILE_PATH.fullmatch(key)
        if match is None:
            return None
        slide = self.server.slides.get(match.group(1))
        level, col, row = (int(match.group(i)) for i in (2, 3, 4))
        if slide is None or not slide.has_tile(level, col, row):
            return None
        return content_type(key), slide.tile(level, col, row)


def start_server(
    files: dict[str, tuple[str, bytes]], slides: dict[str, Any], *, host: str, port: int
) -> tuple[ViewServer, threading.Thread]:
    """Bind and start answering in a background thread; returns the server and its thread
    (``server.shutdown()`` stops it)."""
    server = ViewServer((host, port), files, slides)
    thread = threading.Thread(target=server.serve_forever, name="histolib-view", daemon=True)
    thread.start()
    return server, thread
