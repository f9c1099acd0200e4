"""The slides of a tiling run: expanding the inputs, one :class:`SlideJob` per slide."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histolib.core.options import strict_values
from histolib.errors import ConfigError, InputError
from histolib.slide.reader import is_slide_file, slide_id_from_path
from histolib.tiling.options import TilingOptions


@dataclass(frozen=True)
class SlideJob:
    """One slide of a run: where it is, its annotation file, where its outputs go."""

    index: int
    path: str
    slide_id: str
    annotation_path: str | None
    out: str
    options: TilingOptions
    # The --annotations folder when it holds no file for this slide (a note says so).
    missing_annotation_in: str | None = None

    def params(self) -> dict[str, Any]:
        """The parameters that determine this slide's rows (a finished part must match)."""
        try:
            file_size = Path(self.path).stat().st_size
        except OSError:
            file_size = None
        return {
            "slide_path": self.path,
            "slide_size_bytes": file_size,
            "annotation_path": self.annotation_path,
            "annotation_size_bytes": (
                Path(self.annotation_path).stat().st_size if self.annotation_path else None
            ),
            **strict_values(self.options),
        }


def collect_slides(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand slide files and folders (scanned, not recursively, for slide extensions).

    Raises
    ------
    InputError
        A path that does not exist, or a folder without slides.
    ConfigError
        Two slides with the same slide id.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    slides: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_slide_file(p))
            if not found:
                raise InputError("folder holds no slides (.svs, .tif, .ndpi, .png...)", path=path)
            slides.extend(found)
        elif path.exists():
            slides.append(path)
        else:
            raise InputError("no such file or folder", path=path)
    if not slides:
        raise InputError("no slides given")
    return _unique_slides(slides)


def _unique_slides(slides: list[Path]) -> list[Path]:
    """The slides resolved, a file given twice (also through links) once; two files with one
    slide id refused, and so is a slide id that cannot name a file (``..tif`` gives ``..``)."""
    from histolib.core.names import check_name

    seen: dict[str, Path] = {}
    unique: list[Path] = []
    for slide in slides:
        resolved = slide.resolve()
        if resolved in unique:
            continue
        sid = check_name(slide_id_from_path(resolved), what="slide id", path=slide)
        if sid in seen:
            raise ConfigError(f"two slides share the slide id {sid!r}: {seen[sid]} and {slide}")
        seen[sid] = resolved
        unique.append(resolved)
    return unique


def check_annotations(annotations: str | Path | None, *, slides: int) -> Path | None:
    """The ``--annotations`` path, checked: it exists; a single file only for one slide.

    Raises
    ------
    AnnotationError
        The path does not exist.
    ConfigError
        One annotation file for several slides.
    """
    if annotations is None:
        return None
    root = Path(annotations)
    if not root.exists():
        from histolib.errors import AnnotationError

        raise AnnotationError("no such file or folder", path=root)
    if root.is_file() and slides > 1:
        raise ConfigError(
            f"one annotation file ({root}) for {slides} slides: give a "
            "folder holding <slide_id>.geojson per slide"
        )
    return root


def make_jobs(
    paths: list[Path], *, annotations: Path | None, out: Path, options: TilingOptions
) -> list[SlideJob]:
    """One :class:`SlideJob` per slide, with its annotation file found in ``annotations``."""
    from histolib.annotations.reading import find_annotation_file

    jobs = []
    for index, path in enumerate(paths):
        sid = slide_id_from_path(path)
        ann = None if annotations is None else find_annotation_file(annotations, sid)
        jobs.append(
            SlideJob(
                index=index,
                path=str(path),
                slide_id=sid,
                annotation_path=None if ann is None else str(ann.resolve()),
                out=str(out.resolve()),
                options=options,
                missing_annotation_in=(
                    str(annotations) if annotations is not None and ann is None else None
                ),
            )
        )
    return jobs
