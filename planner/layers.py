"""Layer clustering: consecutive ops grouped into the units the inter-op pass cuts between.

With the exporter's name scopes (torch's dynamo exporter records `transformer.h.7`,
`layers.3`, ...): each op belongs to the outermost scope that is an item of a module list
(`<name>.<index>`); ops outside any (embeddings, the final norm, the head) join their
neighbouring layer. Otherwise, and to reach a requested number of layers, a dynamic program
in the manner of Alpa's auto layer construction groups consecutive units (scoped layers, or
single ops) so that every layer's FLOPs stay within (1 + eps) of the mean and the bytes that
cross layer boundaries are least.

Layers are runs of the graph's topological order, so any cut between them sends data forward.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.graph import Graph, Op, Tensor, TensorKind

_LIST_ITEM = re.compile(r"^(?:.*\.)?[A-Za-z_]\w*\.(\d+)$")
# FLOPs balance tolerance of the auto layer construction; widened until a clustering exists.
_BALANCE_EPS = (0.1, 0.25, 0.5, 1.0, 2.0, math.inf)
_MAX_DEFAULT_LAYERS = 32


@dataclass(frozen=True)
class LayerSlice:
    """Layer `name`: ops[start:stop] of the graph."""

    name: str
    start: int
    stop: int


def _scope_key(op: Op) -> str | None:
    for scope in op.scopes:
        if _LIST_ITEM.match(scope):
            return scope
    return None


def scoped_units(graph: Graph) -> list[LayerSlice]:
    """One unit per module-list scope, in order; unscoped ops join the unit before them (the
    first unit for ops before any scope). Empty when the model has no such scopes."""
    keys = [_scope_key(op) for op in graph.ops]
    if not any(keys):
        return []
    units: list[LayerSlice] = []
    current: str | None = None
    start = 0
    for index, key in enumerate(keys):
        if key is None or key == current:
            continue
        if current is not None:
            units.append(LayerSlice(current, start, index))
            start = index
        current = key
    assert current is not None
    units.append(LayerSlice(current, start, len(graph.ops)))
    # Ops before the first scope belong to the first unit (start = 0 above).
    return _merge_repeats(units)


def _merge_repeats(units: list[LayerSlice]) -> list[LayerSlice]:
    """A scope that reappears after another (an op the exporter ordered late) stays in the run
    it appears in; keep names unique by suffixing the later runs."""
    seen: dict[str, int] = {}
    renamed = []
    for unit in units:
        count = seen.get(unit.name, 0)
        seen[unit.name] = count + 1
        name = unit.name if count == 0 else f"{unit.name}#{count}"
        renamed.append(LayerSlice(name, unit.start, unit.stop))
    return renamed


def boundary_bytes(graph: Graph, tensors: Mapping[str, Tensor]) -> list[float]:
    """bytes[i]: activation bytes produced by ops[:i + 1] and read by ops[i + 1:] (what a cut
    after op i would send)."""
    position = {op.name: index for index, op in enumerate(graph.ops)}
    last_use: dict[str, int] = {}
    for index, op in enumerate(graph.ops):
        for name in op.present_inputs:
            last_use[name] = index
    crossing = [0.0] * (len(graph.ops) + 1)
    for name, last in last_use.items():
        producer = graph.producer.get(name)
        if producer is None or tensors[name].kind is not TensorKind.ACTIVATION:
            continue
        first = position[producer.name]
        if last > first:
            crossing[first] += tensors[name].size_bytes
            crossing[last] -= tensors[name].size_bytes
    running = 0.0
    result = []
    for index in range(len(graph.ops)):
        running += crossing[index]
        result.append(running)
    return result


def cluster_layers(graph: Graph, num_layers: int | None = None) -> tuple[LayerSlice, ...]:
    """The model's layers: its scoped layers, or `num_layers` balanced groups of them (or of
    ops, without scopes)."""
    units = scoped_units(graph)
    if not units:
        units = [LayerSlice(op.name, index, index + 1) for index, op in enumerate(graph.ops)]
        default = _default_layer_count(graph)
    else:
        # Many scoped layers: group k at a time, k the least that brings them to at most
        # `_MAX_DEFAULT_LAYERS` (evenly, so repeated blocks stay alike).
        group = math.ceil(len(units) / _MAX_DEFAULT_LAYERS)
        default = math.ceil(len(units) / group)
    target = min(num_layers or default, len(units))
    if target == len(units):
        return tuple(units)
    return _group_units(graph, units, target)


def _default_layer_count(graph: Graph) -> int:
    """Without scopes: one layer per two contractions, between 1 and 16."""
    contractions = sum(1 for op in graph.ops if op.op_type in ("MatMul", "Gemm", "Einsum", "Conv"))
    return max(1, min(16, contractions // 2))


def _group_units(graph: Graph, units: Sequence[LayerSlice], target: int) -> tuple[LayerSlice, ...]:
    """Alpa's auto layer construction over units: `target` consecutive groups, each within
    (1 + eps) of the mean FLOPs, with the least bytes crossing the cuts."""
    flops = [sum(op.flops for op in graph.ops[u.start : u.stop]) for u in units]
    crossing = boundary_bytes(graph, graph.tensors)
    cut_bytes = [crossing[u.stop - 1] for u in units]  # a cut after unit k
    prefix = [0.0]
    for value in flops:
        prefix.append(prefix[-1] + value)
    mean = prefix[-1] / target
    for eps in _BALANCE_EPS:
        groups = _balanced_cuts(prefix, cut_bytes, target, (1 + eps) * mean)
        if groups is not None:
            break
    assert groups is not None  # eps = inf always succeeds
    layers = []
    for first, last in groups:
        name = units[first].name if first == last else f"{units[first].name}..{units[last].name}"
        layers.append(LayerSlice(name, units[first].start, units[last].stop))
    return tuple(layers)


def _balanced_cuts(
    prefix: Sequence[float], cut_bytes: Sequence[float], target: int, limit: float
) -> list[tuple[int, int]] | None:
    """G[k][i]: the best split of units[:i] into k groups of at most `limit` FLOPs each, by
    (bytes crossing the cuts, then sum of squared FLOPs: the more even the better); returns
    the groups as (first, last) unit indices."""
    n = len(prefix) - 1
    worst = (math.inf, math.inf)
    best = [[worst] * (n + 1) for _ in range(target + 1)]
    back = [[-1] * (n + 1) for _ in range(target + 1)]
    best[0][0] = (0.0, 0.0)
    for k in range(1, target + 1):
        for i in range(k, n - (target - k) + 1):
            for j in range(k - 1, i):
                group = prefix[i] - prefix[j]
                if best[k - 1][j] == worst or group > limit:
                    continue
                crossing, spread = best[k - 1][j]
                cost = (crossing + (cut_bytes[i - 1] if i < n else 0.0), spread + group * group)
                if cost < best[k][i]:
                    best[k][i] = cost
                    back[k][i] = j
    if best[target][n] == worst:
        return None
    groups = []
    i = n
    for k in range(target, 0, -1):
        j = back[k][i]
        groups.append((j, i - 1))
        i = j
    return groups[::-1]
