"""Safety limits: bounded decompression, image sizes, tile grids and scales.

A hostile or broken input (a 1 MB ``.geojson.gz`` that expands to gigabytes, a 48 KB PNG of
20,000 x 20,000 px, a TIFF whose 72-dpi placeholder reads as 353 um/px) must end in a one-line
error, not in a traceback or a process the kernel kills. Each limit has a default, an
environment variable and a global option of the ``histolib`` command that raises it
(``histolib --max-image-pixels 100000000 build-library ...``); the error a limit raises names
the limit and that option.

=====================  ===========================  ===============================  =========
limit                  option                       environment variable             default
=====================  ===========================  ===============================  =========
``image_pixels``       ``--max-image-pixels N``     ``HISTOLIB_MAX_IMAGE_PIXELS``    4096^2
``annotation_bytes``   ``--max-annotation-mb N``    ``HISTOLIB_MAX_ANNOTATION_MB``   512 MiB
``grid_tiles``         ``--max-grid-tiles N``       ``HISTOLIB_MAX_GRID_TILES``      2^23
``upsampling``         ``--max-upsampling X``       ``HISTOLIB_MAX_UPSAMPLING``      4
``slide_pixels``       ``--max-slide-pixels N``     ``HISTOLIB_MAX_SLIDE_PIXELS``    178,956,970
``repair_crossings``   ``--max-repair-crossings N`` ``HISTOLIB_MAX_REPAIR_CROSSINGS`` 10^6
``any_mpp``            ``--any-mpp``                ``HISTOLIB_ANY_MPP=1``           off
=====================  ===========================  ===============================  =========

- ``image_pixels``: the largest tile or mask image read (width x height), checked from the
  header before any pixel is decoded;
- ``annotation_bytes``: the largest annotation file read, after gzip decompression (read in
  chunks: a bomb stops at the limit);
- ``grid_tiles``: the most grid positions of one slide (the tissue mask grows with them);
- ``upsampling``: the most a slide is enlarged to reach the target mpp (``--slide-mpp 20``
  meant as "20x" would enlarge a slide 40x for 0.5 um/px tiles);
- ``slide_pixels``: the largest plain-image slide (PNG, JPEG, untiled TIFF: decoded whole),
  checked from the header before any pixel is decoded (the default is the size Pillow refuses
  as a decompression bomb);
- ``repair_crossings``: the most pairs of overlapping edges (an upper bound on the
  self-intersections) of one invalid contour that is repaired; the repair's time and memory
  grow with them (a contour of 1,000 random vertices has about 200,000);
- ``any_mpp``: accept an mpp outside the plausible range of microscopy
  (:mod:`histolib.slide.mpp`).

The values live in the environment (:func:`set_limits` writes it), so worker processes, however
they are started, see the same limits as the command.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError, HistolibError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, global option, default and unit."""

    env: str
    flag: str
    default: float
    kind: type


LIMITS: dict[str, Limit] = {
    "image_pixels": Limit("HISTOLIB_MAX_IMAGE_PIXELS", "--max-image-pixels", 4096 * 4096, int),
    "annotation_bytes": Limit("HISTOLIB_MAX_ANNOTATION_MB", "--max-annotation-mb", 512, int),
    "grid_tiles": Limit("HISTOLIB_MAX_GRID_TILES", "--max-grid-tiles", 2**23, int),
    "upsampling": Limit("HISTOLIB_MAX_UPSAMPLING", "--max-upsampling", 4.0, float),
    "slide_pixels": Limit("HISTOLIB_MAX_SLIDE_PIXELS", "--max-slide-pixels", 2 * 89_478_485, int),
    "repair_crossings": Limit(
        "HISTOLIB_MAX_REPAIR_CROSSINGS", "--max-repair-crossings", 1_000_000, int
    ),
    "any_mpp": Limit("HISTOLIB_ANY_MPP", "--any-mpp", 0, bool),
}


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring); ``annotation_bytes`` in bytes."""

    image_pixels: int
    annotation_bytes: int
    grid_tiles: int
    upsampling: float
    slide_pixels: int
    repair_crossings: int
    any_mpp: bool


def _parse(name: str, text: str, label: str | None = None) -> Any:
    spec = LIMITS[name]
    label = label or spec.env
    if spec.kind is bool:
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{label} must be 1 or 0 (true or false), got {text!r}")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{label} must be a positive number, got {text!r}")
    if name == "annotation_bytes":
        value = max(1, int(value * MIB))
    elif spec.kind is int:
        value = max(1, int(value))
    if name == "upsampling" and value < 1:
        raise ConfigError(f"{label} must be >= 1, got {text!r}")
    return value


def current() -> Limits:
    """The limits in force: the environment's values over the defaults.

    Raises
    ------
    ConfigError
        For an environment variable that is not a positive number.
    """
    return _limits_of(tuple(os.environ.get(spec.env) for spec in LIMITS.values()))


@functools.lru_cache(maxsize=8)
def _limits_of(texts: tuple[str | None, ...]) -> Limits:
    """The limits for the environment's values ``texts`` (one a limit, in :data:`LIMITS`
    order), parsed once per set of values (every tile read asks)."""
    values = {}
    for (name, spec), text in zip(LIMITS.items(), texts, strict=True):
        if text is None or not text.strip():
            text = str(spec.default)
        values[name] = _parse(name, text)
    return Limits(**values)


def set_limits(**changes: Any) -> None:
    """Change limits for this process and the workers it starts, e.g.
    ``set_limits(image_pixels=10**8, annotation_bytes=2 * 1024**3)``; None leaves one as is.

    Raises
    ------
    ConfigError
        For an unknown limit or a value that is not positive.
    """
    names = {f.name for f in fields(Limits)}
    for name, value in changes.items():
        if name not in names:
            raise ConfigError(f"unknown limit {name!r} (known: {', '.join(sorted(names))})")
        if value is None:
            continue
        spec = LIMITS[name]
        if spec.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{spec.flag} must be true or false, not {value!r}")
            text = "1" if value else "0"
        else:
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{spec.flag} must be a number, not {value!r}") from None
            text = repr(number / MIB if name == "annotation_bytes" else number)
        _parse(name, text, spec.flag)
        os.environ[spec.env] = text


@contextlib.contextmanager
def override_limits(**changes: Any) -> Iterator[Limits]:
    """:func:`set_limits` for the duration of a ``with`` block."""
    saved = {spec.env: os.environ.get(spec.env) for spec in LIMITS.values()}
    set_limits(**changes)
    try:
        yield current()
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


def raise_hint(name: str) -> str:
    """How to raise limit ``name``: the global option and the environment variable."""
    spec = LIMITS[name]
    if spec.kind is bool:
        return f"histolib {spec.flag} COMMAND ... (or {spec.env}=1) accepts it"
    return f"raise it with histolib {spec.flag} N COMMAND ... (or {spec.env}=N)"


def _mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} Mpx"


def check_image_size(
    width: int, height: int, *, path: str | Path | None, error: type[HistolibError]
) -> None:
    """Refuse an image of more than ``image_pixels`` px (an ``error`` naming the limit)."""
    limit = current().image_pixels
    if width * height > limit:
        raise error(
            f"image is {width} x {height} px ({_mpx(width * height)}), over the limit of "
            f"{_mpx(limit)} ({limit:,} px) for images read as tiles or masks; "
            + raise_hint("image_pixels"),
            path=path,
        )


def _bytes(size: float) -> str:
    return f"{size / MIB:.0f} MiB" if size >= MIB else f"{size:.0f} bytes"


def too_large_message(size: int | None = None) -> str:
    """The message of a file over ``annotation_bytes`` (``size`` when known)."""
    limit = current().annotation_bytes
    what = "file" if size is None else f"file ({_bytes(size)})"
    return (
        f"{what} is larger than the {_bytes(limit)} limit for annotation files "
        "(after decompression); " + raise_hint("annotation_bytes")
    )


def read_at_most(stream: Any, size: int, *, chunk: int = 1 << 20) -> bytearray:
    """Up to ``size`` bytes of ``stream``, read in chunks into one growing buffer: memory
    follows what the stream holds, once (``stream.read(size)`` of a decompressing stream
    allocates all of ``size`` up front; joining chunks would hold them twice)."""
    data = bytearray()
    while len(data) < size:
        part = stream.read(min(chunk, size - len(data)))
        if not part:
            break
        data += part
    return data


def read_bounded(path: str | Path, *, error: type[HistolibError]) -> bytes | bytearray:
    """The bytes of a file, gunzipped when it starts with the gzip magic bytes, at most
    ``annotation_bytes`` of them: decompression is read in chunks and stops at the limit, so
    a gzip bomb costs no more memory than the limit.

    Raises
    ------
    HistolibError
        (of class ``error``) for a missing, unreadable, damaged or too large file.
    """
    path = Path(path)
    limit = current().annotation_bytes
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
            handle.seek(0)
            if magic != b"\x1f\x8b":
                size = os.fstat(handle.fileno()).st_size
                if size > limit:
                    raise error(too_large_message(size), path=path)
                return handle.read()
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                data = read_at_most(unzipped, limit + 1)
    except HistolibError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise error(f"cannot read file ({reason})", path=path) from None
    if len(data) > limit:
        raise error(too_large_message(), path=path)
    return data
