"""The one resolution of a tile's expert tumour region, from its slide's contours.

H&E tiles of a manifest get their tumour mask from their slide's contour file (the cell library
keeps cancer cells inside it, the evaluation scores against it):

1. the contour source: ``--annotations`` (a file, or a folder of ``<slide_id>.geojson``) or
   else what ``histolib tile`` recorded in the manifest
   (:func:`histolib.tileset.manifest.recorded_annotations`); no source at all is an error
   (:func:`require_contours`), the same one for every command;
2. a slide's contour file (:func:`histolib.tileset.manifest.slide_annotation_file`); a slide
   without one has an *unknown* truth: its tiles are skipped, and the consumer says how many
   (:func:`split_by_contours`, :func:`skipped_message`);
3. the tumour region: the union of the file's annotations of the positive classes
   (:func:`histolib.annotations.regions.tumour_region`), cached on the file's identity *and*
   modification (:class:`RegionCache`), so an edited contour file is read again;
4. the tile mask: that region rasterised on the tile's pixel grid
   (:func:`histolib.annotations.regions.rasterize`).
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ManifestError
from histolib.tileset.sources import TileRecord

NO_CONTOURS = (
    "H&E tiles need the tumour contours: the manifest records no annotations; "
    "give --annotations FILE_OR_DIR"
)
"""The one message for H&E tiles of a manifest with no contour source at all."""


class MissingContoursWarning(UserWarning):
    """Tiles were skipped because their slide has no contour file (unknown truth)."""


@dataclass(frozen=True)
class ContourSource:
    """Where the contours of a manifest's slides are, and which classes are tumour.

    Attributes
    ----------
    source
        A file, a folder of ``<slide_id>.geojson``, or ``{slide_id: file}``; None when unknown.
    classes
        The annotation classes that are tumour; None = every annotation.
    base
        The folder relative paths of ``source`` are taken from (the manifest's).
    """

    source: Mapping[str, str] | str | Path | None
    classes: tuple[str, ...] | None
    base: Path

    def contour_file(self, slide_id: str) -> Path | None:
        """The contour file of ``slide_id``; None when the slide has none."""
        from histolib.tileset.manifest import slide_annotation_file

        source = dict(self.source) if isinstance(self.source, Mapping) else self.source
        return slide_annotation_file(source, slide_id, base=self.base)


def contour_source(
    manifest: str | Path,
    meta: Mapping[str, Any],
    *,
    annotations: str | Path | None = None,
    positive_classes: Sequence[str] | None = None,
) -> ContourSource:
    """The contour source of a manifest's tiles.

    ``annotations`` wins over what the manifest records; the positive classes are
    ``positive_classes``, else the manifest's, else None (every annotation).
    """
    from histolib.tileset.manifest import recorded_annotations

    params = meta.get("params") if isinstance(meta, Mapping) else None
    params = params if isinstance(params, dict) else {}
    source = annotations if annotations else recorded_annotations(dict(meta))
    classes = positive_classes or params.get("positive_classes") or None
    return ContourSource(
        source=source,
        classes=tuple(str(c) for c in classes) if classes else None,
        base=Path(manifest).resolve().parent,
    )


def require_contours(contours: ContourSource, *, path: str | Path) -> None:
    """Refuse H&E tiles whose manifest has no contour source (:data:`NO_CONTOURS`).

    Raises
    ------
    ManifestError
        When ``contours.source`` is empty.
    """
    if not contours.source:
        raise ManifestError(NO_CONTOURS, path=path)


def split_by_contours(
    records: Iterable[TileRecord], contours: ContourSource
) -> tuple[list[tuple[TileRecord, Path]], dict[str, int]]:
    """The records whose slide has a contour file, with that file; and the others' count.

    Returns
    -------
    tuple
        ``([(record, contour_file), ...], {slide_id: n_skipped_tiles})``; each slide's file is
        looked up once.

    Raises
    ------
    AnnotationError
        When the contour source is a file or folder that does not exist.
    """
    files: dict[str, Path | None] = {}
    kept: list[tuple[TileRecord, Path]] = []
    skipped: Counter[str] = Counter()
    for record in records:
        if record.slide_id not in files:
            files[record.slide_id] = contours.contour_file(record.slide_id)
        found = files[record.slide_id]
        if found is None:
            skipped[record.slide_id] += 1
        else:
            kept.append((record, found))
    return kept, dict(skipped)


def skipped_message(skipped: Mapping[str, int], contours: ContourSource) -> str:
    """One line naming the tiles skipped for want of a contour file."""
    slides = sorted(skipped)
    shown = ", ".join(slides[:3]) + (f" and {len(slides) - 3} more" if len(slides) > 3 else "")
    return (
        f"skipped {sum(skipped.values())} H&E tile(s) of {len(slides)} slide(s) without a "
        f"contour file in {contours.source} (their truth is unknown): {shown}"
    )


def none_left_error(contours: ContourSource, *, path: str | Path) -> ManifestError:
    """The error when every selected tile was skipped (no slide has a contour file)."""
    return ManifestError(
        f"none of the selected tiles' slides has an annotation file in {contours.source}",
        path=path,
    )


class RegionCache:
    """Tumour regions of contour files, keyed on the file's resolved path, modification time,
    size and the positive classes: an edited file is read again.

    Holds at most ``max_entries`` regions (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 32) -> None:
        self.max_entries = max_entries
        self._regions: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def region(self, path: str | Path, classes: Sequence[str] | None) -> Any:
        """The tumour region (shapely geometry or None) of the contour file ``path``.

        Raises
        ------
        AnnotationError
            When the file is missing or not GeoJSON.
        """
        from histolib.annotations.reading import read_annotations
        from histolib.annotations.regions import tumour_region

        resolved = Path(path).resolve()
        try:
            stat = os.stat(resolved)
            stamp: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (-1, -1)  # read_annotations names the missing file
        key = (str(resolved), *stamp, None if classes is None else tuple(classes))
        if key in self._regions:
            self._regions.move_to_end(key)
            return self._regions[key]
        region = tumour_region(read_annotations(resolved), classes=classes)
        self._regions[key] = region
        while len(self._regions) > self.max_entries:
            self._regions.popitem(last=False)
        return region

    def clear(self) -> None:
        """Forget every region."""
        self._regions.clear()


REGIONS = RegionCache()
"""The process's region cache (each worker process has its own)."""


def tile_mask(
    contour_file: str | Path,
    classes: Sequence[str] | None,
    *,
    x0: float,
    y0: float,
    downsample: float,
    shape: tuple[int, int],
    cache: RegionCache | None = None,
) -> np.ndarray:
    """The tumour mask of a tile: its slide's region rasterised on the tile's pixel grid.

    Parameters
    ----------
    contour_file
        The slide's contour file.
    classes
        Annotation classes that are tumour (None = every annotation).
    x0, y0, downsample
        The tile's level-0 origin and level-0 px per tile px.
    shape
        ``(rows, cols)`` of the tile.
    cache
        Where regions are kept between calls (default :data:`REGIONS`).
    """
    from histolib.annotations.regions import rasterize

    region = (cache if cache is not None else REGIONS).region(contour_file, classes)
    return rasterize(region, x0=x0, y0=y0, downsample=downsample, shape=shape)


def record_mask(
    record: TileRecord,
    contour_file: str | Path,
    classes: Sequence[str] | None,
    *,
    shape: tuple[int, int],
    cache: RegionCache | None = None,
) -> np.ndarray:
    """:func:`tile_mask` of a :class:`~histolib.tileset.sources.TileRecord`."""
    return tile_mask(
        contour_file,
        classes,
        x0=record.x0,
        y0=record.y0,
        downsample=record.downsample,
        shape=shape,
        cache=cache,
    )
