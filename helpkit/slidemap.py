"""The per-slide map: run one job per slide, in this process or on a Dask cluster.

Every per-slide stage (the patch index, heatmaps, features) is ``map_slides(job, items,
keys, executor)``: ``job`` is a picklable callable (a module-level function or a frozen
dataclass with ``__call__``) that does one slide's work and returns something small (counts,
a path, a row of numbers); anything large it writes itself, atomically
(``helpkit.io.atomic_path``) under a name keyed by the slide, so a rerun skips what is done
and a killed run resumes. The executor is a parameter, not a rewrite:

- ``Executor()`` (the default): one slide after another in this process.
- ``Executor(scheduler="tcp://HOST:PORT")``: a running Dask cluster (``dask scheduler``,
  ``dask worker``). Workers must see the same paths (a shared filesystem).
- ``Executor(workers=N)``: a ``LocalCluster`` of N worker processes, one thread each unless
  told, started for the map and stopped after it; each worker's TensorFlow gets an equal
  share of the cores (``TF_NUM_INTRAOP_THREADS``).

One Dask task per slide; a worker that dies has its slides run again elsewhere (the
scheduler's own retry). ``process_cached`` keeps what a job loads (a run's models) in the
worker process across tasks, keyed by the identity of the files it came from. Progress counts
slides done across the cluster. ``HELPKIT_SCHEDULER`` / ``HELPKIT_WORKERS`` choose the executor
where no option does (``Executor.from_env``; the platform pipeline reads them).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from helpkit.errors import HelpkitError
from helpkit.progress import progress_bar

T = TypeVar("T")
R = TypeVar("R")

SCHEDULER_ENV = "HELPKIT_SCHEDULER"
WORKERS_ENV = "HELPKIT_WORKERS"


@dataclass(frozen=True)
class Executor:
    """Where per-slide jobs run: in this process (both None), on the cluster at ``scheduler``,
    or on a LocalCluster of ``workers`` processes with ``threads`` threads each."""

    scheduler: str | None = None
    workers: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.scheduler and self.workers:
            raise HelpkitError("give a scheduler address or a number of workers, not both")
        if self.workers is not None and self.workers <= 0 or self.threads <= 0:
            raise HelpkitError("the number of workers and threads must be positive")

    @property
    def in_process(self) -> bool:
        return not self.scheduler and not self.workers

    @classmethod
    def from_env(cls, scheduler: str | None = None, workers: int | None = None) -> Executor:
        """The executor the options ask for, else ``HELPKIT_SCHEDULER`` / ``HELPKIT_WORKERS``."""
        if scheduler or workers:
            return cls(scheduler=scheduler, workers=workers)
        env_workers = os.environ.get(WORKERS_ENV, "").strip()
        try:
            n = int(env_workers) if env_workers else None
        except ValueError:
            raise HelpkitError(f"{WORKERS_ENV} must be a number of worker processes, not {env_workers!r}") from None
        return cls(scheduler=os.environ.get(SCHEDULER_ENV, "").strip() or None, workers=n)

    def describe(self) -> str:
        if self.scheduler:
            return f"cluster {self.scheduler}"
        if self.workers:
            return f"local cluster of {self.workers} x {self.threads} thread"
        return "in process"


def worker_env(workers: int, cpus: int | None = None) -> dict[str, str]:
    """Environment of a LocalCluster worker: TensorFlow gets its share of the cores, not all."""
    share = max(1, (cpus or os.cpu_count() or 1) // workers)
    return {"TF_NUM_INTRAOP_THREADS": str(share), "TF_NUM_INTEROP_THREADS": "1"}


@contextlib.contextmanager
def local_cluster(workers: int, threads: int = 1, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A LocalCluster of ``workers`` processes on 127.0.0.1 (no dashboard); stopped on exit."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
        dashboard_address=None, env={**worker_env(workers), **(env or {})},
    )
    try:
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def client_for(executor: Executor) -> Iterator[Any]:
    """A Dask client on the executor's cluster (started here for ``workers``)."""
    from distributed import Client

    if executor.scheduler:
        try:
            client = Client(executor.scheduler, timeout="20s")
        except OSError as err:
            raise HelpkitError(f"cannot reach the Dask scheduler at {executor.scheduler} ({err})") from err
        with client:
            yield client
        return
    assert executor.workers
    with local_cluster(executor.workers, executor.threads) as cluster, Client(cluster) as client:
        yield client


_ACTIVE_BAR: Any = None


def active_progress() -> Any:
    """The progress bar of the in-process map running now (a job may add a task to it: the
    patches of its slide; removed when the job returns), or None: outside a map, or on a
    cluster worker."""
    return _ACTIVE_BAR


def map_slides(
    job: Callable[[T], R],
    items: Sequence[T],
    keys: Sequence[str],
    executor: Executor | None = None,
    description: str = "slides",
    progress: bool = True,
    cost: Sequence[float] | None = None,
) -> dict[str, R]:
    """Run ``job(item)`` for every item (one per slide) and return ``{key: result}`` in item order.

    In process the items run one after another; on a cluster each is one task and the results
    come back as they finish, the costliest first when ``cost`` (say, the slides' file sizes)
    is given, so no worker is left with a big slide at the end. An exception from a job stops
    the map and is raised here either way (jobs record per-slide failures in their results;
    what they raise is a bug).
    """
    executor = executor or Executor()
    if len(keys) != len(items) or len(set(keys)) != len(keys):
        raise HelpkitError(f"{description}: one distinct key per item is needed")
    results: dict[str, R] = {}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(progress_bar()) if progress else None
        label = description if executor.in_process else f"{description} · {executor.describe()}"
        task = bar.add_task(label, total=len(items)) if bar else None
        if executor.in_process:
            global _ACTIVE_BAR
            outer, _ACTIVE_BAR = _ACTIVE_BAR, bar
            try:
                for key, item in zip(keys, items):
                    results[key] = job(item)
                    if bar:
                        bar.advance(task)
                        for own in [t for t in bar.task_ids if t != task]:  # a job's rows last its slide
                            bar.remove_task(own)
            finally:
                _ACTIVE_BAR = outer
        elif items:
            from distributed import as_completed

            client = stack.enter_context(client_for(executor))
            run = uuid.uuid4().hex[:8]
            order = sorted(range(len(items)), key=lambda i: -cost[i]) if cost is not None else range(len(items))
            futures = client.map(job, [items[i] for i in order], key=[f"{description}-{keys[i]}-{run}" for i in order],
                                 pure=False)
            by_key = {f.key: keys[i] for f, i in zip(futures, order)}
            for future in as_completed(futures):
                results[by_key[future.key]] = future.result()
                future.release()
                if bar:
                    bar.advance(task)
    return {k: results[k] for k in keys}


_CACHE: dict[Any, tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


def process_cached(slot: Any, version: Any, make: Callable[[], T]) -> T:
    """``make()``'s value for ``slot``, made once per process while ``version`` stays the same.

    A Dask worker keeps a run's models across the slides it is given: ``slot`` names what is
    cached (a model file's path), ``version`` what it was made from (the file's identity); a
    new version replaces the old value, so a retrained model is loaded again and the cache
    holds one value per slot.
    """
    with _CACHE_LOCK:
        held = _CACHE.get(slot)
        if held is not None and held[0] == version:
            return held[1]
    value = make()
    with _CACHE_LOCK:
        _CACHE[slot] = (version, value)
        _MADE[slot] = _MADE.get(slot, 0) + 1
    return value


_MADE: dict[Any, int] = {}


def process_cache_stats() -> dict[str, int]:
    """How many times each slot's value was made in this process (a worker's model loads)."""
    with _CACHE_LOCK:
        return {str(slot): n for slot, n in _MADE.items()}


def clear_process_cache() -> None:
    """Forget every cached value of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _MADE.clear()
