"""The one rule for a folder of tiles (and a folder of their masks).

Users who come with tiles from other tools give a folder instead of a manifest. Every command
that takes one (``build-library --images``, ``train --he/--ihc``, ``evaluate --images``,
``transfer --images``) resolves it here:

- tiles are the files with an image suffix (:data:`~histolib.tileset.images.IMAGE_SUFFIXES`,
  any case) in the folder and its sub-folders (``histolib tile`` writes
  ``tiles/<slide_id>/*.png``), hidden files and folders skipped, sorted by relative path;
- a tile's id is its file stem, so two tiles may not share a stem;
- each tile is its own slide, origin (0, 0), with the mpp given as an option;
- a tile's mask is the image in the mask folder (same rule) whose stem is the tile's stem or
  ``<stem>_mask``; a mask folder inside the tile folder is not read as tiles.
"""

from __future__ import annotations

from pathlib import Path

from histolib.errors import InputError
from histolib.tileset.images import IMAGE_SUFFIXES

MASK_SUFFIX = "_mask"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _image_files(root: Path, *, exclude: str | Path | None = None) -> list[Path]:
    """The image files under ``root`` by the rule above, sorted by relative path."""
    skip = Path(exclude).resolve() if exclude is not None else None
    files = []
    for path in root.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if _hidden(path, root):
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        files.append(path)
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    return files


def _unique_stems(files: list[Path], root: Path, *, what: str) -> None:
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise InputError(
                f"two {what} share the id {path.stem!r}: {seen[path.stem]} and {path}", path=root
            )
        seen[path.stem] = path


def list_images(folder: str | Path, *, exclude: str | Path | None = None) -> list[Path]:
    """The tile images of ``folder`` by the rule above.

    Parameters
    ----------
    folder
        The folder of tiles.
    exclude
        A folder inside ``folder`` whose files are not tiles (the mask folder).

    Raises
    ------
    InputError
        When the folder does not exist, holds no image, or two images share a file stem.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("no such folder of tiles", path=root)
    files = _image_files(root, exclude=exclude)
    if not files:
        raise InputError(f"no image tiles ({', '.join(IMAGE_SUFFIXES)}) in this folder", path=root)
    _unique_stems(files, root, what="tiles")
    return files


def match_masks(images: list[Path], masks: str | Path) -> dict[Path, Path]:
    """The mask of each tile in ``images`` from the folder ``masks`` (rule above).

    Raises
    ------
    InputError
        When the mask folder does not exist, two masks share a file stem, or a tile has no
        mask.
    """
    mask_dir = Path(masks)
    if not mask_dir.is_dir():
        raise InputError("no such folder of masks", path=mask_dir)
    files = _image_files(mask_dir)
    _unique_stems(files, mask_dir, what="masks")
    by_stem = {path.stem: path for path in files}
    for path in files:
        if path.stem.endswith(MASK_SUFFIX):
            by_stem.setdefault(path.stem[: -len(MASK_SUFFIX)], path)
    found: dict[Path, Path] = {}
    missing = []
    for image in images:
        mask = by_stem.get(image.stem)
        if mask is None or mask.resolve() == image.resolve():
            missing.append(image.name)
        else:
            found[image] = mask
    if missing:
        raise InputError(
            f"{len(missing)} tile(s) have no mask <stem>.png or <stem>_mask.png in {mask_dir} "
            f"(first: {missing[0]})",
            path=mask_dir,
        )
    return found
