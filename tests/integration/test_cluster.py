"""``--scheduler``: tiling and cell libraries on a real Dask cluster (processes on loopback).

The cluster is a ``distributed.LocalCluster`` of two worker processes of one thread each on
127.0.0.1 (:func:`histolib.core.dask_cluster.start_local_cluster`), shared by the tests of this
module. Every run on it must equal the local pool's run row for row, also when a worker
process dies in the middle of the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from histolib_cli.main import app
from tests.helpers_cluster import dies_once, profiler_enabled, worker_pid
from tests.helpers_proc import command_process, interrupt
from tests.helpers_tile import manifest_frame

pytest.importorskip("distributed")
pytestmark = pytest.mark.cluster
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(dask_cluster: Any) -> Any:
    return dask_cluster


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small synthetic H&E slides with their contours, tiled and built by the local pool."""
    from histolib.library.build import build_library
    from histolib.tiling.tiler import tile_slides
    from tests.helpers_synth import small_slide

    root = tmp_path_factory.mktemp("cohort")
    slides = root / "slides"
    for seed in (1, 2):
        small_slide(slides, seed=seed, width=1280, height=1024)
    local = tile_slides(slides, out=root / "local", annotations=slides, workers=2, progress=False)
    library = build_library(
        manifest=local, stain="he", out=root / "local_cells.parquet", workers=2, progress=False
    )
    return {"slides": slides, "manifest": local, "library": library}


def _digests(out: Path) -> dict[str, str]:
    """Every tile image under ``out/tiles``: relative path -> SHA-256 of its bytes."""
    root = out / "tiles"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def _same_run(manifest: Path, local: Path) -> None:
    """The manifest, its metadata and the tile images equal the local run's."""
    import pandas as pd

    from histolib.tileset.manifest import read_manifest

    pd.testing.assert_frame_equal(manifest_frame(manifest), manifest_frame(local))
    assert read_manifest(manifest)[1]["params"] == read_manifest(local)[1]["params"]
    tiles = _digests(manifest.parent)
    assert tiles == _digests(local.parent)
    assert len(tiles) == len(manifest_frame(manifest)) > 10
    assert not list(manifest.parent.rglob(".tmp-*"))


def _same_library(library: Path, local: Path, *, same_tiles: bool = True) -> None:
    """The cells, metadata and per-tile counts equal the local library's (``same_tiles``
    False: built from a copy of its tiles, so the paths differ)."""
    import pandas as pd

    from histolib.library.build import counts_path
    from histolib.library.cellio import read_library

    cells, meta = read_library(library)
    local_cells, local_meta = read_library(local)
    assert len(cells) > 0
    pd.testing.assert_frame_equal(cells.to_wkt(), local_cells.to_wkt())
    counts = pd.read_csv(counts_path(library))
    local_counts = pd.read_csv(counts_path(local))
    if not same_tiles:
        meta["params"].pop("source")
        local_meta["params"].pop("source")
        counts, local_counts = counts.drop(columns="image"), local_counts.drop(columns="image")
    assert meta["params"] == local_meta["params"]
    pd.testing.assert_frame_equal(counts, local_counts)


def test_the_local_cluster_is_processes_of_one_thread_on_loopback(cluster) -> None:
    from distributed import Client

    with Client(cluster.scheduler_address, set_as_default=False) as client:
        threads = client.nthreads()
        pids = client.run(worker_pid)
        profiling = client.run(profiler_enabled)
    assert not any(profiling.values())  # no dashboard, no profiler
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert len(threads) == 2 and set(threads.values()) == {1}
    assert all(address.startswith("tcp://127.0.0.1:") for address in threads)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_tiling_on_the_cluster_equals_the_local_pool(cluster, cohort, tmp_path) -> None:
    from histolib.tiling.tiler import tile_slides

    manifest = tile_slides(
        cohort["slides"],
        out=tmp_path / "dask",
        annotations=cohort["slides"],
        scheduler=cluster.scheduler_address,
        progress=False,
    )
    _same_run(manifest, cohort["manifest"])


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster, cohort, tmp_path, monkeypatch
) -> None:
    """The first chunk of tiles kills its worker process: Dask runs the chunks it held on
    the other worker (and the restarted one) and the run completes, equal to the local one."""
    from distributed import Client

    from histolib.tiling import scheduler
    from histolib.tiling.tiler import tile_slides

    marker = tmp_path / "killed"
    monkeypatch.setattr(scheduler, "run_chunk", dies_once(marker, scheduler.run_chunk))
    manifest = tile_slides(
        cohort["slides"],
        out=tmp_path / "dask",
        annotations=cohort["slides"],
        scheduler=cluster.scheduler_file_path,  # the scheduler-file form
        progress=False,
    )
    _same_run(manifest, cohort["manifest"])
    killed = int(marker.read_text())
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        assert killed not in client.run(worker_pid).values()  # that process is gone


def test_the_library_on_the_cluster_equals_the_local_one_despite_a_killed_worker(
    cluster, cohort, tmp_path, monkeypatch
) -> None:
    from histolib.library import build

    marker = tmp_path / "killed"
    monkeypatch.setattr(build, "run_tile_job", dies_once(marker, build.run_tile_job))
    library = build.build_library(
        manifest=cohort["manifest"],
        stain="he",
        out=tmp_path / "cells.parquet",
        scheduler=cluster.scheduler_address,
        progress=False,
    )
    assert marker.is_file()  # a worker did die
    _same_library(library, cohort["library"])
    # a re-run reads every tile from the cache: nothing is sent to the cluster
    monkeypatch.setattr(build, "run_tile_job", None)
    again = build.build_library(
        manifest=cohort["manifest"],
        stain="he",
        out=tmp_path / "cells.parquet",
        scheduler="tcp://127.0.0.1:1",  # never reached
        progress=False,
    )
    _same_library(again, cohort["library"])


def test_cli_runs_on_the_cluster_and_reports_a_bad_slide(
    cluster, cohort, tmp_path, shared_data
) -> None:
    slides = tmp_path / "slides"
    shutil.copytree(cohort["slides"], slides)
    shutil.copy(shared_data / "slides" / "broken.svs", slides / "broken.svs")
    out = tmp_path / "out"
    address = cluster.scheduler_address
    args = ["tile", str(slides), "--out", str(out), "--annotations", str(slides)]
    result = runner.invoke(app, [*args, "--scheduler", address])
    assert result.exit_code == 2, result.output  # some slides failed, the others are done
    assert "broken.svs" in result.output
    manifest = out / "tiles.parquet"
    pd_local = manifest_frame(cohort["manifest"]).drop(columns="slide_path")
    pd_dask = manifest_frame(manifest).drop(columns="slide_path")
    assert pd_dask.equals(pd_local)
    cells = tmp_path / "cells.parquet"
    built = runner.invoke(
        app, ["build-library", str(manifest), "--stain", "he", "--out", str(cells),
              "--scheduler", str(cluster.scheduler_file_path)]
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    _same_library(cells, cohort["library"], same_tiles=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "not both"),
        (["--scheduler", "{tmp}/none.json"], "none.json: no such scheduler file"),
    ],
)
def test_cli_scheduler_errors_are_one_line(cohort, tmp_path, extra, message) -> None:
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    if "--scheduler" not in extra:
        extra += ["--scheduler", "tcp://127.0.0.1:1"]
    lib = tmp_path / "c.parquet"
    for args in (
        ["tile", str(cohort["slides"]), "--out", str(tmp_path / "o")],
        ["build-library", str(cohort["manifest"]), "--stain", "he", "--out", str(lib)],
    ):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "tiles.parquet").exists()
    assert not (tmp_path / "c.parquet").exists()


def test_the_executor_passes_results_errors_and_cancellations(cluster) -> None:
    from concurrent.futures import wait

    from histolib.core.dask_cluster import DaskExecutor, connect
    from histolib.errors import InputError
    from tests.helpers_cluster import fails_with, slow_square

    executor = DaskExecutor(connect(cluster.scheduler_address), own_client=True)
    try:
        assert executor.workers == 2
        assert executor.submit(slow_square, 7, 0.0).result(timeout=60) == 49
        with pytest.raises(InputError, match=r"/somewhere/slide\.svs: bad tile") as info:
            executor.submit(fails_with, "bad tile").result(timeout=60)
        assert info.value.path == "/somewhere/slide.svs"
        busy = [executor.submit(slow_square, n, 1.5) for n in range(2)]  # both workers
        queued = executor.submit(slow_square, 5, 0.0)
        assert queued.cancel()
        done, _ = wait([queued], timeout=30)  # a cancelled future wakes wait()
        assert queued in done and queued.cancelled()
        assert [f.result(timeout=60) for f in busy] == [0, 1]
    finally:
        executor.shutdown()
    with pytest.raises(RuntimeError, match="shut-down"):
        executor.submit(slow_square, 1, 0.0)


def test_a_task_that_kills_every_worker_it_runs_on_is_a_one_line_error() -> None:
    import dask

    from histolib.core.dask_cluster import WorkerLostError, dask_executor, start_local_cluster
    from tests.helpers_cluster import always_dies

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        small = start_local_cluster(1, silence_logs=logging.CRITICAL)
    with small, dask_executor(small.scheduler_address) as executor:
        with pytest.raises(WorkerLostError, match="died each time it was tried"):
            executor.submit(always_dies).result(timeout=120)


def test_cluster_local_command_serves_until_ctrl_c(tmp_path) -> None:
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    cmd = ["cluster", "local", "--workers", "1", "--scheduler-file", str(scheduler_file)]
    with command_process(*cmd) as proc:
        lines = []
        assert proc.stdout is not None
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line.strip())
        address = next(x for x in lines if x.startswith("scheduler address:")).split()[-1]
        assert address.startswith("tcp://127.0.0.1:")
        assert f"scheduler file: {scheduler_file}" in lines
        assert json.loads(scheduler_file.read_text())["address"] == address
        with Client(scheduler_file=str(scheduler_file), set_as_default=False) as client:
            pids = client.run(worker_pid)
        assert len(pids) == 1 and proc.pid not in pids.values()
        out, err = interrupt(proc, timeout=60)
    assert proc.returncode == 130, err  # Ctrl-C, as every command (issue 23: it was 0)
    assert "stopped the Dask cluster" in out
    assert not scheduler_file.exists()


def test_cluster_local_help_shows_the_default_file_name() -> None:
    result = runner.invoke(app, ["cluster", "local", "--help"], terminal_width=200)
    assert "histolib-dask-<pid>.json" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--workers", "0"], "--workers must be >= 1"), (["--port", "70000"], "--port must be in")],
)
def test_cluster_local_refuses_bad_options(args, message) -> None:
    result = runner.invoke(app, ["cluster", "local", *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
