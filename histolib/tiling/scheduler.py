"""The scheduler of a tiling run: every slide through its stages on one process pool.

A slide is planned in a worker (:func:`~histolib.tiling.plan.plan_slide`), then its tiles are
cut in chunks by every worker (:func:`~histolib.tiling.chunks.run_chunk`), then it is finished
by this process (:func:`~histolib.tiling.finish.finish_slide`). Its :class:`Stage` moves on when
its last outstanding chunk is back:

- ``PLAN`` -> ``DONE`` (a finished part), ``WRITE`` (labels known), ``LABEL`` (IHC by DAB with
  a balanced / capped draw: every candidate's fraction first) or ``BOTH`` (IHC by DAB keeping
  every tile: fractions and images in one pass);
- ``LABEL`` -> ``WRITE`` (the selected tiles) or ``DONE`` (``image_format="none"``);
- ``BOTH`` and ``WRITE`` -> ``DONE``; any stage -> ``FAILED`` on a slide's error.

Slides run side by side: one more than the workers is active at a time. The executor is a
local process pool or a Dask cluster's (:func:`histolib.core.dask_cluster.executor_pool`): both
give :class:`concurrent.futures.Future` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from histolib.core.dask_cluster import ClusterError
from histolib.core.parallel import InlineExecutor
from histolib.errors import HistolibError
from histolib.slide.cache import close_slides
from histolib.tiling.chunks import Stage, make_chunks, run_chunk
from histolib.tiling.dab import dab_labels
from histolib.tiling.finish import finish_slide, write_pictures
from histolib.tiling.plan import SlidePlan, plan_slide, select_tiles, tile_rng
from histolib.tiling.slides import SlideJob


def worker_imports() -> None:
    """Pool initializer: import what cutting tiles needs while the first slide is planned."""
    import numpy  # noqa: F401
    import openslide  # noqa: F401
    from PIL import Image, PngImagePlugin  # noqa: F401


def _parent_imports() -> None:
    """Import what drawing, the manifest and the workers' results need, before any work is
    sent out: results are unpickled in the pool's (or the Dask client's) own thread, and two
    threads importing shapely at once can each see it half-initialised (an ImportError)."""
    import geopandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.ndimage  # noqa: F401
    from PIL import Image, ImageDraw  # noqa: F401


def _is_slide_failure(exc: BaseException) -> bool:
    """A slide's own error (it fails that slide only), not the Dask cluster's."""
    return isinstance(exc, (HistolibError, OSError)) and not isinstance(exc, ClusterError)


@dataclass
class _SlideState:
    job: SlideJob
    plan: SlidePlan | None = None
    stage: Stage = Stage.PLAN
    outstanding: list[Future] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.stage not in (Stage.DONE, Stage.FAILED)


class _Scheduler:
    """One run of :func:`run_jobs` (its state: the slides, the pending futures, the results)."""

    def __init__(self, jobs: list[SlideJob], *, workers: int, progress: Any, executor: Any):
        self.workers = workers
        self.progress = progress
        self.executor = executor
        self.slides_task = progress.add_task("slides", total=len(jobs))
        self.tiles_task = progress.add_task("tiles", total=0)
        self.tiles_total = 0
        self.queue = list(jobs)
        self.states = {job.index: _SlideState(job) for job in jobs}
        self.started: list[_SlideState] = []
        self.pending: dict[Future, tuple[int, Stage, int]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.failures: dict[int, BaseException] = {}

    def run(self) -> None:
        if not isinstance(self.executor, InlineExecutor):
            _parent_imports()
        self._start_more()
        while self.pending:
            done, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
            for fut in done:
                self._collect(fut)
            self._start_more()

    def _start_more(self) -> None:
        limit = max(1, self.workers) + 1
        while self.queue and sum(s.active for s in self.started) < limit:
            job = self.queue.pop(0)
            self.started.append(self.states[job.index])
            self.pending[self.executor.submit(plan_slide, job)] = (job.index, Stage.PLAN, 0)

    def _collect(self, fut: Future) -> None:
        """Take in one finished plan or chunk."""
        index, stage, count = self.pending.pop(fut)
        state = self.states[index]
        if state.stage is Stage.FAILED or fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._fail(state, exc)
            return
        if stage is Stage.PLAN:
            state.plan = fut.result()
            self._advance(state)
            return
        chunk_index, fractions, _written = fut.result()
        self.progress.advance(self.tiles_task, count)
        state.outstanding.remove(fut)
        if stage.reads_dab and state.plan is not None:
            state.plan.fraction[chunk_index] = fractions
        if not state.outstanding:
            self._advance(state)

    def _fail(self, state: _SlideState, exc: BaseException) -> None:
        if not _is_slide_failure(exc):
            raise exc
        state.stage = Stage.FAILED
        for fut in state.outstanding:
            fut.cancel()
        self.failures[state.job.index] = exc
        self.progress.advance(self.slides_task)

    def _submit(self, state: _SlideState, stage: Stage, index: Any) -> None:
        """Hand the chunks of ``stage`` over the candidates ``index`` to the pool."""
        assert state.plan is not None
        tasks = make_chunks(state.plan, stage, index, workers=self.workers)
        state.stage = stage
        state.outstanding = []
        self.tiles_total += len(index)
        self.progress.update(self.tiles_task, total=self.tiles_total)
        for task in tasks:
            fut = self.executor.submit(run_chunk, task)
            self.pending[fut] = (state.job.index, stage, len(task.tile_ids))
            state.outstanding.append(fut)
        if not tasks:
            self._advance(state)

    def _finish(self, state: _SlideState) -> None:
        plan = state.plan
        assert plan is not None
        try:
            result = plan.part if plan.part is not None else finish_slide(plan)
        except BaseException as exc:
            self._fail(state, exc)
            return
        state.stage = Stage.DONE
        self.results[state.job.index] = result
        self.progress.advance(self.slides_task)

    def _advance(self, state: _SlideState) -> None:
        """Move a slide on once its current stage has no outstanding chunks."""
        steps: dict[Stage, Callable[[_SlideState], None]] = {
            Stage.PLAN: self._after_plan,
            Stage.LABEL: self._after_label,
            Stage.BOTH: self._after_both,
            Stage.WRITE: self._finish,
        }
        steps[state.stage](state)

    def _after_plan(self, state: _SlideState) -> None:
        import numpy as np

        plan = state.plan
        assert plan is not None
        options = plan.job.options
        if plan.part is not None:
            self._finish(state)
        elif plan.selected is None:  # IHC, labels from DAB still to find
            n = len(plan.x0)
            plan.fraction = np.full(n, np.nan)
            if options.balance or options.max_tiles is not None:
                self._submit(state, Stage.LABEL, np.arange(n))
            else:
                plan.selected = np.arange(n)
                self._submit(state, Stage.BOTH, plan.selected)
        elif options.image_format == "none":
            self._finish(state)
        else:
            self._submit(state, Stage.WRITE, plan.selected)
            if state.stage is Stage.WRITE:  # the workers cut tiles while this process draws
                try:
                    write_pictures(plan)
                except BaseException as exc:
                    self._fail(state, exc)

    def _after_label(self, state: _SlideState) -> None:
        plan = state.plan
        assert plan is not None
        options = plan.job.options
        plan.fraction, plan.labels = dab_labels(plan.fraction, dab_fraction=options.dab_fraction)
        plan.selected = select_tiles(
            plan.labels,
            balance=options.balance,
            max_tiles=options.max_tiles,
            rng=tile_rng(options.seed + 1, plan.job.slide_id),
        )
        if options.image_format == "none":
            self._finish(state)
        else:
            self._submit(state, Stage.WRITE, plan.selected)

    def _after_both(self, state: _SlideState) -> None:
        plan = state.plan
        assert plan is not None
        plan.fraction, plan.labels = dab_labels(
            plan.fraction, dab_fraction=plan.job.options.dab_fraction
        )
        self._finish(state)


def run_jobs(
    jobs: list[SlideJob], *, workers: int, progress: Any, executor: Any
) -> tuple[dict[int, dict[str, Any]], dict[int, BaseException]]:
    """Run every slide job on ``executor``; returns ``(results by job index, failures by job
    index)``. A slide's error (a HistolibError or OSError) fails that slide only; any other
    exception (a bug, Ctrl-C) propagates."""
    scheduler = _Scheduler(jobs, workers=workers, progress=progress, executor=executor)
    try:
        scheduler.run()
    finally:
        close_slides()
    return scheduler.results, scheduler.failures
