"""The worker pool: results in task order whatever `jobs`, workers kept between calls, errors raised."""

from __future__ import annotations

import math
import os

import pytest

from planner.workers import close_workers, run_tasks


def test_results_are_in_task_order_for_any_jobs() -> None:
    tasks = [(pow, (2, exponent)) for exponent in range(20)]
    expected = [2**exponent for exponent in range(20)]
    assert run_tasks(tasks, 1) == expected
    assert run_tasks(tasks, 2) == expected


def test_workers_are_kept_between_calls_and_restarted_after_close() -> None:
    first = set(run_tasks([(os.getpid, ())] * 8, 2))
    second = set(run_tasks([(os.getpid, ())] * 8, 2))
    assert os.getpid() not in first
    assert second <= first  # the same processes served both calls
    close_workers()
    third = set(run_tasks([(os.getpid, ())] * 8, 2))
    assert not third & first


def test_a_task_error_reaches_the_caller_and_the_next_call_works() -> None:
    with pytest.raises(ValueError, match="math domain error"):
        run_tasks([(math.sqrt, (4.0,)), (math.sqrt, (-1.0,))], 2)
    assert run_tasks([(math.sqrt, (9.0,)), (math.sqrt, (16.0,))], 2) == [3.0, 4.0]


def test_progress_counts_every_task() -> None:
    seen: list[tuple[int, int]] = []
    run_tasks([(abs, (-k,)) for k in range(5)], 2, lambda done, total: seen.append((done, total)))
    assert seen == [(k, 5) for k in range(6)]  # (0, total) first: the step has begun
