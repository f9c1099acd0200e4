"""What a view shows: its slides and overlays, opened once from the files the user named.

:class:`ViewOptions` holds the inputs of ``histolib view`` (the same for
:func:`~histolib.view.serve` and :func:`~histolib.view.export`), each option's flag, help and
range declared on its field; :func:`open_scene` opens the slides as :class:`DeepZoomSlide`
objects under opaque ids (``s0``, ``s1``: no request ever names a file) and builds the
overlay layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.core.options import (
    check_ranges,
    document_options,
    non_negative_option,
    option,
    option_specs,
)
from histolib.errors import ConfigError
from histolib.slide.mpp import mpp_option
from histolib.view.deepzoom import DEFAULT_CACHE_MB, DeepZoomSlide, TileCache

#: The folder of the tiles of slide ``sN`` (served and exported alike): ``dzi/sN_files/``.
DZI_FOLDER = "dzi"


@document_options
@dataclass(frozen=True)
class ViewOptions:
    """The inputs of a view (``histolib view``'s arguments and options): each option with its
    flag, help and range; ``slide`` and ``virtual`` are the command's arguments."""

    slide: Path = option(help="The H&E slide (any format histolib reads).")
    virtual: Path | None = option(
        None, help="Its virtual IHC slide (histolib transfer's TIFF), shown in lock-step."
    )
    annotations: Path | None = option(
        None, help="Expert contours (QuPath GeoJSON, ASAP or ImageScope XML).", cli="--annotations"
    )
    tiles: Path | None = option(
        None, help="A tile manifest: tiles coloured by label.", cli="--tiles"
    )
    library: Path | None = option(
        None, help="A cell library: cell boxes by class (cancer / normal).", cli="--library"
    )
    evaluation: Path | None = option(
        None,
        help="An evaluation folder (tiles.csv): per-tile DICE as a heat map (needs --tiles).",
        cli="--evaluation",
    )
    slide_mpp: float | None = mpp_option(
        None,
        help="Level-0 microns per pixel of both slides (for the scale bar).",
        cli="--slide-mpp",
    )
    cache_mb: int = non_negative_option(
        DEFAULT_CACHE_MB, help="Memory bound of the served tile cache, MiB.", cli="--cache-mb"
    )
    title: str | None = option(None, help="The page's title (default: the slide's id).")

    def __post_init__(self) -> None:
        for spec in option_specs(ViewOptions):  # paths given as text become paths
            value = getattr(self, spec.name)
            if spec.base is Path and isinstance(value, str):
                object.__setattr__(self, spec.name, Path(value))
        check_ranges(self)
        if self.evaluation is not None and self.tiles is None:
            raise ConfigError(
                "--evaluation needs --tiles (the manifest places the evaluated tiles)"
            )


@dataclass
class Scene:
    """The opened slides (by id) and the overlay layers of a view."""

    title: str
    slides: dict[str, DeepZoomSlide]
    names: dict[str, str]
    layers: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        """Release every slide."""
        for slide in self.slides.values():
            slide.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scale(self, key: str) -> float:
        """Level-0 px of slide ``key`` per level-0 px of the first slide (the frame of the
        overlays and of the lock-step): the ratio of their mpp, or of their widths when one
        has none (a virtual IHC covers the tissue of its H&E, at its own resolution)."""
        first, slide = self.slides["s0"], self.slides[key]
        if first.mpp and slide.mpp:
            return first.mpp / slide.mpp
        return slide.dimensions[0] / first.dimensions[0]

    def document(self) -> dict[str, Any]:
        """The page's data: slides (size, mpp, inline DZI descriptor) and overlay layers."""
        slides = [
            {
                "id": key,
                "name": self.names[key],
                "width": slide.dimensions[0],
                "height": slide.dimensions[1],
                "mpp": slide.mpp,
                "scale": self.scale(key),
                "tileSource": slide.descriptor(f"{DZI_FOLDER}/{key}_files/"),
            }
            for key, slide in self.slides.items()
        ]
        return {"title": self.title, "slides": slides, "layers": self.layers}


def build_layers(options: ViewOptions, slide_id: str) -> list[dict[str, Any]]:
    """The overlay layers the options name, for the slide ``slide_id``."""
    from histolib.view import overlays

    layers = []
    if options.annotations is not None:
        layers.append(overlays.contour_layer(options.annotations))
    if options.tiles is not None:
        layers.append(overlays.tile_layer(options.tiles, slide_id))
    if options.library is not None:
        layers.append(overlays.cell_layer(options.library, slide_id))
    if options.evaluation is not None and options.tiles is not None:
        layers.extend(overlays.dice_layers(options.evaluation, options.tiles, slide_id))
    for layer in layers:  # the heat maps cover the tiles: one is shown at first
        layer["visible"] = layer["kind"] != "dice" or layer["id"] == "dice0"
        if layer["kind"] == "tiles":
            layer["visible"] = not any(other["kind"] == "dice" for other in layers)
    return layers


def open_scene(options: ViewOptions, *, cache: TileCache | None = None) -> Scene:
    """Open the slides of ``options`` and read its overlays (errors name the file)."""
    slides: dict[str, DeepZoomSlide] = {}
    names: dict[str, str] = {}
    try:
        for index, path in enumerate(p for p in (options.slide, options.virtual) if p):
            key = f"s{index}"
            slides[key] = DeepZoomSlide(path, mpp=options.slide_mpp, cache=cache, key=key)
            names[key] = ("H&E: " if index == 0 else "virtual IHC: ") + Path(path).name
        main = slides["s0"]
        title = options.title or main.slide_id
        return Scene(title, slides, names, build_layers(options, main.slide_id))
    except BaseException:
        for slide in slides.values():
            slide.close()
        raise
