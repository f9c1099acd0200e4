"""Reading and writing tile images: the one RGB reader and the one mask reader.

Every stage that reads a tile (cell libraries, training data, evaluation, transfer of a
folder) reads it here, so a file one stage accepts is accepted by all of them, with the same
one-line :class:`~histolib.errors.ImageError` when it is not.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import atomic_path
from histolib.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes read as tiles and masks (case-insensitive)."""

RGB_MODES = ("RGB", "RGBA", "P")
"""Pillow modes read as 8-bit colour tiles (grayscale, 16-bit or CMYK files are refused)."""


@contextlib.contextmanager
def open_image(path: Path, *, what: str = "image") -> Iterator[Any]:
    """Open an image with Pillow, its size checked against the ``image_pixels`` limit
    (:mod:`histolib.core.limits`) before any pixel is decoded; Pillow's own decompression-bomb
    check becomes the same one-line :class:`ImageError`."""
    from PIL import Image

    from histolib.core.limits import check_image_size, current

    limit = current().image_pixels
    Image.MAX_IMAGE_PIXELS = max(limit, Image.MAX_IMAGE_PIXELS or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(
            f"{what} is larger than the limit of {limit:,} px for images read as tiles or "
            "masks; raise it with histolib --max-image-pixels N COMMAND ...",
            path=path,
        ) from None
    with img:
        check_image_size(img.width, img.height, path=path, error=ImageError)
        yield img


def _decode(path: Path, what: str, pixels: Callable[[Any], np.ndarray]) -> np.ndarray:
    """``pixels(img)`` of the image at ``path`` opened with :func:`open_image`, Pillow's errors
    (a missing file, a format it does not read, a corrupt file) mapped to the one-line
    :class:`ImageError` of an unreadable ``what`` (``"image"`` or ``"mask"``)."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(path, what=what) as img:
            return pixels(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"no such {what} file", path=path) from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read {what} (not a format Pillow reads)", path=path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = f"{exc.__class__.__name__}: {exc}"
        raise ImageError(f"cannot read {what} ({reason})", path=path) from None


def _rgb_pixels(img: Any, path: Path) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 pixels of an 8-bit colour Pillow image, transparency on white."""
    from PIL import Image

    if img.mode not in RGB_MODES:
        raise ImageError(
            f"expected an 8-bit RGB image, got {len(img.getbands())} channel(s) (mode {img.mode})",
            path=path,
        )
    if img.mode == "RGB":
        return np.asarray(img)
    # dropping alpha would leave black, which the pipeline takes for nuclei
    rgba = img.convert("RGBA")
    rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
    return np.asarray(rgba.convert("RGB"))


def read_rgb(path: str | Path, *, expected_size: int | None = None) -> np.ndarray:
    """Read a tile as ``(H, W, 3)`` uint8 RGB; transparent areas become white, as on glass.

    Parameters
    ----------
    path
        An image file Pillow reads (PNG, JPEG, TIFF...).
    expected_size
        When given, the tile must be ``expected_size`` px square.

    Raises
    ------
    ImageError
        For a missing or unreadable file, a file that is not 8-bit colour, or one of another
        size than ``expected_size``.
    """
    path = Path(path)
    rgb = _decode(path, "image", functools.partial(_rgb_pixels, path=path))
    if expected_size is not None and rgb.shape[:2] != (expected_size, expected_size):
        raise ImageError(
            f"tile is {rgb.shape[1]}x{rgb.shape[0]} px, expected {expected_size}x{expected_size}",
            path=path,
        )
    return rgb


def read_mask(path: str | Path, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a tumour mask image as a bool array (any non-zero colour channel = tumour).

    Parameters
    ----------
    path
        A mask image (any mode; alpha is ignored).
    shape
        When given, the mask's ``(rows, cols)`` must equal it (its tile's shape).

    Raises
    ------
    ImageError
        For a missing or unreadable file, or a mask of another shape than ``shape``.
    """
    path = Path(path)
    arr = _decode(path, "mask", np.asarray)
    if arr.ndim == 3:
        arr = arr[:, :, : min(arr.shape[2], 3)].any(axis=2)
    if shape is not None and arr.shape[:2] != tuple(shape):
        raise ImageError(
            f"mask is {arr.shape[1]}x{arr.shape[0]} px, its tile {shape[1]}x{shape[0]}",
            path=path,
        )
    return arr != 0


def write_png(path: str | Path, rgb: np.ndarray, *, compress_level: int = 6) -> Path:
    """Write ``rgb`` (uint8) as a PNG atomically (temporary name, then rename)."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(
            tmp, format="PNG", compress_level=compress_level
        )
    return path
