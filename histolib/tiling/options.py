"""The options of a tiling run (``histolib tile``): each with its default, help and flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from histolib.core.options import (
    check_ranges,
    count_option,
    document_options,
    fraction_option,
    non_negative_option,
    option,
    options_dict,
    seed_option,
)
from histolib.errors import ConfigError
from histolib.slide.mpp import MAX_MPP, MIN_MPP, mpp_option
from histolib.slide.reader import DEFAULT_MPP_TOLERANCE, check_mpp
from histolib.slide.tissue import DEFAULT_MAX_HOLE_UM2, DEFAULT_MIN_REGION_UM2

#: ``image_format`` -> file extension of the tiles ("" = no tile images).
IMAGE_FORMATS = {"png": "png", "jpeg": "jpg", "none": ""}
#: The largest tile side in px (``--size``, ``transfer --tile-size``): a 4096 px tile is the
#: largest image the default ``--max-image-pixels`` reads back.
MAX_TILE_SIZE = 4096
MIN_TILE_SIZE = 8


def tile_size_option(default: int | None, **keywords: Any) -> Any:
    """An :func:`~histolib.core.options.option` of a tile side in px, in
    ``[MIN_TILE_SIZE, MAX_TILE_SIZE]``; ``keywords`` are ``option``'s."""
    return option(default, ge=MIN_TILE_SIZE, le=MAX_TILE_SIZE, **keywords)


ANY_MPP_HINT = (
    f"outside the plausible range of microscopy ({MIN_MPP:g}..{MAX_MPP:g} um/px) and beyond "
    "what --any-mpp accepts"
)


@document_options
@dataclass(frozen=True)
class TilingOptions:
    """Every parameter of a tiling run (recorded in the manifest metadata; all are strict: a
    slide finished with other values is tiled again)."""

    stain: Literal["he", "ihc"] = option(
        "he",
        help="he or ihc (IHC without contours is labelled from DAB).",
        cli="--stain",
        strict=True,
    )
    mpp: float = mpp_option(
        0.5, help="Microns per tile pixel (0.5 = 20x).", cli="--mpp", strict=True, hint=ANY_MPP_HINT
    )
    size: int = tile_size_option(256, help="Tile side in px.", cli="--size", strict=True)
    slide_mpp: float | None = mpp_option(
        None,
        help="Level-0 microns per pixel of the slides (overrides; needed for plain images).",
        cli="--slide-mpp",
        strict=True,
        hint=ANY_MPP_HINT,
    )
    min_tissue: float = non_negative_option(
        0.5, help="Minimum tissue fraction of a tile.", cli="--min-tissue", strict=True, le=1
    )
    balance: bool = option(
        False,
        help="As many positive as negative tiles per slide (seeded).",
        cli="--balance",
        strict=True,
    )
    max_tiles: int | None = count_option(
        None, help="At most N tiles per slide (seeded draw).", cli="--max-tiles", strict=True
    )
    seed: int = seed_option(0, help="Seed of --balance / --max-tiles draws.", strict=True)
    image_format: Literal["png", "jpeg", "none"] = option(
        "png",
        help="png, jpeg or none (manifest of coordinates only).",
        cli="--format",
        strict=True,
        aliases={"jpg": "jpeg"},
    )
    positive_classes: tuple[str, ...] | None = option(
        None,
        help="Contour class meaning tumour (repeatable; default: every annotation).",
        cli="--positive-class",
        strict=True,
    )
    positive_fraction: float = fraction_option(
        0.5,
        help="Fraction of a tile inside the contours from which it is positive.",
        cli="--positive-fraction",
        strict=True,
    )
    dab_fraction: float = fraction_option(
        0.1,
        help="IHC: fraction of DAB-positive pixels from which a tile is positive.",
        cli="--dab-fraction",
        strict=True,
    )
    png_compression: int = non_negative_option(
        1, help="zlib level of PNG tiles (1 = fast).", cli="--png-compression", strict=True, le=9
    )
    jpeg_quality: int = count_option(
        90, help="JPEG quality.", cli="--jpeg-quality", strict=True, le=100
    )
    mpp_tolerance: float = option(
        DEFAULT_MPP_TOLERANCE,
        help="Read a level within this relative mpp distance of --mpp unresampled "
        "(e.g. 0.01 takes 0.499 um/px as 0.5).",
        cli="--mpp-tolerance",
        strict=True,
        ge=0,
        lt=0.5,
    )
    min_region_um2: float = non_negative_option(
        DEFAULT_MIN_REGION_UM2,
        help="Smallest tissue region kept, um^2.",
        cli="--min-region-area",
        strict=True,
    )
    max_hole_um2: float = non_negative_option(
        DEFAULT_MAX_HOLE_UM2,
        help="Largest hole in tissue filled, um^2.",
        cli="--max-hole-area",
        strict=True,
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    def validate(self, *, labelled: bool) -> None:
        """Raise ConfigError for what the ranges cannot say: an mpp outside microscopy's
        plausible range without ``histolib --any-mpp``, ``--balance`` without labels."""
        check_mpp(self.mpp, what="--mpp")
        check_mpp(self.slide_mpp)
        if self.balance and not labelled:
            raise ConfigError(
                "--balance needs labels: give --annotations, or --stain ihc (labels from DAB)"
            )

    def as_params(self) -> dict[str, Any]:
        """Every option, JSON-ready (the manifest's ``params``)."""
        return options_dict(self)
