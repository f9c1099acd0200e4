"""Fixtures of the integration tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real Dask ``LocalCluster`` for one test module: two worker processes of one thread
    each on 127.0.0.1, no dashboard port outside loopback, writing a scheduler file (its path
    in ``scheduler_file_path``)."""
    pytest.importorskip("distributed")
    from histolib.core.dask_cluster import start_local_cluster

    scheduler_file: Path = tmp_path_factory.mktemp("dask") / "scheduler.json"
    with start_local_cluster(2, scheduler_file=scheduler_file, silence_logs=logging.CRITICAL) as c:
        c.scheduler_file_path = scheduler_file
        yield c
