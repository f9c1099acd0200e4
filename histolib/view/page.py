"""The viewer's page and its fixed files, the same for the server and for a static export.

:func:`page_files` maps each relative URL path of the page (``index.html``, ``scene.js``, the
vendored OpenSeadragon under ``static/``, ``overlays/<layer>.geojson``) to its content type and
bytes. The page's data is a script (``scene.js``), not a fetched JSON file, so the exported
page works from ``file://``. The tiles (``dzi/sN_files/...``) are not among these files: the
server makes them on demand, the export writes them with pyvips.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".geojson": "application/geo+json",
    ".jpeg": "image/jpeg",
    ".dzi": "application/xml",
}


def content_type(name: str) -> str:
    """The content type of a file name (by its extension)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    return CONTENT_TYPES.get(suffix.lower(), "application/octet-stream")


def _package_files(folder: str) -> dict[str, bytes]:
    """The regular files under the package folder ``folder`` (links left out), by relative
    path."""
    found: dict[str, bytes] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif child.is_file() and not _is_link(child):
                found[name] = child.read_bytes()

    walk(resources.files("histolib.view").joinpath(folder), f"{folder}/")
    return found


def _is_link(node: Any) -> bool:
    import os

    path = getattr(node, "__fspath__", None)
    return path is not None and os.path.islink(os.fspath(node))


def _json_script(variable: str, value: Any) -> bytes:
    """``window.<variable> = <value>;`` with ``<`` escaped (safe even when inlined)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c")
    return f"window.{variable} = {text};\n".encode()


def index_html(title: str) -> bytes:
    """The page: the template with its title."""
    template = (
        resources.files("histolib.view")
        .joinpath("templates/index.html")
        .read_text(encoding="utf-8")
    )
    return template.replace("{{title}}", html.escape(title)).encode("utf-8")


def page_files(document: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """Every fixed file of the page for the scene ``document`` (see the module docstring)."""
    files = {"index.html": index_html(document["title"])}
    files["scene.js"] = _json_script("HISTOLIB_SCENE", document)
    for layer in document["layers"]:
        text = json.dumps(layer["geojson"], separators=(",", ":"), allow_nan=False)
        files[f"overlays/{layer['id']}.geojson"] = text.encode()
    files.update(_package_files("static"))
    return {name: (content_type(name), data) for name, data in files.items()}
