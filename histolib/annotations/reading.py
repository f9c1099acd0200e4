"""Reading annotation files: one entry point, :func:`read_annotations`, whatever the format.

:func:`annotation_format` names the format of a file and :data:`READERS` maps each format to
its reader, a function ``path -> (annotations, notes)`` returning
:class:`~histolib.annotations.model.Annotation` objects in level-0 px and one-line, counted
notes on what was skipped or repaired. Today's format is QuPath GeoJSON
(:mod:`histolib.annotations.geojson`); a reader for another format is a module beside it,
registered in :data:`READERS` and recognised in :func:`annotation_format`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from histolib.annotations.geojson import read_geojson
from histolib.annotations.model import Annotation, AnnotationWarning
from histolib.errors import AnnotationError

#: Names an annotation file of a slide may have, after its slide id (first found wins).
ANNOTATION_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")

Reader = Callable[[Path], tuple[list[Annotation], list[str]]]

#: Annotation readers by format name.
READERS: dict[str, Reader] = {"geojson": read_geojson}
#: Formats known by file suffix; any other name is read in :data:`DEFAULT_FORMAT`.
_FORMAT_OF_SUFFIX = {suffix: "geojson" for suffix in ANNOTATION_SUFFIXES}
DEFAULT_FORMAT = "geojson"


def annotation_format(path: str | Path) -> str:
    """The format of an annotation file, a key of :data:`READERS`, from its name.

    A name of no known suffix is read as QuPath GeoJSON (gzip is recognised by its magic
    bytes, whatever the name), whose reader fails with a one-line "not GeoJSON" error.
    """
    name = Path(path).name.lower()
    for suffix, file_format in _FORMAT_OF_SUFFIX.items():
        if name.endswith(suffix):
            return file_format
    return DEFAULT_FORMAT


def read_annotations_report(path: str | Path) -> tuple[list[Annotation], list[str]]:
    """Read an annotation file; returns ``(annotations, notes)`` without warning.

    Raises
    ------
    AnnotationError
        When the file is missing or cannot be read as its format (one line naming the file).
    """
    path = Path(path)
    return READERS[annotation_format(path)](path)


def read_annotations(path: str | Path) -> list[Annotation]:
    """Read every object of an annotation file (QuPath GeoJSON, see
    :mod:`~histolib.annotations.geojson`).

    Parameters
    ----------
    path
        A ``.geojson``, ``.json`` or ``.geojson.gz`` file.

    Returns
    -------
    list of Annotation
        In file order; geometry valid, in level-0 px. Skipped and repaired objects are
        reported as one :class:`AnnotationWarning` per reason, with counts.

    Raises
    ------
    AnnotationError
        When the file is missing or is not GeoJSON (one line naming the file).
    """
    annotations, notes = read_annotations_report(path)
    for note in notes:
        warnings.warn(f"{path}: {note}", AnnotationWarning, stacklevel=2)
    return annotations


def find_annotation_file(path: str | Path, slide_id: str) -> Path | None:
    """The annotation file of a slide: ``path`` itself when a file, else ``<slide_id>.geojson``
    (or ``.json``, ``.geojson.gz``, ``.json.gz``) inside the folder ``path``; None when absent."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise AnnotationError("no such file or folder", path=path)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = path / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None
