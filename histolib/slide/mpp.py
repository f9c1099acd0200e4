"""Plausible scales: an mpp outside microscopy's range, or a large enlargement, is refused.

Microscopes image at about 0.1 to 10 um/px (100x oil to a 1x overview); :data:`MIN_MPP` to
:data:`MAX_MPP` (0.05 to 50 um/px) leaves room on both sides. An mpp outside it is nearly always
a mistake: a generic TIFF whose resolution tags are a 72-dpi placeholder reads as 352.8 um/px,
``--mpp 0.001`` asks for a grid of billions of tiles. Such values are refused with a one-line
error unless the user insists with the global ``histolib --any-mpp`` (``HISTOLIB_ANY_MPP=1``).

Reading a slide at a finer mpp than it was scanned at enlarges it; more than
``upsampling`` times (default 4: a 2 um/px scan read at 0.5 um/px) is refused too: it invents
pixels, and ``--slide-mpp 20`` meant as "20x" enlarges a slide 40x for 0.5 um/px tiles. The
global ``histolib --max-upsampling X`` raises the cap (:mod:`histolib.core.limits`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from histolib.core.limits import current, raise_hint
from histolib.core.options import option
from histolib.errors import ConfigError, HistolibError, SlideError

MIN_MPP = 0.05
MAX_MPP = 50.0
#: The finest and coarsest mpp an option takes even with ``--any-mpp`` (beyond them a tile
#: grid or a tissue mask would not fit in memory).
MIN_ANY_MPP = 1e-3
MAX_ANY_MPP = 1e3
#: Resolutions of image editors and scanners that TIFF writers put in place of a real scale.
PLACEHOLDER_DPI = (72, 96, 150, 200, 300, 600)


def mpp_option(
    default: float | None, *, help: str, cli: str, strict: bool = False, hint: str = ""
) -> Any:
    """An :func:`~histolib.core.options.option` of microns per pixel, in
    ``[MIN_ANY_MPP, MAX_ANY_MPP]``."""
    return option(
        default, help=help, cli=cli, strict=strict, ge=MIN_ANY_MPP, le=MAX_ANY_MPP, hint=hint
    )


def is_plausible(mpp: float) -> bool:
    """Whether ``mpp`` lies in the plausible range of microscopy (:data:`MIN_MPP`..
    :data:`MAX_MPP` um/px)."""
    return MIN_MPP <= mpp <= MAX_MPP


def _placeholder(mpp: float) -> str:
    """A hint when ``mpp`` is what an N-dpi placeholder resolution gives."""
    dpi = 25400.0 / mpp
    for value in PLACEHOLDER_DPI:
        if abs(dpi - value) < 0.01 * value:
            return f" (that is {value} dpi: a placeholder resolution, not a microscope's)"
    return ""


def check_plausible(
    mpp: float,
    *,
    what: str,
    path: str | Path | None = None,
    error: type[HistolibError] = ConfigError,
    fix: str = "",
) -> float:
    """``mpp`` when it is plausible or ``histolib --any-mpp`` is in force, else an ``error``.

    Parameters
    ----------
    mpp
        A positive, finite mpp.
    what
        What the value is, for the message (``"--mpp"``, ``"the slide's mpp (metadata)"``).
    path
        The file the value belongs to.
    error
        The error class raised.
    fix
        What the user should do first (e.g. ``"give the true value with --slide-mpp"``).
    """
    if is_plausible(mpp) or current().any_mpp:
        return mpp
    advice = f"{fix}; " if fix else ""
    raise error(
        f"{what} is {mpp:.4g} um/px{_placeholder(mpp)}, outside the plausible range of "
        f"microscopy ({MIN_MPP:g}..{MAX_MPP:g} um/px); {advice}" + raise_hint("any_mpp"),
        path=path,
    )


def check_upsampling(
    downsample: float, *, target_mpp: float, slide_mpp: float, path: str | Path | None = None
) -> None:
    """Refuse reading a slide of ``slide_mpp`` at ``target_mpp`` when that enlarges it more
    than the ``upsampling`` limit (``downsample`` = level-0 px per output px).

    Raises
    ------
    SlideError
        Naming the enlargement, the limit and the option that raises it.
    """
    limit = current().upsampling
    if not math.isfinite(downsample) or downsample <= 0:
        raise SlideError(f"cannot read at {target_mpp:g} um/px (scale {downsample})", path=path)
    if downsample * limit >= 1.0 - 1e-9:
        return
    raise SlideError(
        f"reading this {slide_mpp:.4g} um/px slide at {target_mpp:.4g} um/px enlarges it "
        f"{1.0 / downsample:.3g}x, more than the limit of {limit:g}x: is the slide's mpp right? "
        "(--slide-mpp takes microns per pixel: 0.25 for 40x, 0.5 for 20x); "
        + raise_hint("upsampling"),
        path=path,
    )
