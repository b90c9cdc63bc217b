"""The ILP against exhaustive enumeration, and its reported objective against recomputation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.intra_op_ilp import (
    Edge,
    MemoryInfeasible,
    Node,
    StrategyProblem,
    brute_force,
    evaluate,
    minimum_memory,
    solve,
    solve_least_memory,
)


@st.composite
def problems(draw: st.DrawFn) -> StrategyProblem:
    """Random DAG-shaped problems: up to 8 nodes, 2-4 strategies, classes per edge side."""
    num_nodes = draw(st.integers(1, 8))
    cost = st.floats(0.0, 10.0, allow_nan=False).map(lambda x: round(x, 3))
    nodes = []
    for _ in range(num_nodes):
        k = draw(st.integers(1, 4))
        nodes.append(
            Node(
                costs=tuple(draw(cost) for _ in range(k)),
                memory=tuple(float(draw(st.integers(0, 10))) for _ in range(k)),
            )
        )
    edges = []
    for target in range(1, num_nodes):
        for source in draw(st.sets(st.integers(0, target - 1), max_size=2)):
            rows = draw(st.integers(1, len(nodes[source].costs)))
            columns = draw(st.integers(1, len(nodes[target].costs)))
            edges.append(
                Edge(
                    source=source,
                    target=target,
                    source_class=tuple(draw(st.integers(0, rows - 1)) for _ in nodes[source].costs),
                    target_class=tuple(
                        draw(st.integers(0, columns - 1)) for _ in nodes[target].costs
                    ),
                    costs=tuple(tuple(draw(cost) for _ in range(columns)) for _ in range(rows)),
                )
            )
    budget = float(draw(st.integers(0, 10 * num_nodes)))
    return StrategyProblem(tuple(nodes), tuple(edges), budget)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(problems())
def test_ilp_optimum_equals_exhaustive_enumeration(problem: StrategyProblem) -> None:
    expected = brute_force(problem)
    if expected is None:
        with pytest.raises(MemoryInfeasible):
            solve(problem, time_limit_s=10)
        return
    solution = solve(problem, time_limit_s=10)
    assert solution.status == "optimal"
    assert solution.objective_s == pytest.approx(expected[1], abs=1e-6)
    # The objective HiGHS reports equals the cost recomputed from the chosen strategies.
    assert solution.solver_objective_s == pytest.approx(solution.objective_s, abs=1e-6)
    assert evaluate(problem, solution.choices)[1] <= problem.memory_budget


def test_known_answer_trades_compute_for_resharding() -> None:
    # Two nodes; the cheap strategies disagree on the edge's spec and resharding costs 5.
    nodes = (Node((1.0, 3.0), (0.0, 0.0)), Node((4.0, 1.0), (0.0, 0.0)))
    edge = Edge(0, 1, (0, 1), (0, 1), ((0.0, 5.0), (5.0, 0.0)))
    solution = solve(StrategyProblem(nodes, (edge,), math.inf), time_limit_s=10)
    # Options: (0,0)=5, (0,1)=1+1+5=7, (1,0)=3+4+5=12, (1,1)=3+1=4 -> (1,1).
    assert solution.choices == (1, 1)
    assert solution.objective_s == pytest.approx(4.0)


def test_memory_budget_forces_the_smaller_strategy() -> None:
    nodes = (Node((1.0, 2.0), (10.0, 4.0)),)
    assert solve(StrategyProblem(nodes, (), 20.0), 10).choices == (0,)
    assert solve(StrategyProblem(nodes, (), 5.0), 10).choices == (1,)
    with pytest.raises(MemoryInfeasible) as error:
        solve(StrategyProblem(nodes, (), 3.0), 10)
    assert error.value.minimum == 4.0 and error.value.budget == 3.0


def test_forbidden_pairs_are_avoided() -> None:
    nodes = (Node((0.0, 1.0), (0.0, 0.0)), Node((0.0, 1.0), (0.0, 0.0)))
    edge = Edge(0, 1, (0, 1), (0, 1), ((math.inf, 0.0), (0.0, math.inf)))
    solution = solve(StrategyProblem(nodes, (edge,), math.inf), 10)
    assert solution.choices in ((0, 1), (1, 0))
    assert solution.objective_s == pytest.approx(1.0)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(problems())
def test_least_memory_solve_equals_enumeration_at_the_least_budget(
    problem: StrategyProblem,
) -> None:
    # Whatever the budget, the answer is the cheapest choice among those needing the least memory.
    least = minimum_memory(problem)
    expected = brute_force(StrategyProblem(problem.nodes, problem.edges, least))
    assert expected is not None  # no forbidden pairs in these problems
    solution = solve_least_memory(problem, time_limit_s=10)
    assert evaluate(problem, solution.choices)[1] == least
    assert solution.objective_s == pytest.approx(expected[1], abs=1e-6)
    assert solution.objective_s == pytest.approx(evaluate(problem, solution.choices)[0])


def test_least_memory_known_answer() -> None:
    # Node 0's least memory (4) is reached by strategies 1 and 2; the edge makes 2 cheaper overall.
    nodes = (Node((1.0, 5.0, 6.0), (10.0, 4.0, 4.0)), Node((1.0, 1.0), (3.0, 2.0)))
    edge = Edge(0, 1, (0, 1, 2), (0, 1), ((0.0, 0.0), (9.0, 9.0), (0.0, 0.0)))
    solution = solve_least_memory(StrategyProblem(nodes, (edge,), 1.0), time_limit_s=10)
    # (1, 1): 5 + 1 + 9 = 15; (2, 1): 6 + 1 + 0 = 7.
    assert solution.choices == (2, 1)
    assert solution.objective_s == pytest.approx(7.0)
    forbidden = Edge(0, 1, (0, 1, 1), (0, 1), ((0.0, 0.0), (0.0, math.inf)))
    with pytest.raises(MemoryInfeasible) as error:
        solve_least_memory(StrategyProblem(nodes, (forbidden,), 1.0), time_limit_s=10)
    assert error.value.minimum == 6.0


def _disagree(source: int, target: int, same_cost: float) -> Edge:
    """An edge whose two ends pay `same_cost` for choosing the same strategy (of two)."""
    return Edge(source, target, (0, 1), (0, 1), ((same_cost, 0.0), (0.0, same_cost)))


def test_a_chain_is_solved_by_its_relaxation_without_branch_and_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a tree the marginal constraints (2), (3) make the LP relaxation integral.
    def no_branch_and_bound(*args: object) -> None:
        raise AssertionError("the relaxation's rounding should have been accepted")

    monkeypatch.setattr("planner.intra_op_ilp.solve_ilp", no_branch_and_bound)
    nodes = tuple(Node((1.0, 1.5), (0.0, 0.0)) for _ in range(4))
    edges = (_disagree(0, 1, 4.0), _disagree(1, 2, 4.0), _disagree(2, 3, 4.0))
    problem = StrategyProblem(nodes, edges, math.inf)
    solution = solve(problem, 10)
    # Alternating strategies: 1 + 1.5 + 1 + 1.5, no resharding.
    assert solution.choices == (0, 1, 0, 1)
    assert solution.objective_s == pytest.approx(5.0)
    assert solution.status == "optimal" and solution.mip_gap <= 1e-9


def test_a_fractional_relaxation_falls_back_to_branch_and_bound() -> None:
    # An odd cycle whose ends pay 10 for agreeing: the relaxation takes every strategy by half
    # at cost 0; any choice has two nodes that agree, so the optimum pays 10 once.
    nodes = tuple(Node((0.0, 0.0), (0.0, 0.0)) for _ in range(3))
    edges = (_disagree(0, 1, 10.0), _disagree(1, 2, 10.0), _disagree(0, 2, 10.0))
    problem = StrategyProblem(nodes, edges, math.inf)
    solution = solve(problem, 10)
    expected = brute_force(problem)
    assert expected is not None and expected[1] == pytest.approx(10.0)
    assert solution.objective_s == pytest.approx(10.0)
