"""Atomic outputs: write to a temporary name beside the target, then rename.

A run that is killed leaves at most a ``.tmp-*`` file, never a half-written file under the
final name that a re-run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from histolib.errors import OutputError

TMP_PREFIX = ".tmp-"
#: Errors of writing (disk full, quota, file too large, read-only): reported with the target.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _mkdir_reason(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be created: names a file standing where a folder must be."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder"
    return str(exc.strerror or exc)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Parameters
    ----------
    target
        The final path.
    suffix
        Suffix of the temporary file (defaults to the target's, so that writers which pick a
        format from the extension still do).

    Raises
    ------
    OutputError
        When the folder cannot be created or written.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError("is a folder, not a file", path=target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=TMP_PREFIX + target.stem + "-",
            suffix=target.suffix if suffix is None else suffix,
            dir=target.parent,
        )
    except OSError as exc:
        reason = _mkdir_reason(target.parent, exc)
        raise OutputError(f"cannot write here ({reason})", path=target.parent) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0o600 files; give the output the usual mode (0o666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"cannot write ({exc.strerror})", path=target) from exc
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in WRITE_ERRNOS:  # "No space left on device" names no file: name it
            raise OutputError(f"cannot write ({exc.strerror or exc})", path=target) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check that it can be written.

    Raises
    ------
    OutputError
        When the folder cannot be created or is not writable.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = _mkdir_reason(path, exc)
        raise OutputError(f"cannot create output folder ({reason})", path=path) from exc
    if not path.is_dir():
        raise OutputError("output path exists and is not a folder", path=path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", path=path)
    return path
