"""The one definition of how histolib writes pyramidal TIFF slides (DESIGN.md section 3).

256 px JPEG tiles (Q 90), BigTIFF, one page per level (no SubIFDs, so that OpenSlide sees every
level), resolution ``1000 / mpp`` px per mm written in px per cm, so that OpenSlide reports
``openslide.mpp-x == mpp`` (which QuPath reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histolib.errors import OutputError

TILE_PX = 256
JPEG_QUALITY = 90


def pyramid_tiff_options(*, mpp: float, quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Keyword arguments of ``pyvips.Image.tiffsave`` for a slide at ``mpp`` um/px."""
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    return {
        "tile": True,
        "pyramid": True,
        "compression": "jpeg",
        "Q": int(quality),
        "tile_width": TILE_PX,
        "tile_height": TILE_PX,
        "bigtiff": True,
        "subifd": False,
        "resunit": "cm",
        "xres": 1000.0 / mpp,
        "yres": 1000.0 / mpp,
    }


def save_pyramidal_tiff(
    image: Any, path: str | Path, *, mpp: float, description: str | None = None
) -> Path:
    """Save a pyvips image as a pyramidal TIFF at ``mpp``, atomically.

    Parameters
    ----------
    image
        A ``pyvips.Image`` (RGB, uchar).
    path
        Target ``.tif``; written under a temporary name, then renamed.
    mpp
        Microns per pixel of ``image``.
    description
        Optional ImageDescription (replaces any description the image carries, e.g. an Aperio
        header copied from a source slide, which would make OpenSlide misread the file).

    Raises
    ------
    OutputError
        When libvips cannot write the file.
    """
    import pyvips

    from histolib.core.atomic import atomic_path

    path = Path(path)
    image = image.copy(interpretation="srgb")
    if description is not None:
        image.set_type(pyvips.GValue.gstr_type, "image-description", description)
    with atomic_path(path) as tmp:
        try:
            image.tiffsave(str(tmp), **pyramid_tiff_options(mpp=mpp))
        except pyvips.Error as exc:
            raise OutputError(f"cannot write TIFF ({exc})", path=path) from exc
    return path
