"""The Dask helper on a real LocalCluster: thread sizing, joining a running scheduler, and a worker that dies."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from medlens.engine import cluster

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_threads_never_oversubscribe_the_cores():
    assert cluster.threads_per_worker(2, cores=2) == 1
    assert cluster.threads_per_worker(4, cores=16) == 4
    assert cluster.threads_per_worker(8, cores=2) == 1
    assert cluster.threads_per_worker(3, cores=16) == 5


def _environment() -> tuple[str | None, int]:
    from distributed import get_worker

    return os.environ.get("OMP_NUM_THREADS"), get_worker().state.nthreads


def test_local_workers_get_their_share_of_threads():
    with cluster.dask_client(2, threads=1) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(_environment, pure=False).result() == ("1", 1)


def _allocator_settings() -> tuple[bool, dict[str, str | None]]:
    from medlens.engine.memory import KEEP_FREED_ENVIRON, keep_freed_memory

    return keep_freed_memory(), {name: os.environ.get(name) for name in KEEP_FREED_ENVIRON}


def test_training_workers_start_with_the_trainers_allocator_settings_and_leave_ours_alone():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which the Trainer must take for a user's choice of
    allocator settings; a study's local cluster starts its workers with the Trainer's own settings instead, and
    the variables the nanny copies into this process's environment are put back afterwards."""
    from medlens.engine.memory import KEEP_FREED_ENVIRON

    watched = [*KEEP_FREED_ENVIRON, "OMP_NUM_THREADS"]
    before = {name: os.environ.get(name) for name in watched}
    with cluster.dask_client(1, threads=1) as client:  # Dask's own environment: the Trainer leaves glibc alone
        applied, environ = client.submit(_allocator_settings, pure=False).result()
        assert applied is False and environ["MALLOC_ARENA_MAX"] is None and environ["MALLOC_MMAP_MAX_"] is None
    with cluster.dask_client(1, threads=1, environ=KEEP_FREED_ENVIRON) as client:
        applied, environ = client.submit(_allocator_settings, pure=False).result()
        assert environ == KEEP_FREED_ENVIRON and applied is False  # set at start-up by glibc itself instead
    assert {name: os.environ.get(name) for name in watched} == before


def _count_and_maybe_die(folder: str, name: str) -> str:
    """Record one call; the task named ``victim`` kills its worker process the first time it runs."""
    marker = Path(folder) / f"{name}.{len(list(Path(folder).glob(f'{name}.*')))}"
    marker.touch()
    if name == "victim" and marker.suffix == ".0":
        os._exit(1)  # the worker process dies without a word, as under the OOM killer
    return name


def test_a_dead_worker_loses_only_its_task_which_is_retried(tmp_path):
    names = ["a", "b", "victim", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cluster.dask_client(2, threads=1) as client:
            outcome = cluster.run_tasks(client, _count_and_maybe_die,
                                        [(f"task-{n}", (str(tmp_path), n)) for n in names])
    assert not outcome.errors
    assert outcome.results == {f"task-{n}": n for n in names}
    calls = sorted(p.name for p in tmp_path.iterdir())
    assert [c for c in calls if c.startswith("victim")] == ["victim.0", "victim.1"]  # died once, ran again
    # a finished result still held by the dead worker (not yet gathered) is computed again, once; a build task
    # that finds its patient's record returns it without work (test_lidc_build)
    others = [c for c in calls if not c.startswith("victim")]
    assert {c.split(".")[0] for c in others} == set("abcd") and all(c.endswith((".0", ".1")) for c in others)
    assert all(w.startswith("tcp://") for w in outcome.where.values())


def _boom(x: int) -> int:
    if x == 2:
        raise ValueError("bad patient")
    return x * 10


def test_an_error_in_one_task_leaves_the_others(tmp_path):
    done = []
    with cluster.dask_client(1, threads=2) as client:
        outcome = cluster.run_tasks(client, _boom, [(f"t{x}", (x,)) for x in range(4)], retries=0,
                                    on_done=lambda key, result: done.append(result))
    assert sorted(done) == [0, 10, 30] and "ValueError: bad patient" in outcome.errors["t2"]


def test_the_scheduler_address_comes_from_the_environment(monkeypatch):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as running:
        monkeypatch.setenv(cluster.SCHEDULER_ENV, running.scheduler_address)
        with cluster.dask_client(workers=5) as client:  # joins the running one; workers is ignored
            assert client.scheduler.address == running.scheduler_address
            assert len(client.scheduler_info()["workers"]) == 1
    monkeypatch.delenv(cluster.SCHEDULER_ENV)
    assert cluster.scheduler_address(None) is None and cluster.scheduler_address("tcp://x:1") == "tcp://x:1"
