"""Virtual restaining of a folder of tiles with a trained generator.

The folder is read by the one folder rule (:func:`histolib.tileset.folders.list_images`: image
files in the folder and its sub-folders); each tile is restained into the output folder at the
same relative path, as PNG (``a/b.jpg`` -> ``OUT/a/b.png``). Tiles larger than the window go
through overlapping blended windows (:mod:`histolib.slide.blend`), as on slides.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from histolib.errors import OutputError
from histolib.slide.blend import blend_weights, window_starts
from histolib.tileset.folders import list_images
from histolib.tileset.images import read_rgb, write_png
from histolib_train.transfer.generator import GeneratorFn, check_window_options
from histolib_train.transfer.slide import prefetch


def transfer_image(
    rgb: np.ndarray,
    generator: GeneratorFn,
    *,
    tile_size: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
) -> np.ndarray:
    """Restain one in-memory RGB image of any size.

    Images no larger than ``tile_size`` go through the generator whole; larger ones in
    overlapping windows blended as on slides.
    """
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    if height <= tile_size and width <= tile_size:
        return generator(rgb[None])[0]
    xs = window_starts(width, tile_size=tile_size, overlap=overlap)
    ys = window_starts(height, tile_size=tile_size, overlap=overlap)
    full_h, full_w = ys[-1] + tile_size, xs[-1] + tile_size
    padded = np.full((full_h, full_w, 3), 255, np.uint8)
    padded[:height, :width] = rgb
    weights_1d = blend_weights(tile_size, overlap)
    weights = np.outer(weights_1d, weights_1d)
    acc = np.zeros((full_h, full_w, 3), np.float32)
    wsum = np.zeros((full_h, full_w), np.float32)
    origins = [(x, y) for y in ys for x in xs]
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = np.stack([padded[y : y + tile_size, x : x + tile_size] for x, y in chunk])
        out = generator(batch)
        for (x, y), tile in zip(chunk, out, strict=True):
            acc[y : y + tile_size, x : x + tile_size] += tile * weights[..., None]
            wsum[y : y + tile_size, x : x + tile_size] += weights
    result = acc / wsum[..., None]
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)[:height, :width]


def output_path(tile: Path, *, images: Path, out: Path) -> Path:
    """Where the restained ``tile`` of the folder ``images`` goes: same relative path, PNG."""
    return out / tile.relative_to(images).with_suffix(".png")


def _read_groups(todo: list[Path], *, batch_size: int) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """The tiles to do, read in groups of up to ``batch_size`` tiles of one shape."""
    group: list[tuple[Path, np.ndarray]] = []
    for path in todo:
        rgb = read_rgb(path)
        if group and (rgb.shape != group[0][1].shape or len(group) >= batch_size):
            yield group
            group = []
        group.append((path, rgb))
    if group:
        yield group


def _restain_group(
    group: list[tuple[Path, np.ndarray]],
    generator: GeneratorFn,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int,
) -> list[np.ndarray]:
    """One generator call for tiles up to ``tile_size``; blended windows for larger ones."""
    shape = group[0][1].shape
    if shape[0] <= tile_size and shape[1] <= tile_size:
        return list(generator(np.stack([rgb for _, rgb in group])))
    return [
        transfer_image(rgb, generator, tile_size=tile_size, overlap=overlap, batch_size=batch_size)
        for _, rgb in group
    ]


def transfer_images(
    images: str | Path,
    generator: GeneratorFn,
    *,
    out: str | Path,
    tile_size: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, int]:
    """Restain every tile of the folder ``images`` into ``out`` (see the module docstring).

    Tiles are read a batch ahead in a thread and written by a small thread pool. Existing
    outputs are skipped (a re-run resumes) unless ``overwrite``. Tiles larger than
    ``tile_size`` go through overlapping blended windows. An output folder inside ``images``
    is not read as tiles.

    Returns
    -------
    dict
        ``{"written": n, "skipped": n}``.

    Raises
    ------
    ConfigError
        For a bad window side, overlap or batch size.
    InputError
        When the folder does not exist or holds no tile (:func:`list_images`).
    OutputError
        When ``out`` is ``images`` itself or cannot be written.
    ImageError
        For a tile that is not an 8-bit colour image.
    """
    import threading

    from histolib.core.atomic import ensure_writable_dir
    from histolib.core.progress import make_progress

    check_window_options(tile_size=tile_size, overlap=overlap, batch_size=batch_size)
    root = Path(images)
    if root.is_dir() and root.resolve() == Path(out).resolve():
        raise OutputError("output folder must differ from the input folder", path=out)
    files = list_images(root, exclude=out)
    out = ensure_writable_dir(out)
    todo = [p for p in files if overwrite or not output_path(p, images=root, out=out).exists()]
    written = 0
    with (
        make_progress(disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=2) as writers,
    ):
        task = bar.add_task("transfer tiles", total=len(todo))
        pending = []
        groups = prefetch(
            _read_groups(todo, batch_size=batch_size), depth=2, stop=threading.Event()
        )
        for group in groups:
            results = _restain_group(
                group, generator, tile_size=tile_size, overlap=overlap, batch_size=batch_size
            )
            for (path, _), result in zip(group, results, strict=True):
                target = output_path(path, images=root, out=out)
                target.parent.mkdir(parents=True, exist_ok=True)
                pending.append(writers.submit(write_png, target, result))
            written += len(group)
            bar.advance(task, len(group))
        for fut in pending:
            fut.result()
    return {"written": written, "skipped": len(files) - len(todo)}
