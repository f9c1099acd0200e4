"""A view as a static folder: open ``index.html`` from the file system or any static host.

The folder holds the page and its files (:func:`histolib.view.page.page_files`: the page, its
data as ``scene.js``, the overlays as GeoJSON, the vendored OpenSeadragon) and one Deep Zoom
pyramid per slide, ``dzi/sN.dzi`` and ``dzi/sN_files/``, written by pyvips ``dzsave`` (the
formats pyvips reads as the same level-0 image: TIFF, SVS, plain images) or else tile by tile
from OpenSlide's ``DeepZoomGenerator`` (formats only OpenSlide reads: MIRAX, NDPI...). Both
write the same layout, so the page is the same. The folder is built under a temporary name and
renamed into place; an existing export there is replaced, any other folder is refused.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

from histolib.errors import OutputError
from histolib.view.deepzoom import JPEG_QUALITY, OVERLAP, TILE_FORMAT, TILE_SIZE, DeepZoomSlide
from histolib.view.page import page_files
from histolib.view.sources import DZI_FOLDER, Scene

#: An empty file that marks a folder as a view export (one that may be replaced).
MARKER = ".histolib-view"


def _pyvips_level0(slide: DeepZoomSlide) -> object | None:
    """The slide's level 0 as a pyvips image, or None when pyvips reads it otherwise."""
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(slide.path), access="sequential")
    except pyvips.Error:
        return None
    if (image.width, image.height) != tuple(slide.dimensions):
        return None
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.bands == 1:
        image = image.colourspace("srgb")
    return image.cast("uchar") if image.format != "uchar" else image


def dzsave(slide: DeepZoomSlide, base: Path) -> None:
    """Write the Deep Zoom pyramid ``base.dzi`` + ``base_files/`` of ``slide``."""
    image = _pyvips_level0(slide)
    if image is not None:
        image.dzsave(  # type: ignore[attr-defined]
            str(base),
            layout="dz",
            suffix=f".{TILE_FORMAT}[Q={JPEG_QUALITY}]",
            tile_size=TILE_SIZE,
            overlap=OVERLAP,
            depth="onepixel",
            keep=0,  # no metadata in the tiles
        )
        # The slide's metadata, which the page does not use and a static host would publish.
        (base.parent / f"{base.name}_files" / "vips-properties.xml").unlink(missing_ok=True)
        return
    _write_from_openslide(slide, base)


def _write_from_openslide(slide: DeepZoomSlide, base: Path) -> None:
    """The same pyramid, tile by tile from the slide's ``DeepZoomGenerator``."""
    generator = slide.generator
    files = base.parent / f"{base.name}_files"
    for level in range(generator.level_count):
        folder = files / str(level)
        folder.mkdir(parents=True)
        cols, rows = generator.level_tiles[level]
        for col in range(cols):
            for row in range(rows):
                image = generator.get_tile(level, (col, row)).convert("RGB")
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
                (folder / f"{col}_{row}.{TILE_FORMAT}").write_bytes(buffer.getvalue())
    base.with_suffix(".dzi").write_text(generator.get_dzi(TILE_FORMAT), encoding="utf-8")


def _check_target(out: Path) -> None:
    """Refuse to replace a folder that is not a view export (or a file)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError("exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputError(
            "is a folder that is not a histolib view export; give an empty or new folder",
            path=out,
        )


def export_scene(scene: Scene, out: str | Path) -> Path:
    """Write ``scene`` as a static folder ``out`` (atomically); returns ``out/index.html``."""
    out = Path(out)
    _check_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write here ({exc.strerror or exc})", path=out.parent) from exc
    try:
        for name, (_, data) in page_files(scene.document()).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (tmp / DZI_FOLDER).mkdir(exist_ok=True)
        for key, slide in scene.slides.items():
            dzsave(slide, tmp / DZI_FOLDER / key)
        (tmp / MARKER).write_text("")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _replace(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``, moving a previous export aside first."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}-", dir=out.parent))
        out.rename(old / "view")
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
