"""One run per output: a lock file held by the command that writes a folder or a file.

Two runs writing one output at once (two ``histolib tile`` runs into one ``--out`` with
different ``--mpp``) could each trust files the other is half-way through. Every command that
writes an output takes :func:`output_lock` first:

- a folder output is locked by ``FOLDER/.histolib.lock``, a file output by
  ``.<name>.lock`` beside the file;
- the lock file records the owner (pid, host, command, start time) for the message a second
  run gets: ``in use by another histolib run (tile, pid 4242 on host1 since ...)``;
- the lock itself is an OS lock on the open file (``flock`` on POSIX, ``msvcrt.locking`` on
  Windows), which the kernel releases when the owner dies, however it dies: a lock file left
  by a killed run is stale and is taken over without a word (its worker processes, which
  inherit the lock, die with their parent: :mod:`histolib.core.parallel`);
- for a file output, the hidden temporaries of :mod:`histolib.core.atomic` that a killed run
  left beside it are removed once the lock is held (no other run can be writing them);
- the output is checked against the command's inputs first
  (:func:`histolib.core.overwrite.check_output`): no output over an input;
- folders the command created are removed again when it fails before writing anything into
  them, so a failed run leaves no empty output folder.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from histolib.core.atomic import TMP_PREFIX, ensure_writable_dir
from histolib.core.overwrite import EVERYTHING, check_output
from histolib.errors import OutputError

LOCK_NAME = ".histolib.lock"


def lock_path_for(target: str | Path, *, folder: bool) -> Path:
    """The lock file of an output folder (inside it) or of an output file (beside it)."""
    target = Path(target)
    return target / LOCK_NAME if folder else target.parent / f".{target.name}.lock"


def _try_lock(fd: int) -> bool:
    """Take the OS lock of an open file without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _owner(lock: Path) -> str:
    """Who holds ``lock``, from what it records (the file may be being written)."""
    try:
        info = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another histolib run"
    return (
        f"another histolib run ({info.get('command', '?')}, pid {info.get('pid')} on "
        f"{info.get('host', '?')} since {info.get('started', '?')})"
    )


def _acquire(lock: Path, *, command: str) -> int:
    """Open and lock ``lock``; returns the open descriptor (kept open while the lock is held)."""
    for _attempt in range(5):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file ({exc.strerror})", path=lock) from None
        if not _try_lock(fd):
            os.close(fd)
            raise OutputError(
                f"in use by {_owner(lock)}: wait until it ends (if no run is active, delete "
                f"{lock})",
                path=lock.parent,
            )
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if not same:  # the previous owner removed the file between our open and lock
            os.close(fd)
            continue
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode("utf-8"))
        return fd
    raise OutputError("cannot take the lock file (it keeps changing)", path=lock)


def _release(lock: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        lock.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing[::-1]


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but (recursively) empty folders."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in folder.iterdir():
        _remove_if_empty(child)
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the hidden temporaries that :func:`histolib.core.atomic.atomic_path` made for
    ``target`` in a run that was killed; returns what was removed. Call it only while holding
    the lock of ``target``."""
    target = Path(target)
    pattern = re.compile(rf"{re.escape(TMP_PREFIX + target.stem)}-[A-Za-z0-9_]{{8}}\.[A-Za-z0-9]+")
    removed = []
    with contextlib.suppress(OSError):
        for path in target.parent.iterdir():
            if pattern.fullmatch(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def output_lock(
    target: str | Path,
    *,
    command: str,
    folder: bool = True,
    inputs: Iterable[str | Path | None] = (),
    writes: Sequence[str] = EVERYTHING,
    scanned: Iterable[str | Path | None] = (),
    side: Iterable[str | Path | None] = (),
) -> Iterator[Path]:
    """Hold the lock of an output folder (``folder=True``, created if needed) or output file,
    once :func:`histolib.core.overwrite.check_output` finds that it writes over no input.

    Parameters
    ----------
    target
        The output folder, or the output file (its folder is created if needed).
    command
        What runs (``"tile"``), recorded for the message another run gets.
    folder
        Whether ``target`` is a folder.
    inputs, writes, scanned, side
        What the command reads and writes, for
        :func:`~histolib.core.overwrite.check_output` (checked before anything is created).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputError
        When another live run holds the lock (the message names its pid, host and command),
        the folder cannot be created or written, or the output is (or would overwrite) an input.
    """
    target = Path(target)
    check_output(target, inputs=inputs, folder=folder, writes=writes, scanned=scanned, side=side)
    if not folder and target.is_dir():
        raise OutputError("is a folder, not a file", path=target)
    home = target if folder else target.parent
    created = _missing_folders(home.absolute())
    ensure_writable_dir(home)
    lock = lock_path_for(target, folder=folder)
    try:
        fd = _acquire(lock, command=command)
    except BaseException:
        if created:
            _remove_if_empty(created[0])
        raise
    ok = False
    try:
        if not folder:
            remove_stale_temporaries(target)
        yield lock
        ok = True
    finally:
        _release(lock, fd)
        if not ok and created:
            _remove_if_empty(created[0])
