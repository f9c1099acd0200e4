"""No output over an input: the one check every command that writes makes before writing.

:func:`~histolib.core.lock.output_lock` calls :func:`check_output` with the command's inputs,
before it creates anything, so a refused run changes no file. What is refused, and why:

- **the output is an input** (a file or a folder), compared after resolving symbolic links and
  ``..``, and as the same file on disk (hard links: same device and inode): always; writing
  would replace what is being read (``build-library M --out M`` replaced the tile manifest);
- **a side file is an input** (``<name>_tiles.csv`` beside a library...): the same;
- **a folder output holds an input at a path the command writes** (``export qupath --annotations
  ann/s1.geojson --out ann/`` writes ``ann/s1.geojson``): each command names what it writes in
  its folder as patterns (``tiles/*``: anything under ``tiles``; ``*.geojson``: at the top level;
  the default is everything in it); inputs elsewhere in the folder are fine (slides kept in the
  folder that ``tile`` writes into are never written);
- **the output lies inside an input folder that is read recursively** (``--images`` and
  ``--masks`` folders of tiles): the next run would read the output as input (QC overlays taken
  for tiles). Folders read only at their top level (``tile SLIDES/``, ``--annotations DIR/``)
  may hold the output.

An input that does not exist is not compared (the command reports it as missing). ``split``
rewrites its manifests in place by design and does not take this check; ``synth``, ``demo``
and ``cluster local`` read no input file.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from histolib.core.names import same_file
from histolib.errors import OutputError

Inputs = Iterable[str | Path | None]

#: The ``writes`` of a command that may write anything in its folder.
EVERYTHING = ("*", "*/*")


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _existing(paths: Inputs) -> list[Path]:
    out = []
    for path in paths:
        if path is None or str(path) == "":
            continue
        path = Path(path)
        if path.exists():
            out.append(path)
    return out


def _inside(child: Path, folder: Path) -> bool:
    """Whether ``child`` lies strictly inside ``folder`` (both resolved)."""
    return child != folder and child.is_relative_to(folder)


def _written(relative: str, writes: Sequence[str]) -> bool:
    """Whether ``relative`` matches a pattern: one without ``/`` only at the top level, one
    with ``/`` through :func:`fnmatch.fnmatchcase` (``tiles/*``: anything under ``tiles``)."""
    return any(
        fnmatch.fnmatchcase(relative, pattern) and ("/" in pattern or "/" not in relative)
        for pattern in writes
    )


def check_output(
    target: str | Path,
    *,
    inputs: Inputs = (),
    folder: bool,
    writes: Sequence[str] = EVERYTHING,
    scanned: Inputs = (),
    side: Inputs = (),
) -> None:
    """Refuse an output that would write over one of the command's inputs (module docstring).

    Parameters
    ----------
    target
        The output folder or file.
    inputs
        Every path the command reads (files or folders; None entries are ignored).
    folder
        Whether ``target`` is a folder.
    writes
        For a folder output: patterns, relative to it, of what the command writes there.
    scanned
        Input folders read recursively; the output may not lie inside one. They count as
        inputs too.
    side
        Other paths the command writes beside ``target`` (files or folders).

    Raises
    ------
    OutputError
        One line naming the output and the input.
    """
    scanned = _existing(scanned)
    sources = _existing(inputs) + scanned
    if not sources:
        return
    outputs = [Path(target), *(Path(p) for p in side if p is not None)]
    resolved = [(_resolved(source), source) for source in sources]
    for out in outputs:
        out_real = _resolved(out)
        for source in sources:
            if same_file(out, source):
                raise OutputError(
                    f"would overwrite the input {source}; give another --out", path=out
                )
        for real, source in [(_resolved(s), s) for s in scanned]:
            if _inside(out_real, real):
                raise OutputError(
                    f"lies inside the input folder {source}, whose files are all read: the "
                    "output would become input; give an output outside it",
                    path=out,
                )
    if folder:
        _check_held(Path(target), resolved, writes)


def _check_held(target: Path, resolved: list[tuple[Path, Path]], writes: Sequence[str]) -> None:
    """Refuse an input inside folder output ``target`` at a path the command writes, also as a
    hard link of a file the command writes under a fixed name."""
    home = _resolved(target)
    for real, source in resolved:
        if _inside(real, home) and _written(real.relative_to(home).as_posix(), writes):
            raise OutputError(
                f"holds the input {source}, which this command writes over; give another "
                "output folder",
                path=target,
            )
    for name in writes:
        if any(ch in name for ch in "*?["):
            continue
        for _real, source in resolved:
            if source.is_file() and same_file(home / name, source):
                raise OutputError(
                    f"{name} in it is the input {source} (a link); give another output folder",
                    path=target,
                )
