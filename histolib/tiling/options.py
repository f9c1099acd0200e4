"""The options of a tiling run (``histolib tile``): each with its default, help and flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from histolib.core.options import document_options, option, options_dict
from histolib.errors import ConfigError
from histolib.slide.reader import DEFAULT_MPP_TOLERANCE, check_mpp
from histolib.slide.tissue import DEFAULT_MAX_HOLE_UM2, DEFAULT_MIN_REGION_UM2
from histolib.stain import STAINS

#: ``image_format`` -> file extension of the tiles ("" = no tile images).
IMAGE_FORMATS = {"png": "png", "jpeg": "jpg", "none": ""}


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
    mpp: float = option(0.5, help="Microns per tile pixel (0.5 = 20x).", cli="--mpp", strict=True)
    size: int = option(256, help="Tile side in px.", cli="--size", strict=True)
    slide_mpp: float | None = option(
        None,
        help="Level-0 microns per pixel of the slides (overrides; needed for plain images).",
        cli="--slide-mpp",
        strict=True,
    )
    min_tissue: float = option(
        0.5, help="Minimum tissue fraction of a tile.", cli="--min-tissue", strict=True
    )
    balance: bool = option(
        False,
        help="As many positive as negative tiles per slide (seeded).",
        cli="--balance",
        strict=True,
    )
    max_tiles: int | None = option(
        None, help="At most N tiles per slide (seeded draw).", cli="--max-tiles", strict=True
    )
    seed: int = option(0, help="Seed of --balance / --max-tiles draws.", cli="--seed", strict=True)
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
    positive_fraction: float = option(
        0.5,
        help="Fraction of a tile inside the contours from which it is positive.",
        cli="--positive-fraction",
        strict=True,
    )
    dab_fraction: float = option(
        0.1,
        help="IHC: fraction of DAB-positive pixels from which a tile is positive.",
        cli="--dab-fraction",
        strict=True,
    )
    png_compression: int = option(
        1, help="zlib level of PNG tiles, 0-9 (1 = fast).", cli="--png-compression", strict=True
    )
    jpeg_quality: int = option(
        90, help="JPEG quality, 1-100.", cli="--jpeg-quality", strict=True
    )
    mpp_tolerance: float = option(
        DEFAULT_MPP_TOLERANCE,
        help="Read a level within this relative mpp distance of --mpp unresampled "
        "(e.g. 0.01 takes 0.499 um/px as 0.5).",
        cli="--mpp-tolerance",
        strict=True,
    )
    min_region_um2: float = option(
        DEFAULT_MIN_REGION_UM2,
        help="Smallest tissue region kept, um^2.",
        cli="--min-region-area",
        strict=True,
    )
    max_hole_um2: float = option(
        DEFAULT_MAX_HOLE_UM2,
        help="Largest hole in tissue filled, um^2.",
        cli="--max-hole-area",
        strict=True,
    )

    def validate(self, *, labelled: bool) -> None:
        """Raise ConfigError for an invalid option or combination."""
        if self.stain not in STAINS:
            raise ConfigError(f"--stain must be he or ihc, got {self.stain!r}")
        check_mpp(self.mpp, what="--mpp")
        check_mpp(self.slide_mpp)
        if not isinstance(self.size, int) or self.size < 8:
            raise ConfigError(f"--size must be an integer >= 8 px, got {self.size!r}")
        self._check_fractions()
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ConfigError(f"--max-tiles must be >= 1, got {self.max_tiles}")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--format must be png, jpeg or none, got {self.image_format!r}")
        if not 0 <= self.png_compression <= 9:
            raise ConfigError(f"--png-compression must be 0..9, got {self.png_compression}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.mpp_tolerance < 0.5:
            raise ConfigError(f"--mpp-tolerance must be in [0, 0.5), got {self.mpp_tolerance}")
        if self.min_region_um2 < 0 or self.max_hole_um2 < 0:
            raise ConfigError("tissue areas (--min-region-area, --max-hole-area) must be >= 0")
        if self.balance and not labelled:
            raise ConfigError(
                "--balance needs labels: give --annotations, or --stain ihc (labels from DAB)"
            )

    def _check_fractions(self) -> None:
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"--min-tissue must be in [0, 1], got {self.min_tissue}")
        if not 0.0 < self.positive_fraction <= 1.0:
            raise ConfigError(
                f"--positive-fraction must be in (0, 1], got {self.positive_fraction}"
            )
        if not 0.0 < self.dab_fraction <= 1.0:
            raise ConfigError(f"--dab-fraction must be in (0, 1], got {self.dab_fraction}")

    def as_params(self) -> dict[str, Any]:
        """Every option, JSON-ready (the manifest's ``params``)."""
        return options_dict(self)

