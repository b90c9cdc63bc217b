"""Which microbatch counts a search tries: one policy for the search and the baselines.

A count must divide the batch. Without a given count, the counts are tried coarse to fine:
first the powers of four that divide the batch and the batch itself; then, around the best so
far, the divisor geometrically halfway to each tried neighbour, until no untried divisor lies
between the best and its neighbours. The search is exact when the iteration time is unimodal in
the count (pipeline bubbles shrink with more microbatches, per-microbatch latencies and
collectives grow); a count that fits nothing has an infinite objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping


def divisors(n: int) -> tuple[int, ...]:
    """The divisors of `n`, ascending; O(sqrt n), so a batch of a million costs nothing."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(small + [n // d for d in reversed(small) if d * d != n])


def coarse_counts(batch_size: int) -> tuple[int, ...]:
    """The counts tried first: the powers of four that divide the batch, and the batch."""
    powers = {d for d in divisors(batch_size) if d & (d - 1) == 0 and (d.bit_length() - 1) % 2 == 0}
    return tuple(sorted(powers | {batch_size}))


def refined_counts(batch_size: int, objective_s: Mapping[int, float]) -> tuple[int, ...]:
    """The next counts to try, given the objective of each count tried (inf: infeasible): the
    divisor geometrically halfway between the best and each neighbour tried, when one lies
    strictly between; () when the search is done."""
    feasible = [count for count, value in objective_s.items() if math.isfinite(value)]
    if not feasible:
        return ()
    best = min(feasible, key=lambda count: (objective_s[count], count))
    tried = sorted(objective_s)
    below = [count for count in tried if count < best]
    above = [count for count in tried if count > best]
    intervals = ([(below[-1], best)] if below else []) + ([(best, above[0])] if above else [])
    found = []
    for low, high in intervals:
        between = [d for d in divisors(batch_size) if low < d < high]
        if between:
            middle = math.sqrt(low * high)
            found.append(min(between, key=lambda d: (abs(math.log(d / middle)), d)))
    return tuple(found)


def search_counts(
    batch_size: int, given: int | None, objective_s: Callable[[int], float]
) -> dict[int, float]:
    """Every count tried, in the order tried, with its objective (`objective_s(count)`; inf
    when nothing fits): only `given` when set, else coarse to fine (module docstring)."""
    if given is not None:
        return {given: objective_s(given)}
    tried: dict[int, float] = {}
    pending = list(coarse_counts(batch_size))
    while pending:
        count = pending.pop(0)
        tried[count] = objective_s(count)
        if not pending:
            pending = [c for c in refined_counts(batch_size, tried) if c not in tried]
    return tried
