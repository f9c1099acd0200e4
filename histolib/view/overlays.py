"""The viewer's overlays as GeoJSON layers, in level-0 slide pixels.

Each builder reads one of histolib's products with histolib's own reader and returns a layer:
a dict with ``id``, ``name``, ``kind``, ``legend`` (label -> CSS colour) and ``geojson`` (a
FeatureCollection whose features carry ``stroke``, optionally ``fill``, and a ``label``):

- :func:`contour_layer`: expert contours, any format :func:`histolib.annotations.read_annotations`
  reads (QuPath GeoJSON, ASAP XML, ImageScope XML);
- :func:`tile_layer`: the tiles of a manifest coloured by label;
- :func:`cell_layer`: the cell boxes of a library coloured by class (cancer / normal);
- :func:`dice_layers`: the evaluation's per-tile DICE (``tiles.csv``) as a heat map, one layer
  per checkpoint, the tiles placed by the manifest.

Rows of other slides are left out (a manifest, library or evaluation may span many slides).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from histolib.errors import InputError

#: Colours of tile labels and cell classes (a label not listed gets :data:`OTHER_COLOUR`).
LABEL_COLOURS = {
    "tumour": "#e0301e",
    "tumor": "#e0301e",
    "cancer": "#e0301e",
    "positive": "#e0301e",
    "normal": "#1f77b4",
    "non-tumour": "#1f77b4",
    "negative": "#1f77b4",
    "boundary": "#ff9f1c",
    "mixed": "#ff9f1c",
    "background": "#9e9e9e",
}
OTHER_COLOUR = "#9467bd"
CONTOUR_COLOUR = "#00c800"
#: Coordinates are rounded to this many decimals (a tenth of a level-0 pixel).
DECIMALS = 1


def label_colour(label: Any) -> str:
    """The CSS colour of a tile label or cell class."""
    return LABEL_COLOURS.get(str(label).lower(), OTHER_COLOUR)


def dice_colour(value: float) -> str:
    """A red (0) - yellow (0.5) - green (1) ramp of a DICE score; grey when undefined."""
    if value is None or not math.isfinite(value):
        return "#9e9e9e"
    v = min(1.0, max(0.0, float(value)))
    red = 255 if v < 0.5 else round(255 * (1 - v) * 2)
    green = round(255 * v * 2) if v < 0.5 else 200
    return f"#{red:02x}{green:02x}00"


def _rounded(coords: Any) -> Any:
    if isinstance(coords, (int, float)):
        return round(float(coords), DECIMALS)
    return [_rounded(c) for c in coords]


def _feature(geometry: Any, **properties: Any) -> dict[str, Any] | None:
    """A GeoJSON feature of a polygonal geometry (None for a geometry with no area)."""
    from shapely.geometry import mapping

    from histolib.annotations.model import polygonal_part

    part = polygonal_part(geometry)
    if part is None or part.is_empty:
        return None
    doc = mapping(part)
    return {
        "type": "Feature",
        "geometry": {"type": doc["type"], "coordinates": _rounded(doc["coordinates"])},
        "properties": properties,
    }


def _layer(
    layer_id: str, name: str, kind: str, features: Iterable[dict[str, Any] | None], legend: Any
) -> dict[str, Any]:
    kept = [f for f in features if f is not None]
    return {
        "id": layer_id,
        "name": name,
        "kind": kind,
        "legend": dict(legend),
        "count": len(kept),
        "geojson": {"type": "FeatureCollection", "features": kept},
    }


def _for_slide(gdf: Any, slide_id: str, path: Path, what: str) -> Any:
    """The rows of ``slide_id`` (InputError when the file has rows but none of it)."""
    rows = gdf[gdf["slide_id"].astype(str) == slide_id]
    if len(gdf) and not len(rows):
        ids = sorted(set(gdf["slide_id"].astype(str)))[:3]
        raise InputError(f"{what} has no rows of slide {slide_id!r} (it has {ids}...)", path=path)
    return rows


def contour_layer(path: str | Path) -> dict[str, Any]:
    """Expert contours: every polygonal object of an annotation file, in its own colour."""
    from histolib.annotations import read_annotations

    features = []
    legend: dict[str, str] = {}
    for ann in read_annotations(path):
        colour = "#{:02x}{:02x}{:02x}".format(*ann.color) if ann.color else CONTOUR_COLOUR
        label = ann.class_name or "unclassified"
        legend.setdefault(label, colour)
        features.append(_feature(ann.geometry, label=label, stroke=colour))
    return _layer("contours", "Expert contours", "contours", features, legend)


def tile_layer(path: str | Path, slide_id: str) -> dict[str, Any]:
    """The tiles of a manifest, outlined and lightly filled in the colour of their label."""
    from histolib.tileset.manifest import read_manifest

    gdf, _ = read_manifest(path)
    rows = _for_slide(gdf, slide_id, Path(path), "the tile manifest")
    labels = sorted(set(rows["label"].astype(str)))
    features = (
        _feature(geom, label=str(label), stroke=label_colour(label), fill=label_colour(label))
        for geom, label in zip(rows.geometry, rows["label"], strict=True)
    )
    legend = {label: label_colour(label) for label in labels}
    return _layer("tiles", "Tiles by label", "tiles", features, legend)


def cell_layer(path: str | Path, slide_id: str) -> dict[str, Any]:
    """The cell boxes of a library, coloured by class (cancer / normal)."""
    from histolib.library.cellio import CELL_LABELS, read_library

    gdf, _ = read_library(path)
    rows = _for_slide(gdf, slide_id, Path(path), "the cell library")
    features = (
        _feature(geom, label=str(label), stroke=label_colour(label))
        for geom, label in zip(rows.geometry, rows["label"], strict=True)
    )
    legend = {label: label_colour(label) for label in CELL_LABELS}
    return _layer("cells", "Cells by class", "cells", features, legend)


def read_dice_rows(evaluation: str | Path) -> list[dict[str, str]]:
    """The rows of an evaluation's ``tiles.csv`` (``evaluation``: its folder or the file)."""
    path = Path(evaluation)
    if path.is_dir():
        path = path / "tiles.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"checkpoint", "tile_id", "slide_id", "dice"} - set(reader.fieldnames or ())
            if missing:
                raise InputError(f"not an evaluation's tiles.csv (no {sorted(missing)})", path=path)
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the evaluation ({exc})", path=path) from None


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def dice_label(dice: float, dice_empty0: float | None) -> str:
    """A tile's label: its ``dice`` and, from an evaluation that has it, its ``dice_empty0``
    (the two differ on a tile with no stain in the truth and none predicted: 1 and 0)."""
    if math.isnan(dice):
        return "n/a"
    if dice_empty0 is None or math.isnan(dice_empty0):
        return f"dice {dice:.3f}"
    return f"dice {dice:.3f}, dice_empty0 {dice_empty0:.3f}"


def dice_layers(evaluation: str | Path, manifest: str | Path, slide_id: str) -> list[dict]:
    """One heat-map layer per checkpoint of the evaluation: each scored tile of ``slide_id``
    filled in the colour of its ``dice``, labelled with both conventions (:func:`dice_label`),
    placed by the manifest's tile squares."""
    from histolib.tileset.manifest import read_manifest

    gdf, _ = read_manifest(manifest)
    squares = dict(zip(gdf["tile_id"].astype(str), gdf.geometry, strict=True))
    by_checkpoint: dict[str, list[dict[str, Any] | None]] = {}
    unplaced = 0
    for row in read_dice_rows(evaluation):
        if row["slide_id"] != slide_id:
            continue
        square = squares.get(row["tile_id"])
        if square is None:
            unplaced += 1
            continue
        dice = _number(row["dice"])
        colour = dice_colour(dice)
        label = dice_label(dice, _number(row.get("dice_empty0")) if "dice_empty0" in row else None)
        by_checkpoint.setdefault(row["checkpoint"], []).append(
            _feature(
                square,
                label=label,
                value=dice if math.isfinite(dice) else None,
                stroke=colour,
                fill=colour,
            )
        )
    if unplaced and not by_checkpoint:
        raise InputError(
            f"none of the evaluation's tiles of {slide_id!r} are in the manifest {manifest}",
            path=evaluation,
        )
    legend = {"DICE 0": dice_colour(0.0), "DICE 0.5": dice_colour(0.5), "DICE 1": dice_colour(1)}
    many = len(by_checkpoint) > 1
    return [
        _layer(
            f"dice{i}",
            f"DICE: {name}" if many else "DICE per tile",
            "dice",
            features,
            legend,
        )
        for i, (name, features) in enumerate(sorted(by_checkpoint.items()))
    ]
