"""The options of ``histolib synth``: each with its default, help, flag and range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from histolib.core.options import (
    check_ranges,
    document_options,
    non_negative_option,
    option,
    seed_option,
)
from histolib.slide.mpp import MAX_ANY_MPP, MIN_ANY_MPP

#: The smallest and largest side of a synthetic slide, px (the largest renders about 12 GB).
MIN_SIDE = 64
MAX_SIDE = 65536
#: The most tumour nests a slide holds.
MAX_TUMOURS = 1000


@document_options
@dataclass(frozen=True)
class SynthOptions:
    """What ``histolib synth`` renders (:func:`histolib.synthetic.slides.make_slide` takes the
    same values as keywords: :meth:`layout_keywords` and, for each stain, :meth:`stem`)."""

    stain: Literal["he", "ihc", "both"] = option(
        "both", help="he, ihc or both (a registered pair).", cli="--stain"
    )
    width: int = option(4096, help="Level-0 width in px.", cli="--width", ge=MIN_SIDE, le=MAX_SIDE)
    height: int = option(
        4096, help="Level-0 height in px.", cli="--height", ge=MIN_SIDE, le=MAX_SIDE
    )
    mpp: float = option(
        0.5, help="Microns per pixel at level 0.", cli="--mpp", gt=MIN_ANY_MPP, le=MAX_ANY_MPP
    )
    seed: int = seed_option(0, help="Random seed of the layout.")
    name: str | None = option(
        None,
        help="File stem (default `synthetic_<stain>_<seed>`; with --stain both, `<name>_he` "
        "and `<name>_ihc`).",
        cli="--name",
    )
    tumours: int | None = non_negative_option(
        None,
        help="Number of tumour nests (default: scaled to the tissue).",
        cli="--tumours",
        le=MAX_TUMOURS,
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def stains(self) -> tuple[str, ...]:
        """The stains rendered: ``("he", "ihc")`` for ``both``."""
        return ("he", "ihc") if self.stain == "both" else (self.stain,)

    def layout_keywords(self) -> dict[str, Any]:
        """The keywords of :func:`~histolib.synthetic.slides.make_slide` that set the layout
        (the same for each stain: a registered pair)."""
        return {
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "seed": self.seed,
            "n_tumours": self.tumours,
        }

    def stem(self, stain: str) -> str | None:
        """The file stem of the ``stain`` slide (None: the default name)."""
        if self.name is None or len(self.stains) == 1:
            return self.name
        return f"{self.name}_{stain}"
