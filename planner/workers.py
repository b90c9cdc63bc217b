"""Independent solves run in worker processes: the planner's only parallelism.

`run_tasks` runs `function(*args)` for each task, `jobs` processes at a time, and returns the
results in task order, so what it computes never depends on `jobs`. Worker processes come from a
fork server (a clean process, safe even when the caller has started threads, as JAX does); tasks
and results travel pickled. A script that plans with jobs > 1 needs the usual
`if __name__ == "__main__":` guard.

The workers are started once per process and kept for later calls (closed at exit): a search
calls `run_tasks` dozens of times (every microbatch count, memory level and recompute mode), and
a fresh worker imports the caller's main module again (Python 3.11's fork server never preloads
it: its preparation data names the path `init_main_from_path`, the server looks for
`main_path`), about a second each time with onnx and numpy; a third of a search's time went to
that before workers were kept.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.pool
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_kept: list[tuple[int, multiprocessing.pool.Pool]] = []  # (size, pool): one set at most


def run_tasks(
    tasks: Sequence[tuple[Callable[..., T], tuple[object, ...]]],
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[T]:
    """`function(*args)` for each task, results in task order; `progress(done, total)` before the
    first and after each."""
    if progress is not None:
        progress(0, len(tasks))
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for done, (function, args) in enumerate(tasks, start=1):
            results.append(function(*args))
            if progress is not None:
                progress(done, len(tasks))
        return results
    pool = _pool(jobs)
    results_by_index: dict[int, T] = {}
    indexed = [(index, function, args) for index, (function, args) in enumerate(tasks)]
    try:
        for done, (index, result) in enumerate(pool.imap_unordered(_run_task, indexed), start=1):
            results_by_index[index] = result
            if progress is not None:
                progress(done, len(tasks))
    except BaseException:
        # A task's error or an interrupt: the workers may still hold the other tasks.
        close_workers()
        raise
    return [results_by_index[index] for index in range(len(tasks))]


def close_workers() -> None:
    """Stop the kept worker processes (the next `run_tasks` starts new ones)."""
    while _kept:
        _, pool = _kept.pop()
        pool.terminate()
        pool.join()


def _pool(jobs: int) -> multiprocessing.pool.Pool:
    if not _kept or _kept[0][0] != jobs:
        close_workers()  # a different size: one set of workers at a time
        _kept.append((jobs, multiprocessing.get_context("forkserver").Pool(jobs)))
    return _kept[0][1]


atexit.register(close_workers)


def _run_task(task: tuple[int, Callable[..., T], tuple[object, ...]]) -> tuple[int, T]:
    index, function, args = task
    return index, function(*args)
