"""Whole-slide images: open anything OpenSlide reads (plus plain images) and read at an mpp.

Every slide format OpenSlide reads (Aperio ``.svs``, generic tiled TIFF, Hamamatsu ``.ndpi``
/ ``.vms``, Leica ``.scn``, MIRAX ``.mrxs``, Philips TIFF, Sakura, Ventana ``.bif``, DICOM,
Zeiss ``.czi``...) opens through OpenSlide. Plain images (PNG, JPEG, untiled TIFF) open through
pyvips as one-level slides; they carry no trustworthy resolution, so they need an explicit mpp.

Scale is chosen by microns per pixel (mpp), never by pyramid level. :meth:`Slide.read_region`
reads from the coarsest level that is at least as fine as the target (OpenSlide's
``get_best_level_for_downsample`` rule: the level whose downsample is <= the target's; a level
up to 1 % coarser also qualifies, since pyramid downsamples such as 4.0003 are rounding noise)
and resizes with area averaging (PIL ``BOX`` over the exact fractional source box) to exactly
the requested size. With ``mpp_tolerance`` > 0 (default 0), a level whose mpp lies within that
relative distance of the target is read pixel for pixel, without resampling, and the tile's
true scale is that level's (``mpp_tolerance=0.01`` reads an Aperio scan at 0.499 um/px as
0.499 um/px tiles for a 0.5 target, as CLAM-style 20x pipelines do). Transparent areas
(outside the scanned region) are composited on white.

Coordinates are (x, y) level-0 pixels, as OpenSlide and QuPath use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histolib.errors import ConfigError, SlideError

#: File extensions OpenSlide reads (a folder given as input is scanned for these).
OPENSLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".czi",
)
#: Plain image extensions opened through pyvips as one-level slides (need an explicit mpp).
PLAIN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SLIDE_EXTENSIONS = tuple(dict.fromkeys(OPENSLIDE_EXTENSIONS + PLAIN_EXTENSIONS))

#: Relative mpp difference under which a level is read as the target scale, unresampled.
DEFAULT_MPP_TOLERANCE = 0.0
#: A level up to this much coarser than the target may still be read (then resampled).
LEVEL_SLACK = 0.01

MPP_HINT = "give it with --slide-mpp (slide_mpp= in Python), e.g. 0.25 for 40x, 0.5 for 20x"


def slide_id_from_path(path: str | Path) -> str:
    """The slide id: the file name minus its slide extension, other dots kept.

    ``a.b.svs`` -> ``a.b``; ``x.ome.tiff`` -> ``x.ome``; a name without a known slide
    extension loses its last suffix only.
    """
    name = Path(path).name
    lower = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return Path(name).stem or name


def is_slide_file(path: str | Path) -> bool:
    """Whether ``path`` has a slide or plain-image extension (used to scan folders)."""
    return Path(path).name.lower().endswith(SLIDE_EXTENSIONS)


def check_mpp(value: float | None, *, what: str = "--slide-mpp") -> float | None:
    """Validate an mpp option: None or a positive finite number in the plausible range of
    microscopy (:mod:`histolib.slide.mpp`; ConfigError otherwise)."""
    from histolib.slide.mpp import check_plausible

    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a positive number of microns per pixel, got {value}")
    return check_plausible(number, what=what)


@dataclass(frozen=True)
class LevelChoice:
    """How a region at a target scale is read: the level, and the exact level-0 px per output px.

    ``downsample`` is level-0 px per output px; ``level_downsample`` the level's own factor;
    ``resample`` False when the level is read pixel for pixel (within the mpp tolerance).
    """

    level: int
    level_downsample: float
    downsample: float
    resample: bool


class Slide:
    """An open whole-slide image (use :func:`open_slide`). A context manager.

    Attributes
    ----------
    path : Path
        The slide file.
    slide_id : str
        File name minus the slide extension.
    dimensions : tuple of int
        Level-0 ``(width, height)``.
    mpp : float
        Level-0 microns per pixel (the metadata's, or the override); None only for a slide
        opened with ``require_mpp=False`` whose metadata has none.
    mpp_source : str
        ``"metadata"`` or ``"option"`` (None without mpp).
    level_count, level_dimensions, level_downsamples
        The pyramid (one level for plain images).
    vendor : str
        OpenSlide's vendor (``aperio``, ``generic-tiff``...) or ``image`` for plain images.
    objective_power : float or None
        Scanner objective magnification from the metadata.
    associated_images : tuple of str
        Names of the associated images (label, macro, thumbnail...).
    properties : dict
        Every metadata property (OpenSlide's, or pyvips' fields for plain images).
    """

    def __init__(
        self,
        path: Path,
        *,
        backend: str,
        handle: Any,
        mpp: float | None,
        mpp_source: str | None,
        level_dimensions: tuple[tuple[int, int], ...],
        level_downsamples: tuple[float, ...],
        vendor: str,
        objective_power: float | None,
        associated_images: tuple[str, ...],
        properties: dict[str, str],
    ) -> None:
        self.path = path
        self.slide_id = slide_id_from_path(path)
        self._backend = backend
        self._handle = handle
        self.mpp = mpp
        self.mpp_source = mpp_source
        self.level_dimensions = level_dimensions
        self.level_downsamples = level_downsamples
        self.level_count = len(level_dimensions)
        self.dimensions = level_dimensions[0]
        self.vendor = vendor
        self.objective_power = objective_power
        self.associated_images = associated_images
        self.properties = properties

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = "unknown" if self.mpp is None else f"{self.mpp:g}"
        return (
            f"Slide({str(self.path)!r}, {w}x{h}, mpp={mpp}, levels={self.level_count}, "
            f"vendor={self.vendor!r})"
        )

    def use_cache(self, cache: Any) -> None:
        """Keep the tiles this slide decodes in ``cache``, an ``openslide.OpenSlideCache`` that
        other slides may share (OpenSlide gives each slide its own 32 MiB cache otherwise).
        Plain images have no tile cache: nothing changes for them."""
        if self._handle is None:
            raise SlideError("slide is closed", path=self.path)
        if self._backend == "openslide":
            self._handle.set_cache(cache)

    def close(self) -> None:
        """Release the file handle (idempotent)."""
        if self._handle is not None and self._backend == "openslide":
            self._handle.close()
        self._handle = None

    # ------------------------------------------------------------------ metadata
    def metadata(self) -> dict[str, Any]:
        """A JSON-ready summary: id, path, vendor, dimensions, levels, mpp, objective power."""
        return {
            "slide_id": self.slide_id,
            "path": str(self.path),
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
        }

    # ------------------------------------------------------------------ levels
    def choose_level(
        self, mpp: float, *, mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    ) -> LevelChoice:
        """The level to read for output pixels of ``mpp`` um, and whether to resample.

        The coarsest level whose downsample is <= the target downsample (``mpp / self.mpp``),
        where a level within ``mpp_tolerance`` (relative) of the target counts as equal and is
        then read without resampling.
        """
        from histolib.slide.mpp import check_upsampling

        mpp = check_mpp(mpp, what="mpp")
        if self.mpp is None:
            raise SlideError(f"slide has no mpp (microns per pixel); {MPP_HINT}", path=self.path)
        choice = self._choose(mpp / self.mpp, mpp_tolerance)
        check_upsampling(choice.downsample, target_mpp=mpp, slide_mpp=self.mpp, path=self.path)
        return choice

    def _choose(self, target: float, mpp_tolerance: float) -> LevelChoice:
        slack = max(mpp_tolerance, LEVEL_SLACK)
        level = 0
        for index, ds in enumerate(self.level_downsamples):
            if ds <= target * (1.0 + slack):
                level = index
        ds = float(self.level_downsamples[level])
        if abs(ds - target) <= max(mpp_tolerance, 1e-9) * target:
            return LevelChoice(level, ds, ds, False)
        return LevelChoice(level, ds, target, True)

    # ------------------------------------------------------------------ reading
    def read_region(
        self,
        x0: float,
        y0: float,
        *,
        size: int | tuple[int, int],
        mpp: float,
        mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
    ) -> Any:
        """Read ``size`` px at ``mpp`` um/px whose top-left corner is level-0 ``(x0, y0)``.

        Parameters
        ----------
        x0, y0
            Level-0 origin of the region (may lie outside the slide: that part is white).
        size
            Output side in px, or ``(width, height)``.
        mpp
            Microns per output pixel.
        mpp_tolerance
            Relative mpp difference under which a level is read unresampled.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB; transparent areas white.

        Raises
        ------
        SlideError
            When the slide cannot be read there (corrupt tile data).
        """
        import numpy as np

        width, height = _size_pair(size)
        choice = self.choose_level(mpp, mpp_tolerance=mpp_tolerance)
        return np.asarray(self.read_pil(x0, y0, width, height, choice))

    def read_pil(self, x0: float, y0: float, width: int, height: int, choice: LevelChoice) -> Any:
        """Read a region as a PIL RGB image with a precomputed :class:`LevelChoice`.

        The fast path for tiling: one OpenSlide read at the chosen level; when ``choice``
        needs no resampling and ``(x0, y0)`` are integers, nothing else but alpha compositing.
        """
        if self._handle is None:
            raise SlideError("slide is closed", path=self.path)
        scale = choice.downsample / choice.level_downsample  # level px per output px
        ds_level = choice.level_downsample
        # Level-px box of the region, in level px relative to the level-0 origin.
        lx0, ly0 = x0 / ds_level, y0 / ds_level
        read_x, read_y = math.floor(lx0 + 1e-9), math.floor(ly0 + 1e-9)
        off_x, off_y = lx0 - read_x, ly0 - read_y
        exact = not choice.resample and off_x < 1e-6 and off_y < 1e-6
        if exact:
            read_w, read_h = width, height
        else:
            read_w = max(1, math.ceil(off_x + width * scale - 1e-9))
            read_h = max(1, math.ceil(off_y + height * scale - 1e-9))
        image = self._read_level(
            round(read_x * ds_level),
            round(read_y * ds_level),
            choice.level,
            read_w,
            read_h,
        )
        if exact:
            return image
        from PIL import Image

        box = (off_x, off_y, off_x + width * scale, off_y + height * scale)
        resample = Image.Resampling.BOX if scale >= 1.0 else Image.Resampling.BICUBIC
        return image.resize((width, height), resample=resample, box=box)

    def _read_level(self, x0: int, y0: int, level: int, width: int, height: int) -> Any:
        """Read ``width x height`` level px at level-0 ``(x0, y0)``; PIL RGB on white."""
        if self._backend == "openslide":
            import openslide

            try:
                rgba = self._handle.read_region((x0, y0), level, (width, height))
            except openslide.OpenSlideError as exc:
                raise SlideError(f"cannot read region ({exc})", path=self.path) from None
            return _rgba_on_white(rgba)
        return self._read_plain(x0, y0, width, height)

    def _read_plain(self, x0: int, y0: int, width: int, height: int) -> Any:
        import numpy as np
        from PIL import Image

        image = self._handle
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        left, top = max(0, x0), max(0, y0)
        right, bottom = min(image.width, x0 + width), min(image.height, y0 + height)
        if right > left and bottom > top:
            try:
                crop = image.crop(left, top, right - left, bottom - top).numpy()
            except Exception as exc:  # pyvips.Error and friends: a truncated file
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
                raise SlideError(f"cannot read image ({message})", path=self.path) from None
            out[top - y0 : bottom - y0, left - x0 : right - x0] = crop
        return Image.fromarray(out)

    def read_level_image(self, downsample: float, *, chunk: int = 2048) -> Any:
        """The whole slide at ``downsample`` level-0 px per output px, as an RGB array.

        Output size is ``ceil(dimensions / downsample)``; read in chunks of ``chunk`` output
        px from the best level, so memory stays at one chunk plus the result.
        """
        import numpy as np

        width0, height0 = self.dimensions
        out_w = max(1, math.ceil(width0 / downsample - 1e-9))
        out_h = max(1, math.ceil(height0 / downsample - 1e-9))
        choice = self._choose(float(downsample), 0.0)
        result = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for top in range(0, out_h, chunk):
            for left in range(0, out_w, chunk):
                w = min(chunk, out_w - left)
                h = min(chunk, out_h - top)
                image = self.read_pil(left * downsample, top * downsample, w, h, choice)
                result[top : top + h, left : left + w] = np.asarray(image)
        return result

    def thumbnail(self, *, max_size: int = 1024) -> Any:
        """The whole slide scaled to fit ``max_size`` px (longest side), RGB uint8 array."""
        width0, height0 = self.dimensions
        downsample = max(1.0, max(width0, height0) / float(max_size))
        return self.read_level_image(downsample)

    def associated_image(self, name: str) -> Any:
        """An associated image (``label``, ``macro``...) as an RGB uint8 array."""
        import numpy as np

        if self._backend != "openslide" or name not in self.associated_images:
            raise SlideError(f"no associated image {name!r}", path=self.path)
        return np.asarray(_rgba_on_white(self._handle.associated_images[name]))


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        width = height = size
    else:
        width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise ConfigError(f"region size must be positive, got {size}")
    return int(width), int(height)


def _rgba_on_white(rgba: Any) -> Any:
    """Composite a PIL RGBA image on white; RGB out (a no-copy-ish path when opaque)."""
    from PIL import Image

    if rgba.mode != "RGBA":
        return rgba.convert("RGB")
    low, _high = rgba.getchannel("A").getextrema()
    if low == 255:
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _float_property(properties: Any, key: str) -> float | None:
    value = properties.get(key)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def open_slide(path: str | Path, *, mpp: float | None = None, require_mpp: bool = True) -> Slide:
    """Open a whole-slide image or a plain image.

    Parameters
    ----------
    path
        A slide OpenSlide reads, or a PNG / JPEG / untiled TIFF (opened with pyvips).
    mpp
        Level-0 microns per pixel; overrides the metadata (``--slide-mpp``). Required for plain
        images and for slides whose metadata has none.
    require_mpp
        False opens a slide without mpp (``slide.mpp`` None) and takes an implausible mpp from
        the metadata as it is (to describe a slide, as ``histolib info`` does); True refuses
        both (:mod:`histolib.slide.mpp`).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        The file is missing, corrupt, of an unsupported format, or has no mpp (or one outside
        the plausible range) and none given (the message names ``--slide-mpp``).
    """
    path = Path(path)
    override = check_mpp(mpp)
    if not path.exists():
        raise SlideError("no such file", path=path)
    if path.is_dir():
        raise SlideError("is a folder, not a slide file", path=path)
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - a broken install
        raise SlideError(f"OpenSlide is not available ({exc})", path=path) from None

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError as exc:
        raise SlideError(f"not a readable slide ({exc})", path=path) from None
    if vendor is not None:
        return _open_openslide(path, vendor, override, require_mpp=require_mpp)
    if path.name.lower().endswith(PLAIN_EXTENSIONS):
        return _open_plain(path, override, require_mpp=require_mpp)
    raise SlideError(
        f"not a slide OpenSlide can read (corrupt file or unsupported format; OpenSlide: "
        f"{_openslide_says(path)})",
        path=path,
    )


def _openslide_says(path: Path) -> str:
    """OpenSlide's own words on why it cannot open ``path`` (one line)."""
    import openslide

    try:
        openslide.OpenSlide(str(path)).close()
    except Exception as exc:  # OpenSlide's errors, whatever their class
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return "no error"


def _metadata_mpp(
    path: Path, properties: dict[str, str], override: float | None, require_mpp: bool
) -> tuple[float | None, str | None]:
    """The level-0 mpp and where it comes from: the override, else the metadata (checked to be
    plausible when ``require_mpp``)."""
    import openslide

    from histolib.slide.mpp import check_plausible

    if override is not None:
        return override, "option"
    values = [
        v
        for v in (
            _float_property(properties, openslide.PROPERTY_NAME_MPP_X),
            _float_property(properties, openslide.PROPERTY_NAME_MPP_Y),
        )
        if v is not None
    ]
    if not values:
        if not require_mpp:
            return None, None
        raise SlideError(
            f"slide has no mpp (microns per pixel) in its metadata; {MPP_HINT}", path=path
        )
    mpp = sum(values) / len(values)
    if require_mpp:
        check_plausible(
            mpp,
            what="the slide's mpp (from its metadata)",
            path=path,
            error=SlideError,
            fix="give the true value with --slide-mpp",
        )
    return mpp, "metadata"


def _open_openslide(
    path: Path, vendor: str, override: float | None, *, require_mpp: bool = True
) -> Slide:
    import openslide

    try:
        handle = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SlideError(f"OpenSlide cannot read this {vendor} slide: {said}", path=path) from None
    properties = dict(handle.properties)
    try:
        mpp, source = _metadata_mpp(path, properties, override, require_mpp)
    except SlideError:
        handle.close()
        raise
    try:
        associated = tuple(sorted(handle.associated_images.keys()))
    except openslide.OpenSlideError:
        associated = ()
    return Slide(
        path,
        backend="openslide",
        handle=handle,
        mpp=mpp,
        mpp_source=source,
        level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
        level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        vendor=vendor,
        objective_power=_float_property(properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        associated_images=associated,
        properties=properties,
    )


def _check_plain_size(width: int, height: int, path: Path) -> None:
    """Refuse a plain image of more pixels than the ``slide_pixels`` limit, from its header:
    such an image is decoded whole (a 1.2 MB PNG of 20,000 x 20,000 px costs gigabytes)."""
    from histolib.core.limits import current, raise_hint

    limit = current().slide_pixels
    if width * height > limit:
        raise SlideError(
            f"plain image of {width} x {height} px ({width * height / 1e6:.0f} Mpx) is over the "
            f"limit of {limit:,} px for plain-image slides, which are decoded whole (convert "
            "it to a tiled pyramidal TIFF, or " + raise_hint("slide_pixels") + ")",
            path=path,
        )


def _open_plain(path: Path, override: float | None, *, require_mpp: bool = True) -> Slide:
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(path), access="random", fail=True)
    except pyvips.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise SlideError(f"not a readable image ({first})", path=path) from None
    _check_plain_size(image.width, image.height, path)
    if override is None and require_mpp:
        raise SlideError(f"plain image has no reliable mpp; {MPP_HINT}", path=path)
    try:
        if image.interpretation != "srgb" or image.format != "uchar":
            image = image.colourspace("srgb")
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])
        if image.bands == 1:
            image = image.bandjoin([image, image])
        if image.bands > 3:
            image = image.extract_band(0, n=3)
        if image.format != "uchar":
            image = image.cast("uchar")
    except pyvips.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported"
        raise SlideError(f"unsupported image layout ({first})", path=path) from None
    loader = str(image.get("vips-loader")) if "vips-loader" in image.get_fields() else ""
    properties = {"vips-loader": loader, "width": str(image.width), "height": str(image.height)}
    return Slide(
        path,
        backend="pyvips",
        handle=image,
        mpp=override,
        mpp_source=None if override is None else "option",
        level_dimensions=((image.width, image.height),),
        level_downsamples=(1.0,),
        vendor="image",
        objective_power=None,
        associated_images=(),
        properties=properties,
    )
