"""Export tile manifests, cell libraries and expert contours as QuPath GeoJSON, one per slide.

Every slide gets one FeatureCollection ``<slide_id>.geojson`` (or ``.geojson.gz``) in level-0
px that QuPath imports as-is (File > Import objects, or drag and drop):

- tiles (from a manifest) as ``tile`` objects named by their tile id, classified by label, with
  the measurements ``tissue_fraction`` and ``annotation_fraction``;
- cells (from a library) as ``detection`` boxes (one closed 5-point ring) or as ``cell`` objects
  whose ROI is the box and whose ``nucleusGeometry`` is the nucleus circle (radius
  ``sigma * sqrt(2)`` tile px times the tile's downsample, a 32-gon), classified by label, with
  the measurements ``sigma`` (LoG scale, tile px) and ``pass`` (detector pass code:
  :data:`histolib.qupath.features.PASS_CODES`);
- expert contours (``annotations``) passed through as they were read.

Every object's ``id`` is the same in every export (:func:`histolib.qupath.features.object_id`):
contours keep the ids they were read with, cells of a library imported from QuPath keep theirs
(its ``object_id`` column), and the others are uuid5 of the object's identity (a tile's id and
scale; a cell's slide, tile, pass and centre). Importing a second export into the same QuPath
image, or an export holding contours already there, therefore does not double the objects.

Labels become QuPath classes through ``class_names`` (identity by default); every class gets a
colour. Features are generated row by row and streamed to disk, so the JSON text of a large
library is never held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histolib.core.tables import check_version
from histolib.errors import ConfigError, ManifestError

CELL_MODES = ("detection", "cell")
NUCLEUS_VERTICES = 32


@dataclass
class SlideExport:
    """One written FeatureCollection and what it holds."""

    slide_id: str
    path: Path
    tiles: int = 0
    cells: int = 0
    annotations: int = 0

    @property
    def count(self) -> int:
        """Number of features written."""
        return self.tiles + self.cells + self.annotations


@dataclass
class ExportResult:
    """What :func:`export_qupath` wrote, and notes for the user (empty inputs, repairs)."""

    files: list[SlideExport] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass
class _Source:
    kind: str  # "tiles" | "library"
    path: Path
    gdf: Any
    by_slide: dict[str, Any]


def input_kind(path: str | Path) -> str:
    """``"tiles"`` for a tile manifest, ``"library"`` for a cell library (from the metadata).

    Raises
    ------
    ManifestError
        When the file is missing, foreign, or of another kind.
    """
    import json

    from histolib.core.tables import read_table_meta

    path = Path(path)
    if not path.is_file():
        raise ManifestError("no such file", path=path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        kind = read_table_meta(path).get("kind")
    elif suffix == ".geojson":
        # A library GeoJSON carries a top-level "histolib" member before its features.
        with path.open("rb") as fh:
            head = fh.read(65536).decode("utf-8", errors="replace")
        kind = None
        marker = head.find('"histolib"')
        if marker >= 0:
            try:
                start = head.index(":", marker) + 1
                while start < len(head) and head[start].isspace():
                    start += 1
                meta, _ = json.JSONDecoder().raw_decode(head, start)
                kind = meta.get("kind") if isinstance(meta, dict) else None
            except (ValueError, json.JSONDecodeError):
                kind = None
        if kind is None:
            raise ManifestError(
                "not a histolib cell library (no histolib metadata); "
                "QuPath exports are read back with 'histolib import qupath'",
                path=path,
            )
    else:
        raise ManifestError(
            "expected a tile manifest (.parquet) or a cell library (.parquet, .geojson)",
            path=path,
        )
    if kind not in ("tiles", "library"):
        raise ManifestError(f"a histolib table of unknown kind {kind!r}", path=path)
    return kind


def _load(path: Path) -> _Source:
    from histolib.library.cellio import read_library
    from histolib.tileset.manifest import read_manifest

    kind = input_kind(path)
    gdf, meta = read_manifest(path) if kind == "tiles" else read_library(path)
    check_version(meta, path)
    gdf = gdf.reset_index(drop=True)
    by_slide = gdf.groupby(gdf["slide_id"].astype(str), sort=True).indices if len(gdf) else {}
    return _Source(kind=kind, path=path, gdf=gdf, by_slide=dict(by_slide))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _tile_features(
    gdf: Any, rows: Sequence[int], class_names: Mapping[str, str]
) -> Iterator[dict[str, Any]]:
    import shapely

    from histolib.qupath.features import object_id, qupath_feature

    geoms = gdf.geometry.values
    bounds = shapely.bounds(geoms)
    square = shapely.get_num_coordinates(geoms) == 5
    tile_ids = gdf["tile_id"].astype(str).to_numpy()
    labels = gdf["label"].astype(str).to_numpy()
    tissue = gdf["tissue_fraction"].to_numpy()
    annot = gdf["annotation_fraction"].to_numpy()
    downsample = gdf["downsample"].to_numpy()
    for i in rows:
        geometry = _box(bounds[i]) if square[i] else geoms[i]
        measurements = {}
        if _finite(tissue[i]):
            measurements["tissue_fraction"] = float(tissue[i])
        if _finite(annot[i]):
            measurements["annotation_fraction"] = float(annot[i])
        label = labels[i]
        yield qupath_feature(
            geometry,
            object_type="tile",
            class_name=class_names.get(label, label),
            measurements=measurements,
            name=tile_ids[i],
            feature_id=object_id(f"tile:{tile_ids[i]}:{float(downsample[i])!r}"),
        )


def _box(b: Any) -> dict[str, Any]:
    from histolib.qupath.features import box_geometry

    return box_geometry(b[0], b[1], b[2], b[3])


def _cell_features(
    gdf: Any, rows: Sequence[int], class_names: Mapping[str, str], mode: str
) -> Iterator[dict[str, Any]]:
    import shapely

    from histolib.qupath.features import (
        PASS_CODES,
        circle_geometry,
        class_color,
        object_id,
        qupath_feature,
    )

    bounds = shapely.bounds(gdf.geometry.values)
    labels = gdf["label"].astype(str).to_numpy()
    slide_ids = gdf["slide_id"].astype(str).to_numpy()
    tile_ids = gdf["tile_id"].astype(str).to_numpy()
    # A library imported from QuPath keeps each object's id (import qupath records it).
    known = gdf["object_id"].to_numpy() if "object_id" in gdf.columns else None
    sigma = gdf["sigma"].to_numpy(dtype=float)
    passes = gdf["pass"].astype(str).to_numpy()
    xs = gdf["x"].to_numpy(dtype=float)
    ys = gdf["y"].to_numpy(dtype=float)
    downsample = gdf["downsample"].to_numpy(dtype=float)
    colors: dict[str, tuple[int, int, int]] = {}
    for i in rows:
        label = labels[i]
        class_name = class_names.get(label, label)
        color = colors.get(class_name)
        if color is None:
            color = colors[class_name] = class_color(class_name)
        measurements: dict[str, float] = {}
        if math.isfinite(sigma[i]):
            measurements["sigma"] = float(sigma[i])
        measurements["pass"] = float(PASS_CODES.get(passes[i], 0))
        identity = f"cell:{slide_ids[i]}:{tile_ids[i]}:{passes[i]}:{xs[i]!r}:{ys[i]!r}"
        existing = known[i] if known is not None and isinstance(known[i], str) else None
        feature = qupath_feature(
            _box(bounds[i]),
            object_type=mode,
            class_name=class_name,
            color=color,
            measurements=measurements,
            feature_id=object_id(identity, existing),
        )
        if mode == "cell" and math.isfinite(sigma[i]) and math.isfinite(downsample[i]):
            radius = sigma[i] * math.sqrt(2.0) * downsample[i]
            feature["nucleusGeometry"] = circle_geometry(
                xs[i], ys[i], radius, vertices=NUCLEUS_VERTICES
            )
        yield feature


def _annotation_features(slide_id: str, annotations: Sequence[Any]) -> Iterator[dict[str, Any]]:
    """The expert contours as read, each keeping its id (or one derived from its slide, class,
    name and geometry, numbered among identical contours)."""
    import hashlib

    from histolib.qupath.features import OBJECT_TYPES, object_id, qupath_feature

    seen: dict[str, int] = {}
    for a in annotations:
        digest = hashlib.sha1(a.geometry.wkb).hexdigest()
        identity = f"annotation:{slide_id}:{a.class_name}:{a.name}:{digest}"
        seen[identity] = seen.get(identity, -1) + 1
        feature = qupath_feature(
            a.geometry,
            object_type=a.object_type if a.object_type in OBJECT_TYPES else "annotation",
            class_name=a.class_name,
            color=a.color if a.class_name is not None else None,
            measurements={k: v for k, v in a.measurements.items() if math.isfinite(v)},
            name=a.name,
            feature_id=object_id(f"{identity}:{seen[identity]}", a.id),
        )
        if a.nucleus is not None:
            feature["nucleusGeometry"] = a.nucleus.__geo_interface__
        yield feature


def _strip_geojson_suffix(name: str) -> str:
    from histolib.annotations.reading import ANNOTATION_SUFFIXES

    for suffix in sorted(ANNOTATION_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _annotations_for(
    annotations: Path | None, slide_ids: Sequence[str], messages: list[str]
) -> dict[str, list[Any]]:
    from histolib.annotations.reading import find_annotation_file, read_annotations_report

    if annotations is None:
        return {}
    annotations = Path(annotations)
    if annotations.is_file() and len(slide_ids) > 1:
        # One file for several slides: it belongs to the slide it is named after.
        stem = _strip_geojson_suffix(annotations.name)
        if stem not in slide_ids:
            raise ConfigError(
                f"--annotations {annotations} is one file, named after none of the "
                f"{len(slide_ids)} slides exported: name it <slide_id>.geojson or give a "
                "folder holding <slide_id>.geojson per slide"
            )
        slide_ids = [stem]
    out: dict[str, list[Any]] = {}
    for slide_id in slide_ids:
        found = find_annotation_file(annotations, slide_id)
        if found is None:
            continue
        items, notes = read_annotations_report(found)
        messages.extend(f"{found}: {note}" for note in notes)
        out[slide_id] = items
    return out


def _note_contours_away(
    sources: Sequence[_Source], contours: Mapping[str, list[Any]], messages: list[str]
) -> None:
    """Say when a slide's contours lie wholly away from its exported tiles and cells.

    The export knows no slide size; contours beyond every exported object are the usual sign
    of an annotation file of another slide or another resolution.
    """
    import shapely

    for slide_id, items in contours.items():
        boxes = [
            shapely.box(*src.gdf.geometry.iloc[src.by_slide[slide_id]].total_bounds)
            for src in sources
            if len(src.by_slide.get(slide_id, ()))
        ]
        if not boxes or not items:
            continue
        extent = shapely.union_all(boxes)
        away = [a for a in items if not a.geometry.intersects(extent)]
        if away:
            messages.append(
                f"{slide_id}: {len(away)} of {len(items)} contour(s) lie away from every exported "
                "tile and cell: contours of another slide or another resolution?"
            )


def export_qupath(
    inputs: Sequence[str | Path],
    *,
    out: str | Path,
    cells: str = "detection",
    class_names: Mapping[str, str] | None = None,
    gzip_output: bool = False,
    annotations: str | Path | None = None,
    progress: Any = None,
) -> ExportResult:
    """Export manifests and libraries as one QuPath FeatureCollection per slide.

    Parameters
    ----------
    inputs
        Tile manifests (``tiles.parquet``) and cell libraries (``.parquet`` or ``.geojson``);
        told apart by their histolib metadata.
    out
        Output folder; gets ``<slide_id>.geojson`` (``.geojson.gz`` with ``gzip_output``).
    cells
        ``"detection"`` (boxes) or ``"cell"`` (box plus nucleus circle).
    class_names
        histolib label to QuPath class, e.g. ``{"cancer": "Tumor", "normal": "Normal"}``;
        labels not listed keep their name.
    gzip_output
        Write gzip-compressed ``.geojson.gz`` (QuPath 0.4+ reads them).
    annotations
        Contours to pass through as annotation objects: a folder of ``<slide_id>.geojson``
        (``.json``, ``.geojson.gz``), or one file, which goes to the only slide or, with
        several slides, to the slide it is named after.
    progress
        Optional Rich ``Progress`` to report on.

    Returns
    -------
    ExportResult
        The written files with their counts, and messages (empty libraries, repairs).

    Raises
    ------
    ManifestError
        For a missing, foreign or incompatible input.
    ConfigError
        For a bad option.
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib.core.names import check_name, child_path, sanitize_name
    from histolib.qupath.features import write_feature_collection

    if cells not in CELL_MODES:
        raise ConfigError(f"--cells must be one of {', '.join(CELL_MODES)}, not {cells!r}")
    if not inputs:
        raise ConfigError("give at least one tile manifest or cell library")
    class_names = dict(class_names or {})
    sources = [_load(Path(p)) for p in inputs]
    for src in sources:  # every file is named after a slide id: refuse one that escapes
        for slide_id in src.by_slide:
            check_name(slide_id, what="slide id", path=src.path, error=ManifestError)
    out_dir = ensure_writable_dir(out)
    result = ExportResult()
    slide_ids = sorted({s for src in sources for s in src.by_slide})
    contours = _annotations_for(
        None if annotations is None else Path(annotations), slide_ids, result.messages
    )
    _note_contours_away(sources, contours, result.messages)
    suffix = ".geojson.gz" if gzip_output else ".geojson"

    for src in sources:
        if not len(src.gdf):
            what = "tile manifest has no tiles" if src.kind == "tiles" else "library has no cells"
            if slide_ids:
                result.messages.append(f"{src.path}: the {what}")
                continue
            # Nothing else to export: still write a valid, empty FeatureCollection.
            stem = sanitize_name(src.path.name.split(".")[0])
            target = out_dir / f"{stem}{suffix}"
            write_feature_collection(target, iter(()), gzip_output=gzip_output)
            result.files.append(SlideExport(slide_id=stem, path=target))
            result.messages.append(
                f"{src.path}: the {what}; wrote an empty FeatureCollection {target}"
            )

    task = None
    if progress is not None:
        total = sum(len(src.gdf) for src in sources) + sum(len(v) for v in contours.values())
        task = progress.add_task("export qupath", total=total)

    for slide_id in slide_ids:
        target = child_path(out_dir, slide_id, what="slide id", suffix=suffix)
        record = SlideExport(slide_id=slide_id, path=target)

        def features(slide_id: str = slide_id, record: SlideExport = record) -> Iterator[Any]:
            done = 0
            streams: list[tuple[str, Iterator[dict[str, Any]]]] = []
            for src in sources:
                rows = src.by_slide.get(slide_id)
                if rows is None:
                    continue
                if src.kind == "tiles":
                    streams.append(("tiles", _tile_features(src.gdf, rows, class_names)))
                else:
                    streams.append(("cells", _cell_features(src.gdf, rows, class_names, cells)))
            if slide_id in contours:
                streams.append(("annotations", _annotation_features(slide_id, contours[slide_id])))
            for attr, stream in streams:
                for feature in stream:
                    setattr(record, attr, getattr(record, attr) + 1)
                    done += 1
                    if task is not None and done % 2000 == 0:
                        progress.advance(task, 2000)
                    yield feature
            if task is not None:
                progress.advance(task, done % 2000)

        write_feature_collection(record.path, features(), gzip_output=gzip_output)
        result.files.append(record)
    return result
