"""The one exception hierarchy of histolib.

Every error a user can cause (bad path, corrupt slide, malformed GeoJSON, wrong option) is a
:class:`HistolibError` whose message is one line naming the file and the problem. The CLI prints
that line and exits non-zero; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

from pathlib import Path


class HistolibError(Exception):
    """Base class of every error histolib raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(HistolibError):
    """A missing, unreadable or malformed input file or folder."""


class SlideError(InputError):
    """A slide that cannot be opened or read, or that lacks what is needed (mpp)."""


class AnnotationError(InputError):
    """A GeoJSON / annotation file that cannot be read or makes no sense for its slide."""


class ManifestError(InputError):
    """A tile manifest or cell library that is missing, foreign or inconsistent."""


class ImageError(InputError):
    """A tile image of the wrong size, channels or encoding."""


class ConfigError(HistolibError):
    """An invalid option, parameter file or combination of options."""


class OutputError(HistolibError):
    """An output location that cannot be written."""


class CheckpointError(InputError):
    """A training checkpoint that is corrupt or of another model kind."""
