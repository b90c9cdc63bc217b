"""Independent solves run in worker processes: the planner's only parallelism.

`run_tasks` runs `function(*args)` for each task, `jobs` processes at a time, and returns the
results in task order, so what it computes never depends on `jobs`. Worker processes come from a
fork server (a clean process, safe even when the caller has started threads, as JAX does); tasks
and results travel pickled. A script that plans with jobs > 1 needs the usual
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_tasks(
    tasks: Sequence[tuple[Callable[..., T], tuple[object, ...]]],
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[T]:
    """`function(*args)` for each task, results in task order; `progress(done, total)` after
    each."""
    if progress is not None:
        progress(0, len(tasks))
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for done, (function, args) in enumerate(tasks, start=1):
            results.append(function(*args))
            if progress is not None:
                progress(done, len(tasks))
        return results
    context = multiprocessing.get_context("forkserver")
    results_by_index: dict[int, T] = {}
    with context.Pool(min(jobs, len(tasks))) as pool:
        indexed = [(index, function, args) for index, (function, args) in enumerate(tasks)]
        for done, (index, result) in enumerate(pool.imap_unordered(_run_task, indexed), start=1):
            results_by_index[index] = result
            if progress is not None:
                progress(done, len(tasks))
    return [results_by_index[index] for index in range(len(tasks))]


def _run_task(task: tuple[int, Callable[..., T], tuple[object, ...]]) -> tuple[int, T]:
    index, function, args = task
    return index, function(*args)
