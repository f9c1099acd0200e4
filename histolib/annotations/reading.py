"""Reading annotation files: one entry point, :func:`read_annotations`, whatever the format.

:func:`annotation_format` names the format of a file and :data:`READERS` maps each format to
its reader, a function ``path -> (annotations, notes)`` returning
:class:`~histolib.annotations.model.Annotation` objects in level-0 px and one-line, counted
notes on what was skipped or repaired. The formats: QuPath GeoJSON
(:mod:`histolib.annotations.geojson`), ASAP XML (CAMELYON16/17) and Aperio ImageScope XML
(:mod:`histolib.annotations.xml`), chosen by content, not by file name. A reader for another
format is a module beside them, registered in :data:`READERS` and recognised in
:func:`annotation_format`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from histolib.annotations.geojson import read_geojson
from histolib.annotations.model import Annotation, AnnotationWarning
from histolib.annotations.xml import XML_SUFFIXES, annotation_format, read_xml_annotations_report
from histolib.errors import AnnotationError

#: Names an annotation file of a slide may have, after its slide id (first found wins).
ANNOTATION_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz", *XML_SUFFIXES)

Reader = Callable[[Path], tuple[list[Annotation], list[str]]]

#: Annotation readers by format name (:func:`annotation_format` names the format by content).
READERS: dict[str, Reader] = {
    "geojson": read_geojson,
    "asap": read_xml_annotations_report,
    "imagescope": read_xml_annotations_report,
}

__all__ = [
    "ANNOTATION_SUFFIXES",
    "READERS",
    "annotation_format",
    "find_annotation_file",
    "read_annotations",
    "read_annotations_report",
]


def read_annotations_report(path: str | Path) -> tuple[list[Annotation], list[str]]:
    """Read an annotation file; returns ``(annotations, notes)`` without warning.

    Raises
    ------
    AnnotationError
        When the file is missing or cannot be read as its format (one line naming the file).
    """
    path = Path(path)
    try:
        return READERS[annotation_format(path)](path)
    except AnnotationError as exc:  # a contour over a limit is raised without the file's name
        if exc.path is None:
            raise AnnotationError(str(exc), path=path) from None
        raise


def read_annotations(path: str | Path) -> list[Annotation]:
    """Read every object of an annotation file: QuPath GeoJSON, ASAP XML or ImageScope XML.

    Parameters
    ----------
    path
        A QuPath GeoJSON (``.geojson``, ``.json``, gzip-compressed or not), ASAP XML or Aperio
        ImageScope XML file; the format is recognised by content.

    Returns
    -------
    list of Annotation
        In file order; geometry valid, in level-0 px. Skipped and repaired objects are
        reported as one :class:`AnnotationWarning` per reason, with counts.

    Raises
    ------
    AnnotationError
        When the file is missing or cannot be read in its format (one line naming the file).
    """
    annotations, notes = read_annotations_report(path)
    for note in notes:
        warnings.warn(f"{path}: {note}", AnnotationWarning, stacklevel=2)
    return annotations


def find_annotation_file(path: str | Path, slide_id: str) -> Path | None:
    """The annotation file of a slide: ``path`` itself when a file, else ``<slide_id>`` with a
    suffix of :data:`ANNOTATION_SUFFIXES` (``.geojson``, ``.json``, ``.xml``, gzipped too)
    inside the folder ``path``; None when absent. A slide id that is no plain file name
    (``..``, ``/abs/x``: :func:`histolib.core.names.check_name`) is an AnnotationError: it
    would look outside the folder."""
    from histolib.core.names import check_name

    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise AnnotationError("no such file or folder", path=path)
    check_name(slide_id, what="slide id", path=path, error=AnnotationError)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = path / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None
