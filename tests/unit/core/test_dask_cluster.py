"""histolib.core.dask_cluster without a cluster: scheduler addresses and files, the local seam."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from histolib.core.dask_cluster import (
    ClusterError,
    check_scheduler,
    executor_pool,
    is_address,
    scheduler_address,
)
from histolib.core.parallel import InlineExecutor
from histolib.core.progress import imap_processes
from histolib.errors import ConfigError, InputError


def test_an_address_is_used_as_given() -> None:
    assert is_address("tcp://10.0.0.5:8786")
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert not is_address("/shared/scheduler.json")


def test_a_scheduler_file_gives_its_address(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:4242"}))
    assert scheduler_address(path) == "tcp://127.0.0.1:4242"
    assert scheduler_address(str(path)) == "tcp://127.0.0.1:4242"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such scheduler file"),
        ("{not json", "not a Dask scheduler file"),
        (json.dumps({"type": "Scheduler"}), "records no address"),
        (json.dumps(["tcp://127.0.0.1:1"]), "records no address"),
        (json.dumps({"address": "127.0.0.1:1"}), "records no address"),
    ],
)
def test_a_bad_scheduler_file_is_named(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "scheduler.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        scheduler_address(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_workers_and_scheduler_exclude_each_other() -> None:
    check_scheduler(None, 4)
    check_scheduler("tcp://127.0.0.1:1", None)
    with pytest.raises(ConfigError, match="not both"):
        check_scheduler("tcp://127.0.0.1:1", 2)


def test_without_a_scheduler_the_pool_is_the_local_one() -> None:
    with executor_pool(1) as (pool, workers):
        assert isinstance(pool, InlineExecutor) and workers == 1
        assert pool.submit(pow, 3, 2).result() == 9
    with executor_pool(2) as (pool, workers):
        assert workers == 2
        assert sorted(pool.submit(pow, n, 2).result() for n in range(4)) == [0, 1, 4, 9]


def test_an_unreachable_scheduler_is_a_one_line_error() -> None:
    pytest.importorskip("distributed")
    from histolib.core.dask_cluster import connect

    with pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at tcp://127\.0"):
        connect("tcp://127.0.0.1:1", timeout=1)


def _thread_name(_item: int) -> str:
    return threading.current_thread().name


def test_one_worker_runs_on_the_pool_given_unless_it_is_inline() -> None:
    """A Dask cluster of one worker thread is still the cluster: the items go to the pool."""
    main = threading.current_thread().name
    with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        names = [r for _, r in imap_processes(_thread_name, range(3), workers=1, pool=pool)]
    assert all(name.startswith("pool") for name in names)
    inline = InlineExecutor()
    here = [r for _, r in imap_processes(_thread_name, range(3), workers=1, pool=inline)]
    assert here == [main] * 3
