"""File names derived from data: slide ids, tile ids, class names, run names.

Every writer that names a file or folder after something read from data (a ``slide_id`` column,
a slide's file name, a class name in an annotation file, a model name in a grid file) passes
the name through this module first, so that no table or annotation file can make histolib
write outside its output folder:

- :func:`check_name` refuses a name that is not one plain path component (empty, ``.``,
  ``..``, containing ``/``, ``\\``, NUL or another control character, a name Windows reserves
  such as ``CON`` or ``NUL``, or longer than :data:`MAX_NAME_BYTES`): a one-line
  :class:`~histolib.errors.HistolibError` naming what the name is and where it came from;
- :func:`sanitize_name` turns any text into such a component (for names that are only labels
  of a file, such as overlay pictures or cache entries, where a lossy name is harmless);
- :func:`child_path` joins a checked name to a folder: a direct child of it, always;
- :func:`same_file` tells whether two paths name one file (symbolic or hard links); the
  output-is-not-an-input check built on it is :mod:`histolib.core.overwrite`.
"""

from __future__ import annotations

import re
from pathlib import Path

from histolib.errors import HistolibError, InputError

#: Longest name accepted, in UTF-8 bytes (file systems allow 255 per component; histolib adds
#: suffixes such as ``_x123_y456_s256.png`` and ``.tmp-...`` to some names).
MAX_NAME_BYTES = 200

#: Device names Windows reserves (with or without an extension); refused everywhere so that an
#: output folder can be copied to any system.
RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_CHARS = re.compile(r"[^\w.\-+=@,]")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a file or folder name of histolib's outputs, or None when it can."""
    if not isinstance(name, str):
        return f"is not text ({type(name).__name__})"
    if not name.strip():
        return "is empty"
    if name in (".", ".."):
        return f"is {name!r}, which names a folder, not a file"
    if "/" in name or "\\" in name:
        return f"contains a path separator: {name!r}"
    if _CONTROL.search(name):
        return f"contains a NUL or control character: {name!r}"
    if name != name.strip():
        return f"starts or ends with white space: {name!r}"
    if name.split(".")[0].lower() in RESERVED_NAMES:
        return f"is a name Windows reserves for a device: {name!r}"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(
    name: object,
    *,
    what: str = "name",
    path: str | Path | None = None,
    error: type[HistolibError] = InputError,
) -> str:
    """``name`` when it is one plain path component, else a one-line error.

    Parameters
    ----------
    name
        The name read from data (a slide id, a tile id, a class name...).
    what
        What the name is, for the message (``"slide id"``).
    path
        The file the name came from (named in the message).
    error
        The :class:`~histolib.errors.HistolibError` subclass raised.

    Raises
    ------
    HistolibError
        (of class ``error``) when the name is empty, ``.`` or ``..``, holds a path separator,
        NUL or a control character, is reserved on Windows, or is too long.
    """
    problem = name_problem(name)
    if problem is not None:
        raise error(f"{what} {problem}; it cannot name a file or folder", path=path)
    return str(name)


def sanitize_name(text: object, *, fallback: str = "_") -> str:
    """A safe file name made from ``text``: characters other than letters, digits and
    ``._-+=@,`` become ``_``; ``.``, ``..``, empty and reserved names are prefixed with ``_``;
    the result is cut to :data:`MAX_NAME_BYTES`. Different inputs may give one name."""
    name = _UNSAFE_CHARS.sub("_", str(text))
    name = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    if not name.strip("."):
        name = fallback + name
    if name.split(".")[0].lower() in RESERVED_NAMES:
        name = "_" + name
    return name


def child_path(folder: str | Path, name: str, *, what: str = "name", suffix: str = "") -> Path:
    """``folder / (name + suffix)`` once :func:`check_name` accepts ``name`` (an
    :class:`~histolib.errors.OutputError` otherwise): the path is always a direct child of
    ``folder``."""
    from histolib.errors import OutputError

    check_name(name, what=what, error=OutputError)
    return Path(folder) / f"{name}{suffix}"


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same path once links are resolved, or the same
    file on disk (hard links)."""
    import os

    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
