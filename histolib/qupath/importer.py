"""Turn QuPath GeoJSON exports (curated detections or cells) back into a histolib cell library.

A pathologist opens an exported library in QuPath, deletes wrong boxes, reclassifies cells,
maybe draws new ones, and exports the objects again. :func:`import_qupath` reads those files
(any form :func:`histolib.annotations.reading.read_annotations` accepts), keeps the
``detection`` and ``cell`` objects, and assigns each to the tile of the manifest that contains
its centre (the nucleus centre of a cell object, else the centre of its box; tiles are
half-open ``[x0, x0 + size * downsample)``).
Classes are mapped back to histolib labels through ``class_names``; objects outside every tile,
unclassified or of an unknown class are dropped and counted.

The box of each object is its bounding box in level-0 px; ``sigma`` and ``pass`` come from the
measurements histolib exported (a cell drawn in QuPath gets ``sigma`` from its nucleus circle
when it has one, else NaN, and the pass ``qupath``). Each row keeps the object's QuPath id in
the column ``object_id`` (None where the file had none), which ``export qupath`` writes back, so
the curated objects keep their identity through a round trip.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.errors import AnnotationError, ConfigError

IMPORTED_TYPES = ("detection", "cell")
_SUFFIXES = (".geojson.gz", ".json.gz", ".geojson", ".json", ".gz")


@dataclass
class ImportResult:
    """What :func:`import_qupath` wrote and what it dropped."""

    path: Path
    kept: Counter[str] = field(default_factory=Counter)
    outside: int = 0
    unclassified: int = 0
    unknown_classes: Counter[str] = field(default_factory=Counter)
    ignored_types: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of cells in the written library."""
        return sum(self.kept.values())


def slide_for_file(path: Path, slide_ids: Sequence[str]) -> str:
    """The slide a QuPath export belongs to: its name minus the GeoJSON suffix.

    With a single slide in the manifest, any file name is accepted.

    Raises
    ------
    AnnotationError
        When the name matches no slide of a manifest with several slides.
    """
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name in slide_ids:
        return name
    if len(slide_ids) == 1:
        return slide_ids[0]
    shown = ", ".join(sorted(slide_ids)[:5]) + (", ..." if len(slide_ids) > 5 else "")
    raise AnnotationError(
        f"file name matches no slide of the manifest ({shown}): name it <slide_id>.geojson",
        path=path,
    )


def _label_lookup(class_names: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    from histolib.library.cellio import CELL_LABELS

    exact = {label: label for label in CELL_LABELS}
    for label, qupath_name in class_names.items():
        exact[qupath_name] = label
    folded = {k.casefold(): v for k, v in exact.items()}
    return exact, folded


def _check_inputs(geojsons: Sequence[str | Path], out: Path) -> None:
    """Refuse a bad output name, no input, or a file given twice."""
    from histolib.library.cellio import LIBRARY_SUFFIXES

    if out.suffix.lower() not in LIBRARY_SUFFIXES:
        raise ConfigError(f"--out must end in {' or '.join(LIBRARY_SUFFIXES)}: {out}")
    if not geojsons:
        raise ConfigError("give at least one QuPath GeoJSON file")
    seen: set[Path] = set()
    for raw_path in geojsons:
        resolved = Path(raw_path).resolve()
        if resolved in seen:
            raise ConfigError("file given twice: its cells would be imported twice", path=raw_path)
        seen.add(resolved)


def _labelled(
    annotations: Sequence[Any], labels: tuple[dict[str, str], dict[str, str]], result: ImportResult
) -> list[tuple[Any, str]]:
    """The detections and cells with a known class, as ``(annotation, label)``; the rest are
    counted in ``result``."""
    exact, folded = labels
    objects = []
    for a in annotations:
        if a.object_type not in IMPORTED_TYPES:
            result.ignored_types[a.object_type] += 1
            continue
        if a.class_name is None:
            result.unclassified += 1
            continue
        label = exact.get(a.class_name) or folded.get(a.class_name.casefold())
        if label is None:
            result.unknown_classes[a.class_name] += 1
            continue
        objects.append((a, label))
    return objects


def _assign_tiles(centres: Any, tiles: Any) -> Any:
    """Index (row of ``tiles``) of the tile holding each centre, -1 when none does.

    Tiles are half-open squares: a centre on a shared edge belongs to the tile right of or
    below it; where tiles overlap, the first one in the manifest wins.
    """
    import numpy as np
    import shapely

    x0 = tiles["x0"].to_numpy(dtype=float)
    y0 = tiles["y0"].to_numpy(dtype=float)
    side = tiles["size_px"].to_numpy(dtype=float) * tiles["downsample"].to_numpy(dtype=float)
    squares = shapely.box(x0, y0, x0 + side, y0 + side)
    tree = shapely.STRtree(squares)
    obj_idx, tile_idx = tree.query(shapely.points(centres), predicate="intersects")
    cx, cy = centres[obj_idx, 0], centres[obj_idx, 1]
    inside = (
        (cx >= x0[tile_idx])
        & (cx < x0[tile_idx] + side[tile_idx])
        & (cy >= y0[tile_idx])
        & (cy < y0[tile_idx] + side[tile_idx])
    )
    obj_idx, tile_idx = obj_idx[inside], tile_idx[inside]
    assigned = np.full(len(centres), -1, dtype=np.int64)
    assigned[obj_idx[::-1]] = tile_idx[::-1]  # first match wins
    return assigned


def _sigmas(annotations: Sequence[Any], downsample: Any) -> Any:
    """LoG sigma per object (tile px): the exported measurement, else from the nucleus circle
    (NaN when neither)."""
    import numpy as np

    from histolib.qupath.features import circle_radius

    sigma = np.array([a.measurements.get("sigma", math.nan) for a in annotations])
    for j, a in enumerate(annotations):
        if not math.isfinite(sigma[j]) and a.nucleus is not None:
            sigma[j] = circle_radius(a.nucleus.area) / (math.sqrt(2.0) * downsample[j])
    return sigma


def _cells_frame(
    objects: Sequence[tuple[Any, str]], centres: Any, tiles: Any, slide_id: str
) -> Any:
    """The library rows of the objects of one slide assigned to ``tiles`` (one row each)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from histolib.qupath.features import PASS_CODES, UNKNOWN_PASS

    pass_names = {float(code): name for name, code in PASS_CODES.items()}
    annotations = [a for a, _ in objects]
    tds = tiles["downsample"].to_numpy(dtype=float)
    tx0 = tiles["x0"].to_numpy()
    ty0 = tiles["y0"].to_numpy()
    bounds = shapely.bounds([a.geometry for a in annotations])
    cx, cy = centres[:, 0], centres[:, 1]

    def local(values: Any, origin: Any) -> Any:
        return np.rint((values - origin) / tds).astype(np.int64)

    frame = {
        "tile_id": tiles["tile_id"].astype(str).to_numpy(),
        "slide_id": np.full(len(objects), slide_id, dtype=object),
        "label": [label for _, label in objects],
        "x": cx,
        "y": cy,
        "tile_x": (cx - tx0) / tds,
        "tile_y": (cy - ty0) / tds,
        "box_x0": local(bounds[:, 0], tx0),
        "box_y0": local(bounds[:, 1], ty0),
        "box_x1": local(bounds[:, 2], tx0),
        "box_y1": local(bounds[:, 3], ty0),
        "sigma": _sigmas(annotations, tds),
        "pass": [
            pass_names.get(a.measurements.get("pass", math.nan), UNKNOWN_PASS) for a in annotations
        ],
        "tile_x0": tx0.astype(np.int64),
        "tile_y0": ty0.astype(np.int64),
        "downsample": tds,
        "object_id": [a.id for a in annotations],  # kept by export qupath
    }
    geometry = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    return gpd.GeoDataFrame(frame, geometry=geometry)


def _slide_cells(
    objects: Sequence[tuple[Any, str]], tiles: Any, slide_id: str, result: ImportResult
) -> Any:
    """The library rows of one slide's labelled objects (None when none lies in a tile)."""
    import numpy as np
    import shapely

    centre_geoms = [a.nucleus if a.nucleus is not None else a.geometry for a, _ in objects]
    centres = shapely.get_coordinates(shapely.centroid(np.asarray(centre_geoms, dtype=object)))
    assigned = _assign_tiles(centres, tiles)
    result.outside += int((assigned < 0).sum())
    keep = np.flatnonzero(assigned >= 0)
    if not len(keep):
        return None
    kept = [objects[k] for k in keep]
    result.kept.update(label for _, label in kept)
    return _cells_frame(kept, centres[keep], tiles.iloc[assigned[keep]], slide_id)


def _library(frames: list[Any], result: ImportResult) -> Any:
    """One library of the per-slide frames, sorted by slide, tile and position."""
    import geopandas as gpd

    from histolib.library.cellio import LIBRARY_COLUMNS, empty_library

    if not frames:
        result.messages.append("no detection or cell object was kept: the library is empty")
        return empty_library()
    import pandas as pd

    library = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry")
    library = library.sort_values(["slide_id", "tile_id", "y", "x"], kind="stable")
    return library.reset_index(drop=True)[[*LIBRARY_COLUMNS, "object_id", "geometry"]]


def _report_dropped(result: ImportResult) -> None:
    """One message per reason objects were dropped or ignored."""
    if result.outside:
        result.messages.append(f"dropped {result.outside} object(s) outside every tile")
    if result.unclassified:
        result.messages.append(f"dropped {result.unclassified} unclassified object(s)")
    for name, n in sorted(result.unknown_classes.items()):
        result.messages.append(
            f"dropped {n} object(s) of class {name!r} (not cancer/normal nor in --class-names)"
        )
    if result.ignored_types:
        detail = ", ".join(f"{n} {t}" for t, n in sorted(result.ignored_types.items()))
        result.messages.append(f"ignored objects that are not detections or cells: {detail}")


def import_qupath(
    geojsons: Sequence[str | Path],
    *,
    tiles: str | Path,
    out: str | Path,
    class_names: Mapping[str, str] | None = None,
    progress: Any = None,
) -> ImportResult:
    """Import QuPath detections/cells into a cell library aligned with a tile manifest.

    Parameters
    ----------
    geojsons
        QuPath GeoJSON files, one or more per slide, named ``<slide_id>.geojson`` (any name
        when the manifest holds one slide).
    tiles
        The tile manifest the library refers to.
    out
        The library to write (``.parquet`` or ``.geojson``).
    class_names
        histolib label to QuPath class as used for the export (``{"cancer": "Tumor"}``);
        the labels ``cancer`` and ``normal`` are always recognised, classes compare exactly
        first, then case-insensitively.
    progress
        Optional Rich ``Progress``.

    Returns
    -------
    ImportResult
        The written path, counts kept by label and what was dropped.

    Raises
    ------
    AnnotationError, ManifestError, ConfigError
        For unreadable inputs, a file of no slide, or a bad output name.
    """
    from histolib.annotations.reading import read_annotations_report
    from histolib.library.cellio import write_library
    from histolib.tileset.manifest import read_manifest

    out = Path(out)
    _check_inputs(geojsons, out)
    class_names = dict(class_names or {})
    labels = _label_lookup(class_names)
    manifest, _ = read_manifest(tiles)
    manifest = manifest.reset_index(drop=True)
    slide_ids = sorted(manifest["slide_id"].astype(str).unique())
    result = ImportResult(path=out)
    task = None
    if progress is not None:
        task = progress.add_task("import qupath", total=len(geojsons))
    frames = []
    for raw_path in geojsons:
        path = Path(raw_path)
        slide_id = slide_for_file(path, slide_ids)
        annotations, notes = read_annotations_report(path)
        result.messages.extend(f"{path}: {note}" for note in notes)
        objects = _labelled(annotations, labels, result)
        if task is not None:
            progress.advance(task)
        if not objects:
            continue
        tiles_of_slide = manifest[manifest["slide_id"].astype(str) == slide_id]
        frame = _slide_cells(objects, tiles_of_slide, slide_id, result)
        if frame is not None:
            frames.append(frame)
    library = _library(frames, result)
    _report_dropped(result)
    params = {
        "source": "qupath",
        "inputs": [str(p) for p in geojsons],
        "tiles": str(tiles),
        "class_names": class_names,
    }
    write_library(library, out, params=params)
    return result
