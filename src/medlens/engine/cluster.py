"""Dask distributed for work that splits into independent tasks (patients of an archive build, folds × models).

:func:`dask_client` gives a :class:`distributed.Client`:

* ``scheduler`` (or the ``MEDLENS_DASK_SCHEDULER`` environment variable) joins a running scheduler, e.g. one
  that ``dask-jobqueue`` started on SLURM (``SLURMCluster(...).scale(jobs=16)``; its ``scheduler_address``)
  or ``dask-kubernetes`` on Kubernetes;
* otherwise a :class:`distributed.LocalCluster` of ``workers`` processes, each with
  ``threads = max(1, cores // workers)`` threads, and ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
  ``OPENBLAS_NUM_THREADS`` set to that number before the worker starts (Dask's
  ``distributed.nanny.pre-spawn-environ``), so that N workers never run more than the machine's cores.

:func:`run_tasks` submits one task per item and hands each small result to a callback as it arrives. Tasks
should write their large outputs themselves and return only a summary, so nothing large travels back to the
client. A worker that dies (killed, out of memory) loses only the tasks it was running and the results it still held:
the scheduler runs them again on another worker (up to ``distributed.scheduler.allowed-failures`` deaths per
task, default 3), and ``retries`` re-runs a task that raised. Tasks that write their output and record it (the
archive build) make such a rerun cheap: they find their record and return at once. Any callable and arguments that pickle can be a task: a study can submit
``fit one model on one fold`` the same way.

References: Dask distributed documentation, "Launching Clusters" and "Resilience"
(https://distributed.dask.org/en/stable/resilience.html); dask-jobqueue, "SLURMCluster"
(https://jobqueue.dask.org/en/latest/generated/dask_jobqueue.SLURMCluster.html).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

SCHEDULER_ENV = "MEDLENS_DASK_SCHEDULER"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """``max(1, cores // workers)``: the threads each of ``workers`` local workers gets."""
    return max(1, (cores or usable_cores()) // max(1, workers))


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The scheduler to join: ``scheduler``, else ``$MEDLENS_DASK_SCHEDULER``, else None (start a local one)."""
    return scheduler or os.environ.get(SCHEDULER_ENV) or None


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, *, threads: int | None = None,
                memory_limit: str | None = "auto", environ: dict[str, str] | None = None) -> Iterator[Any]:
    """A Dask client on a running scheduler or on a local cluster closed when the block ends.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster (default: one per usable core). Ignored with a scheduler.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); default ``$MEDLENS_DASK_SCHEDULER``.
    threads : int, optional
        Threads per local worker (default :func:`threads_per_worker`).
    memory_limit : str, optional
        Per-worker memory limit of the local cluster (Dask's ``"auto"`` shares the machine's memory).
    environ : dict, optional
        More environment variables for the local workers, set before they start (e.g. glibc's ``MALLOC_*``
        settings, read only at a process's start). Dask's nanny copies the pre-spawn variables into this
        process's environment to spawn a worker and leaves them there; they are put back as they were when
        the block ends, so nothing this process starts later inherits them.
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address is not None:
        with Client(address) as client:
            yield client
        return
    n = workers or usable_cores()
    per = threads or threads_per_worker(n)
    spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **(environ or {}),
             **{name: str(per) for name in _THREAD_VARIABLES}}
    before = {name: os.environ.get(name) for name in spawn}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
            with LocalCluster(n_workers=n, threads_per_worker=per, processes=True, memory_limit=memory_limit,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                yield client
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class TaskOutcome:
    """Results by key, errors by key (the exception's text), and the worker each finished task ran on."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)


def _located(function: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    """Run on a worker: ``function(*args)`` and the address of the worker that ran it."""
    from distributed import get_worker

    try:
        where = get_worker().address
    except ValueError:  # not inside a worker
        where = "local"
    return function(*args), where


def run_tasks(client: Any, function: Callable[..., Any], items: Iterable[tuple[str, tuple]], *,
              retries: int = 1, on_done: Callable[[str, Any], None] | None = None,
              on_error: Callable[[str, BaseException], None] | None = None) -> TaskOutcome:
    """Run ``function(*args)`` for each ``(key, args)`` of ``items`` on ``client``'s workers.

    Each task is submitted under its own key (``pure=False``: run even if an equal task ran before) with
    ``retries``; results are handed to ``on_done`` in the order they finish, and the worker that produced each
    is recorded in ``where``. An exception in one task is recorded (and given to ``on_error``) and the others
    go on. A finished result that a dying worker still held is computed again and waited for, not taken
    for an error.
    """
    from distributed import as_completed

    futures = {client.submit(_located, function, *args, key=key, retries=retries, pure=False): key
               for key, args in items}
    outcome = TaskOutcome()
    for future in as_completed(list(futures)):
        key = futures[future]
        try:
            # a result lost with its worker after the future finished is computed again: result() waits for it
            result, where = future.result()
        except Exception as error:  # the task's own exception, KilledWorker, or cancellation
            outcome.errors[key] = f"{type(error).__name__}: {error}"
            if on_error is not None:
                on_error(key, error)
        else:
            outcome.results[key], outcome.where[key] = result, where
            if on_done is not None:
                on_done(key, result)
        future.release()
    return outcome
