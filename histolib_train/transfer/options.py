"""The options of restaining (``histolib transfer``): each with its default, help, flag and
range.

:class:`TransferOptions` is the one declaration of how a slide or a folder of tiles is
restained, besides the input, the output and where it runs: the command's flags are written
from its fields, :func:`~histolib_train.transfer.restaining.restain` takes it, and it is sent
as is to a cluster worker (it pickles). ``mpp``, ``tile_size`` and ``overlap`` left None are
filled in from the checkpoint, else from :data:`DEFAULT_MPP`, :data:`DEFAULT_TILE_SIZE` and
:data:`DEFAULT_OVERLAP` (:func:`~histolib_train.transfer.restaining.window_settings`).

Importing this module imports neither numpy nor torch (the command line reads it at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from histolib.core.options import (
    check_ranges,
    count_option,
    document_options,
    non_negative_option,
    option,
)
from histolib.slide.mpp import mpp_option
from histolib.tiling.options import tile_size_option

DEFAULT_MPP = 0.5
"""Microns per pixel when neither the options nor the checkpoint give one."""
DEFAULT_TILE_SIZE = 256
"""Window side (px) when neither the options nor the checkpoint give one."""
DEFAULT_OVERLAP = 64
"""Overlap (px) of neighbouring windows, at most a quarter of the window."""


@document_options
@dataclass(frozen=True)
class TransferOptions:
    """How to restain (the generator, the device, the windows and, for a slide, its reading,
    tissue and glass); the slide-only fields are ignored for a folder of tiles."""

    direction: Literal["he2ihc", "ihc2he"] = option(
        "he2ihc", help="he2ihc or ihc2he.", cli="--direction"
    )
    mpp: float | None = mpp_option(
        None, help="Microns per pixel to run at (default: the checkpoint's, else 0.5).", cli="--mpp"
    )
    overlap: int | None = non_negative_option(
        None,
        help="Pixels shared by neighbouring windows (default: 64, at most a quarter window).",
        cli="--overlap",
    )
    tile_size: int | None = tile_size_option(
        None, help="Window side in px (default: the checkpoint's, else 256).", cli="--tile-size"
    )
    batch_size: int = count_option(8, help="Windows per generator call.", cli="--batch-size")
    device: str = option("auto", help="auto, cpu or cuda.", cli="--device")
    slide_mpp: float | None = mpp_option(
        None, help="Level-0 mpp of a slide whose metadata lacks it.", cli="--slide-mpp"
    )
    tissue: bool = option(
        True, help="Skip windows without tissue (left white).", cli="--tissue/--no-tissue"
    )
    glass: Literal["white", "keep"] = option(
        "white",
        help="white: glass stays white (generator output faded out past the tissue edge); "
        "keep: the generator's output wherever a window ran.",
        cli="--glass",
    )
    amp: bool = option(
        True,
        help="Mixed precision: on CUDA bf16 from compute capability 8.0, else fp16.",
        cli="--amp/--no-amp",
    )
    amp_dtype: Literal["auto", "bf16", "fp16"] = option(
        "auto", help="auto, bf16 or fp16 (any device, the CPU included).", cli="--amp-dtype"
    )
    overwrite: bool = option(False, help="Redo an existing output.", cli="--overwrite")

    def __post_init__(self) -> None:
        check_ranges(self)
