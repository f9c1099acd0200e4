"""Turn QuPath GeoJSON exports (curated detections or cells) back into a histolib cell library.

A pathologist opens an exported library in QuPath, deletes wrong boxes, reclassifies cells,
maybe draws new ones, and exports the objects again. :func:`import_qupath` reads those files
(any form :mod:`histolib.annotations.reading` accepts), keeps the ``detection`` and ``cell``
objects,
and assigns each to the tile of the manifest that contains its centre (the nucleus centre of a
cell object, else the centre of its box; tiles are half-open ``[x0, x0 + size * downsample)``).
Classes are mapped back to histolib labels through ``class_names``; objects outside every tile,
unclassified or of an unknown class are dropped and counted.

The box of each object is its bounding box in level-0 px; ``sigma`` and ``pass`` come from the
measurements histolib exported (a cell drawn in QuPath gets ``sigma`` from its nucleus circle
when it has one, else NaN, and the pass ``qupath``).
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
    import geopandas as gpd
    import numpy as np
    import shapely

    from histolib.annotations.reading import read_annotations_report
    from histolib.library.cellio import (
        LIBRARY_COLUMNS,
        LIBRARY_SUFFIXES,
        empty_library,
        write_library,
    )
    from histolib.qupath.features import PASS_CODES, UNKNOWN_PASS, circle_radius
    from histolib.tiles.manifest import read_manifest

    out = Path(out)
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
    class_names = dict(class_names or {})
    exact, folded = _label_lookup(class_names)
    pass_names = {float(code): name for name, code in PASS_CODES.items()}
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
        if task is not None:
            progress.advance(task)
        if not objects:
            continue
        tiles_of_slide = manifest[manifest["slide_id"].astype(str) == slide_id]
        x0 = tiles_of_slide["x0"].to_numpy(dtype=float)
        y0 = tiles_of_slide["y0"].to_numpy(dtype=float)
        ds = tiles_of_slide["downsample"].to_numpy(dtype=float)
        side = tiles_of_slide["size_px"].to_numpy(dtype=float) * ds
        squares = shapely.box(x0, y0, x0 + side, y0 + side)

        centre_geoms = [a.nucleus if a.nucleus is not None else a.geometry for a, _ in objects]
        centres = shapely.get_coordinates(shapely.centroid(np.asarray(centre_geoms, dtype=object)))
        points = shapely.points(centres)
        tree = shapely.STRtree(squares)
        obj_idx, tile_idx = tree.query(points, predicate="intersects")
        # Half-open tiles: a centre on a shared edge belongs to the tile right of / below it.
        cx, cy = centres[obj_idx, 0], centres[obj_idx, 1]
        inside = (
            (cx >= x0[tile_idx])
            & (cx < x0[tile_idx] + side[tile_idx])
            & (cy >= y0[tile_idx])
            & (cy < y0[tile_idx] + side[tile_idx])
        )
        obj_idx, tile_idx = obj_idx[inside], tile_idx[inside]
        assigned = np.full(len(objects), -1, dtype=np.int64)
        assigned[obj_idx[::-1]] = tile_idx[::-1]  # first match wins
        result.outside += int((assigned < 0).sum())

        keep = np.flatnonzero(assigned >= 0)
        if not len(keep):
            continue
        t = assigned[keep]
        tile_ids = tiles_of_slide["tile_id"].astype(str).to_numpy()[t]
        tx0 = tiles_of_slide["x0"].to_numpy()[t]
        ty0 = tiles_of_slide["y0"].to_numpy()[t]
        tds = ds[t]
        bounds = shapely.bounds([objects[k][0].geometry for k in keep])
        sigma = np.array([objects[k][0].measurements.get("sigma", math.nan) for k in keep])
        for j, k in enumerate(keep):
            nucleus = objects[k][0].nucleus
            if not math.isfinite(sigma[j]) and nucleus is not None:
                sigma[j] = circle_radius(nucleus.area) / (math.sqrt(2.0) * tds[j])
        passes = [
            pass_names.get(objects[k][0].measurements.get("pass", math.nan), UNKNOWN_PASS)
            for k in keep
        ]
        labels = [objects[k][1] for k in keep]
        cx, cy = centres[keep, 0], centres[keep, 1]

        def local(values: Any, origin: Any, tds: Any = tds) -> Any:
            return np.rint((values - origin) / tds).astype(np.int64)

        frame = {
            "tile_id": tile_ids,
            "slide_id": np.full(len(keep), slide_id, dtype=object),
            "label": labels,
            "x": cx,
            "y": cy,
            "tile_x": (cx - tx0) / tds,
            "tile_y": (cy - ty0) / tds,
            "box_x0": local(bounds[:, 0], tx0),
            "box_y0": local(bounds[:, 1], ty0),
            "box_x1": local(bounds[:, 2], tx0),
            "box_y1": local(bounds[:, 3], ty0),
            "sigma": sigma,
            "pass": passes,
            "tile_x0": tx0.astype(np.int64),
            "tile_y0": ty0.astype(np.int64),
            "downsample": tds,
        }
        result.kept.update(labels)
        frames.append(
            gpd.GeoDataFrame(
                frame,
                geometry=shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]),
            )
        )

    if frames:
        import pandas as pd

        library = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry")
        library = library.sort_values(["slide_id", "tile_id", "y", "x"], kind="stable")
        library = library.reset_index(drop=True)[[*LIBRARY_COLUMNS, "geometry"]]
    else:
        library = empty_library()
        result.messages.append("no detection or cell object was kept: the library is empty")
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
    params = {
        "source": "qupath",
        "inputs": [str(p) for p in geojsons],
        "tiles": str(tiles),
        "class_names": class_names,
    }
    write_library(library, out, params=params)
    return result
