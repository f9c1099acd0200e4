"""Restaining slides on a Dask cluster: one task a slide, the generator loaded in the worker.

One output TIFF is streamed by one writer, so a slide is not split across workers: with a
scheduler (:mod:`histolib.core.dask_cluster`) each slide of a transfer is one task, which does on
its worker what ``histolib transfer`` does here: load the checkpoint's generator on the worker's
device (kept loaded for the worker's next slide), take the window size, overlap and mpp from
the checkpoint where not given (:func:`~histolib_train.transfer.restaining.window_settings`),
and run :func:`~histolib_train.transfer.slide.transfer_slide` with its reader threads. The
output is written under a temporary name and renamed, and an existing output is kept (unless
``overwrite``), so a task run again after its worker died neither loses nor duplicates
anything. This process needs neither torch nor a GPU.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from histolib.errors import CheckpointError, HistolibError, InputError
from histolib_train.transfer.options import TransferOptions
from histolib_train.transfer.restaining import slide_keywords, window_settings

_GENERATOR: dict[tuple[Any, ...], Any] = {}
_GENERATOR_LOCK = threading.Lock()


def _worker_generator(checkpoint: str, options: TransferOptions) -> tuple[Any, dict[str, Any]]:
    """The generator and config of ``checkpoint`` as ``options`` load it, loaded once per
    worker process (one at a time: a different checkpoint, or the same file changed, replaces
    it)."""
    from histolib_train.checkpoint import resolve_checkpoint_path
    from histolib_train.transfer.generator import load_transfer_generator

    path = resolve_checkpoint_path(checkpoint)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, options.direction, options.device)
    key += (options.amp, options.amp_dtype)
    with _GENERATOR_LOCK:
        if key not in _GENERATOR:
            _GENERATOR.clear()
            _GENERATOR[key] = load_transfer_generator(
                path,
                direction=options.direction,
                device=options.device,
                amp=options.amp,
                amp_dtype=options.amp_dtype,
            )
        return _GENERATOR[key]


def restain_task(
    slide: str, out: str, checkpoint: str, options: TransferOptions, workers: int | None
) -> tuple[Any, list[str]]:
    """Restain one slide on this worker; returns ``(TransferResult, notes)``."""
    from histolib_train.transfer.slide import transfer_slide

    generator, config = _worker_generator(checkpoint, options)
    mpp, size, overlap, notes = window_settings(config, options)
    result = transfer_slide(
        slide,
        generator,
        out=out,
        mpp=mpp,
        tile_size=size,
        overlap=overlap,
        progress=False,
        **slide_keywords(options, workers=workers),
    )
    return result, notes


def _check_inputs(pairs: Sequence[tuple[Path, Path]], checkpoint: Path) -> None:
    """Refuse a missing checkpoint or slide before anything is sent to the cluster."""
    if not checkpoint.exists():
        raise CheckpointError("no such checkpoint file or run folder", path=checkpoint)
    for slide, _out in pairs:
        if not slide.is_file():
            raise InputError("no such slide file", path=slide)


def transfer_slides(
    pairs: Sequence[tuple[str | Path, str | Path]],
    *,
    checkpoint: str | Path,
    scheduler: str | Path,
    options: TransferOptions = TransferOptions(),
    workers: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, tuple[Any, list[str]]], dict[int, BaseException]]:
    """Restain each ``(slide, out)`` of ``pairs`` with ``checkpoint``'s generator, as one task
    of the Dask cluster ``scheduler`` (``workers``: each task's reader threads).

    Paths are made absolute here (the workers' folder is not this one); the workers must see
    the checkpoint, the slides and the outputs at those paths.

    Returns
    -------
    tuple
        ``(results, failures)``: by index into ``pairs``, ``(TransferResult, notes)`` or the
        slide's error (a HistolibError or OSError; any other exception propagates).
    """
    from histolib.core.dask_cluster import ClusterError, dask_executor
    from histolib.core.progress import make_progress

    absolute = [(Path(os.path.abspath(s)), Path(os.path.abspath(o))) for s, o in pairs]
    checkpoint = Path(os.path.abspath(checkpoint))
    _check_inputs(absolute, checkpoint)
    results: dict[int, tuple[Any, list[str]]] = {}
    failures: dict[int, BaseException] = {}
    with dask_executor(scheduler) as executor, make_progress(disable=not progress) as bar:
        task = bar.add_task("slides", total=len(absolute))
        pending: dict[Future, int] = {
            executor.submit(
                restain_task, str(slide), str(out), str(checkpoint), options, workers
            ): index
            for index, (slide, out) in enumerate(absolute)
        }
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                index = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    results[index] = fut.result()
                elif isinstance(exc, (HistolibError, OSError)) and not isinstance(
                    exc, ClusterError
                ):
                    failures[index] = exc
                else:
                    raise exc
                bar.advance(task)
    return results, failures
