r"""The intra-operator ILP: one strategy per node, minimal cost, memory within budget.

Formulation (docs/DESIGN.md section 6; Alpa, OSDI'22, section 4.2)
-------------------------------------------------------------
Nodes v (ops, or groups of ops merged into one) each have strategies i = 1..k_v with cost c_v[i]
(seconds per iteration: compute, collectives, gradient sync) and memory m_v[i] (bytes per
device). An edge (u, v) carries tensors from u to v; its resharding cost depends only on the
sharding specs at its two ends, so strategies are grouped into *classes* by the spec they give
the edge's tensors (class a on the source side, b on the target side), and R_uv[a, b] is the
resharding cost between classes.

    variables   s_v[i] in {0, 1}                 strategy i chosen for node v
                e_uv[a, b] in [0, 1]             classes a and b chosen at the edge's ends

    minimise    sum_v sum_i c_v[i] s_v[i]  +  sum_(u,v) sum_(a,b) R_uv[a, b] e_uv[a, b]

    subject to  sum_i s_v[i] = 1                                   for every node v      (1)
                sum_b e_uv[a, b] = sum_(i in class a) s_u[i]        for every edge, a     (2)
                sum_a e_uv[a, b] = sum_(j in class b) s_v[j]        for every edge, b     (3)
                sum_v sum_i m_v[i] s_v[i] <= memory budget                                 (4)
                objective <= cutoff (when given: a plan found elsewhere is this good)       (5)

(2) and (3) linearise the product s_u s_v (Alpa's e_uv = s_u s_v^T): with one-hot s, the only
e satisfying both is the indicator of the chosen pair of classes, so e needs no integrality.
Grouping by class (rather than by strategy pair) gives |classes_u| x |classes_v| edge variables
instead of k_u x k_v. A pair that is forbidden (infinite cost) has its e fixed to 0.

Which function builds what:
    `_node_columns`         the s variables, their costs (objective, first term)
    `_edge_columns`         the e variables, their costs (objective, second term)
    `_one_hot_rows`         constraint family (1)
    `_edge_marginal_rows`   constraint families (2) and (3)
    `_memory_row`           constraint (4)
    `_cutoff_row`           constraint (5)
    `build_ilp`             all of the above as one `IlpProblem`; `solve` hands it to HiGHS
    `rounded_relaxation`    the LP relaxation rounded, kept when it is within the relative gap
                            of the relaxation's optimum (a lower bound): then no branch and
                            bound is needed (on a tree the relaxation is integral)
    `solve_least_memory`    the cheapest of the least-memory choices (for plans that fit
                            nowhere): (4) replaced by keeping only each node's least-memory
                            strategies, since the least total memory is the sum of the nodes'
                            least (a budget row at exactly that total is a knapsack row with no
                            slack, which HiGHS can spend its whole time limit on)

Before building, `simplify` folds edges that touch a node with a single strategy into the other
node's costs (a constant when both have one) and merges parallel edges between the same pair of
nodes. Costs reach HiGHS in microseconds and memory as a fraction of the budget, which keeps
coefficients near 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from planner.ilp_solver import IlpInfeasible, IlpProblem, IlpSolution, solve_ilp, solve_relaxation

_COST_SCALE = 1e6  # seconds -> microseconds in the objective
# Relative slack on the rounded relaxation's gap: the LP's optimum is exact only to HiGHS's
# dual feasibility tolerance (1e-7 by default), and a tie must not fall to branch and bound.
_RELAXATION_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Node:
    costs: tuple[float, ...]  # seconds, per strategy
    memory: tuple[float, ...]  # bytes, per strategy


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    source_class: tuple[int, ...]  # per strategy of the source node: its row of `costs`
    target_class: tuple[int, ...]  # per strategy of the target node: its column
    costs: tuple[tuple[float, ...], ...]  # seconds, [row][column]; math.inf forbids the pair


@dataclass(frozen=True)
class StrategyProblem:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    memory_budget: float  # bytes; math.inf for none


@dataclass(frozen=True)
class StrategySolution:
    choices: tuple[int, ...]  # strategy index per node
    objective_s: float  # recomputed from the choices (see `evaluate`)
    solver_objective_s: float  # as HiGHS reported it
    status: str  # "optimal" or "time limit"
    mip_gap: float
    num_variables: int
    num_constraints: int


class CutoffExceeded(Exception):
    """No choice of strategies is cheaper than the cutoff."""


class MemoryInfeasible(Exception):
    """No choice of strategies fits the memory budget."""

    def __init__(self, budget: float, minimum: float) -> None:
        self.budget = budget
        self.minimum = minimum
        super().__init__(f"needs at least {minimum:.0f} bytes, budget {budget:.0f}")


def evaluate(problem: StrategyProblem, choices: tuple[int, ...]) -> tuple[float, float]:
    """(cost in seconds, memory in bytes) of one choice of strategies."""
    cost = sum(node.costs[i] for node, i in zip(problem.nodes, choices, strict=True))
    memory = sum(node.memory[i] for node, i in zip(problem.nodes, choices, strict=True))
    for edge in problem.edges:
        row = edge.source_class[choices[edge.source]]
        column = edge.target_class[choices[edge.target]]
        cost += edge.costs[row][column]
    return cost, memory


def brute_force(problem: StrategyProblem) -> tuple[tuple[int, ...], float] | None:
    """The optimum by enumeration (small problems only): choices and cost, or None."""
    best: tuple[tuple[int, ...], float] | None = None
    for choices in itertools.product(*(range(len(node.costs)) for node in problem.nodes)):
        cost, memory = evaluate(problem, choices)
        fits = memory <= problem.memory_budget and math.isfinite(cost)
        if fits and (best is None or cost < best[1]):
            best = (choices, cost)
    return best


def minimum_memory(problem: StrategyProblem) -> float:
    """The least memory any choice needs: memory is a sum over nodes, so each node's least."""
    return sum(min(node.memory) for node in problem.nodes)


@dataclass(frozen=True)
class _Simplified:
    """Node costs with single-strategy edges folded in, merged multi-edges, and a constant."""

    costs: tuple[tuple[float, ...], ...]
    edges: tuple[Edge, ...]
    constant_s: float


def simplify(problem: StrategyProblem) -> _Simplified:
    costs = [list(node.costs) for node in problem.nodes]
    constant = 0.0
    merged: dict[tuple[int, int], list[Edge]] = {}
    for edge in problem.edges:
        source_single = len(problem.nodes[edge.source].costs) == 1
        target_single = len(problem.nodes[edge.target].costs) == 1
        if source_single and target_single:
            constant += edge.costs[edge.source_class[0]][edge.target_class[0]]
        elif source_single:
            row = edge.costs[edge.source_class[0]]
            for j, column in enumerate(edge.target_class):
                costs[edge.target][j] += row[column]
        elif target_single:
            column = edge.target_class[0]
            for i, row_index in enumerate(edge.source_class):
                costs[edge.source][i] += edge.costs[row_index][column]
        elif any(value != 0 for row in edge.costs for value in row):
            merged.setdefault((edge.source, edge.target), []).append(edge)
    edges = tuple(_merge_parallel(group) for _, group in sorted(merged.items()))
    return _Simplified(tuple(tuple(c) for c in costs), edges, constant)


def _merge_parallel(edges: list[Edge]) -> Edge:
    """One edge whose classes are the tuples of the parallel edges' classes."""
    if len(edges) == 1:
        return edges[0]
    first = edges[0]
    source_keys = [tuple(e.source_class[i] for e in edges) for i in range(len(first.source_class))]
    target_keys = [tuple(e.target_class[j] for e in edges) for j in range(len(first.target_class))]
    rows = sorted(set(source_keys))
    columns = sorted(set(target_keys))
    costs = tuple(
        tuple(sum(e.costs[r[k]][c[k]] for k, e in enumerate(edges)) for c in columns) for r in rows
    )
    return Edge(
        source=first.source,
        target=first.target,
        source_class=tuple(rows.index(key) for key in source_keys),
        target_class=tuple(columns.index(key) for key in target_keys),
        costs=costs,
    )


@dataclass(frozen=True)
class _Layout:
    """Where each node's and edge's variables start among the ILP's columns."""

    node_start: tuple[int, ...]
    edge_start: tuple[int, ...]
    num_columns: int


class _Builder:
    """Collects columns and (row, column, value) triples."""

    def __init__(self) -> None:
        self.costs: list[float] = []
        self.upper: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[int] = []
        self.columns: list[int] = []
        self.values: list[float] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []

    def column(self, cost: float, integer: bool) -> int:
        forbidden = not math.isfinite(cost)
        self.costs.append(0.0 if forbidden else cost * _COST_SCALE)
        self.upper.append(0.0 if forbidden else 1.0)
        self.integer.append(integer)
        return len(self.costs) - 1

    def row(self, entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        index = len(self.row_lower)
        for column, value in entries:
            self.rows.append(index)
            self.columns.append(column)
            self.values.append(value)
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def problem(self) -> IlpProblem:
        columns = np.asarray(self.columns, dtype=np.int64)
        order = np.argsort(columns, kind="stable")
        counts = np.bincount(columns, minlength=len(self.costs))
        start = np.zeros(len(self.costs) + 1, dtype=np.int32)
        start[1:] = np.cumsum(counts)
        return IlpProblem(
            costs=np.asarray(self.costs, dtype=np.float64),
            col_lower=np.zeros(len(self.costs)),
            col_upper=np.asarray(self.upper, dtype=np.float64),
            integer=np.asarray(self.integer, dtype=bool),
            row_lower=np.asarray(self.row_lower, dtype=np.float64),
            row_upper=np.asarray(self.row_upper, dtype=np.float64),
            matrix_start=start,
            matrix_rows=np.asarray(self.rows, dtype=np.int32)[order],
            matrix_values=np.asarray(self.values, dtype=np.float64)[order],
        )


def _node_columns(builder: _Builder, costs: tuple[tuple[float, ...], ...]) -> tuple[int, ...]:
    starts = []
    for node_costs in costs:
        starts.append(len(builder.costs))
        for cost in node_costs:
            builder.column(cost, integer=True)
    return tuple(starts)


def _edge_columns(builder: _Builder, edges: tuple[Edge, ...]) -> tuple[int, ...]:
    starts = []
    for edge in edges:
        starts.append(len(builder.costs))
        for row in edge.costs:
            for cost in row:
                builder.column(cost, integer=False)
    return tuple(starts)


def _one_hot_rows(builder: _Builder, problem: StrategyProblem, layout: _Layout) -> None:
    for node, start in zip(problem.nodes, layout.node_start, strict=True):
        builder.row([(start + i, 1.0) for i in range(len(node.costs))], 1.0, 1.0)


def _edge_marginal_rows(builder: _Builder, edges: tuple[Edge, ...], layout: _Layout) -> None:
    for edge, start in zip(edges, layout.edge_start, strict=True):
        num_rows, num_columns = len(edge.costs), len(edge.costs[0])
        source = layout.node_start[edge.source]
        target = layout.node_start[edge.target]
        for a in range(num_rows):
            entries = [(start + a * num_columns + b, 1.0) for b in range(num_columns)]
            entries += [(source + i, -1.0) for i, cls in enumerate(edge.source_class) if cls == a]
            builder.row(entries, 0.0, 0.0)
        for b in range(num_columns):
            entries = [(start + a * num_columns + b, 1.0) for a in range(num_rows)]
            entries += [(target + j, -1.0) for j, cls in enumerate(edge.target_class) if cls == b]
            builder.row(entries, 0.0, 0.0)


def _memory_row(builder: _Builder, problem: StrategyProblem, layout: _Layout) -> None:
    if not math.isfinite(problem.memory_budget):
        return
    scale = 1.0 / problem.memory_budget if problem.memory_budget > 0 else 1.0
    entries = [
        (start + i, memory * scale)
        for node, start in zip(problem.nodes, layout.node_start, strict=True)
        for i, memory in enumerate(node.memory)
        if memory
    ]
    builder.row(entries, -math.inf, problem.memory_budget * scale)


def _cutoff_row(builder: _Builder, cutoff_s: float, constant_s: float) -> None:
    if not math.isfinite(cutoff_s):
        return
    entries = [(column, cost) for column, cost in enumerate(builder.costs) if cost]
    builder.row(entries, -math.inf, (cutoff_s - constant_s) * _COST_SCALE)


def build_ilp(
    problem: StrategyProblem, simplified: _Simplified, cutoff_s: float = math.inf
) -> IlpProblem:
    builder = _Builder()
    node_start = _node_columns(builder, simplified.costs)
    edge_start = _edge_columns(builder, simplified.edges)
    layout = _Layout(node_start, edge_start, len(builder.costs))
    _one_hot_rows(builder, problem, layout)
    _edge_marginal_rows(builder, simplified.edges, layout)
    _memory_row(builder, problem, layout)
    _cutoff_row(builder, cutoff_s, simplified.constant_s)
    return builder.problem()


def solve(
    problem: StrategyProblem,
    time_limit_s: float,
    relative_gap: float = 0.0,
    cutoff_s: float = math.inf,
) -> StrategySolution:
    """The cheapest choice of strategies within the memory budget.

    Raises `MemoryInfeasible` (with the least memory reachable) when nothing fits, and
    `CutoffExceeded` when nothing that fits costs at most `cutoff_s`.
    """
    least = minimum_memory(problem)
    if least > problem.memory_budget:
        raise MemoryInfeasible(problem.memory_budget, least)
    simplified = simplify(problem)
    ilp = build_ilp(problem, simplified, cutoff_s)
    try:
        solution = rounded_relaxation(
            problem, ilp, simplified, time_limit_s, relative_gap, cutoff_s
        )
        if solution is None:
            solution = solve_ilp(ilp, time_limit_s, relative_gap)
    except IlpInfeasible:
        if math.isfinite(cutoff_s):
            raise CutoffExceeded from None
        # Memory alone is satisfiable (checked above): forbidden resharding pairs rule it out.
        raise MemoryInfeasible(problem.memory_budget, least) from None
    chosen = _choices(problem, solution.values)
    cost, _ = evaluate(problem, chosen)
    return StrategySolution(
        choices=chosen,
        objective_s=cost,
        solver_objective_s=solution.objective / _COST_SCALE + simplified.constant_s,
        status=solution.status,
        mip_gap=solution.mip_gap,
        num_variables=ilp.num_columns,
        num_constraints=ilp.num_rows,
    )


def rounded_relaxation(
    problem: StrategyProblem,
    ilp: IlpProblem,
    simplified: _Simplified,
    time_limit_s: float,
    relative_gap: float,
    cutoff_s: float = math.inf,
) -> IlpSolution | None:
    """The LP relaxation's solution rounded (each node's largest s), when that choice fits the
    budget, is within the cutoff and within `relative_gap` of the relaxation's optimum (a lower
    bound on the ILP's): as good a choice as branch and bound would prove, found without it.
    None otherwise. Raises `IlpInfeasible` when the relaxation is infeasible (so is the ILP).

    The solution's values are the rounded choice's s (its e are left 0: only s is read)."""
    relaxed = solve_relaxation(ilp, time_limit_s)
    chosen = _choices(problem, relaxed.values)
    cost_s, memory = evaluate(problem, chosen)
    if not cost_s <= cutoff_s or memory > problem.memory_budget:  # also rejects inf and nan
        return None
    objective = (cost_s - simplified.constant_s) * _COST_SCALE  # as the ILP counts it
    gap = (objective - relaxed.objective) / max(abs(objective), 1.0)
    if gap > relative_gap + _RELAXATION_TOLERANCE:
        return None
    values = np.zeros(ilp.num_columns)
    for start, choice in zip(_node_starts(problem), chosen, strict=True):
        values[start + choice] = 1.0
    return IlpSolution(values=values, objective=objective, status="optimal", mip_gap=max(gap, 0.0))


def _choices(problem: StrategyProblem, values: np.ndarray) -> tuple[int, ...]:
    """Each node's strategy: its largest s."""
    return tuple(
        int(np.argmax(values[start : start + len(node.costs)]))
        for node, start in zip(problem.nodes, _node_starts(problem), strict=True)
    )


def least_memory_restriction(
    problem: StrategyProblem,
) -> tuple[StrategyProblem, tuple[tuple[int, ...], ...]]:
    """`problem` with every node restricted to its least-memory strategies, no budget, and per
    node the original indices of the strategies kept."""
    kept = tuple(
        tuple(i for i, m in enumerate(node.memory) if m <= min(node.memory) * (1 + 1e-9))
        for node in problem.nodes
    )
    nodes = tuple(
        Node(tuple(node.costs[i] for i in keep), tuple(node.memory[i] for i in keep))
        for node, keep in zip(problem.nodes, kept, strict=True)
    )
    edges = tuple(
        Edge(
            edge.source,
            edge.target,
            tuple(edge.source_class[i] for i in kept[edge.source]),
            tuple(edge.target_class[j] for j in kept[edge.target]),
            edge.costs,
        )
        for edge in problem.edges
    )
    return StrategyProblem(nodes, edges, math.inf), kept


def solve_least_memory(
    problem: StrategyProblem,
    time_limit_s: float,
    relative_gap: float = 0.0,
    cutoff_s: float = math.inf,
) -> StrategySolution:
    """The cheapest choice among those that need the least memory (`minimum_memory`), whatever
    the budget. Raises `CutoffExceeded` when none costs at most `cutoff_s`, and
    `MemoryInfeasible` when forbidden reshardings rule out every least-memory choice."""
    restricted, kept = least_memory_restriction(problem)
    try:
        solution = solve(restricted, time_limit_s, relative_gap, cutoff_s)
    except MemoryInfeasible:
        raise MemoryInfeasible(problem.memory_budget, minimum_memory(problem)) from None
    choices = tuple(keep[i] for keep, i in zip(kept, solution.choices, strict=True))
    return replace(solution, choices=choices, objective_s=evaluate(problem, choices)[0])


def _node_starts(problem: StrategyProblem) -> list[int]:
    starts, position = [], 0
    for node in problem.nodes:
        starts.append(position)
        position += len(node.costs)
    return starts
