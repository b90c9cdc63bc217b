"""Solve an `IlpProblem` with HiGHS. The only module that imports `highspy`.

The problem arrives as plain arrays (see `planner/intra_op_ilp.py` for the formulation and
the functions that build each constraint family); this module hands them to HiGHS and returns
a `IlpSolution` or raises `IlpInfeasible`. It never returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np


@dataclass(frozen=True)
class IlpProblem:
    """min c.x subject to row_lower <= A x <= row_upper, col bounds, some columns integer.

    A is given column-wise (CSC): column j's entries are `matrix_values[matrix_start[j]:
    matrix_start[j + 1]]` in rows `matrix_rows[...]`.
    """

    costs: np.ndarray  # float64 [columns]
    col_lower: np.ndarray
    col_upper: np.ndarray
    integer: np.ndarray  # bool [columns]
    row_lower: np.ndarray
    row_upper: np.ndarray
    matrix_start: np.ndarray  # int32 [columns + 1]
    matrix_rows: np.ndarray  # int32 [nonzeros]
    matrix_values: np.ndarray  # float64 [nonzeros]

    @property
    def num_columns(self) -> int:
        return int(self.costs.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.row_lower.shape[0])


@dataclass(frozen=True)
class IlpSolution:
    values: np.ndarray  # float64 [columns]
    objective: float
    status: str  # "optimal" (within the requested gap) or "time limit"
    mip_gap: float  # relative gap between the incumbent and the best bound


class IlpInfeasible(Exception):
    """No assignment satisfies the constraints (or none was found within the time limit)."""

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(status)


def _new_highs() -> Any:
    """A silent HiGHS instance.

    `highspy.Highs()` prints a banner to stdout while it sets up its Python callbacks, before
    any option can be set; stdout may be carrying a plan (`-o -`). The extension class under it
    prints nothing, and has every method used here.
    """
    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    return core() if core is not None else highspy.Highs()  # type: ignore[no-untyped-call]


def solve_ilp(problem: IlpProblem, time_limit_s: float, relative_gap: float = 0.0) -> IlpSolution:
    """Solve to within `relative_gap` of optimal, or until `time_limit_s`, keeping the best
    incumbent on timeout.

    One thread and a fixed seed: the same problem gives the same answer on every run.
    """
    highs = _configured(time_limit_s)
    highs.setOptionValue("mip_rel_gap", float(relative_gap))
    highs.passModel(_model(problem, integer=True))
    highs.run()
    return _result(highs, problem)


def solve_relaxation(problem: IlpProblem, time_limit_s: float) -> IlpSolution:
    """The LP relaxation (integrality dropped): its optimum is a lower bound on the problem's.
    Raises `IlpInfeasible` when even the relaxation is infeasible (then so is the problem)."""
    highs = _configured(time_limit_s)
    highs.passModel(_model(problem, integer=False))
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise IlpInfeasible(highs.modelStatusToString(highs.getModelStatus()))
    values = np.array(highs.getSolution().col_value, dtype=np.float64)
    objective = float(highs.getInfo().objective_function_value)
    return IlpSolution(values=values, objective=objective, status="optimal", mip_gap=0.0)


def _configured(time_limit_s: float) -> Any:
    highs = _new_highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.setOptionValue("random_seed", 0)
    highs.setOptionValue("time_limit", float(time_limit_s))
    return highs


def _model(problem: IlpProblem, integer: bool) -> Any:
    lp = highspy.HighsLp()
    lp.num_col_ = problem.num_columns
    lp.num_row_ = problem.num_rows
    lp.col_cost_ = problem.costs.astype(np.float64)
    lp.col_lower_ = problem.col_lower.astype(np.float64)
    lp.col_upper_ = problem.col_upper.astype(np.float64)
    lp.row_lower_ = problem.row_lower.astype(np.float64)
    lp.row_upper_ = problem.row_upper.astype(np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = problem.num_columns
    lp.a_matrix_.num_row_ = problem.num_rows
    lp.a_matrix_.start_ = problem.matrix_start.astype(np.int32)
    lp.a_matrix_.index_ = problem.matrix_rows.astype(np.int32)
    lp.a_matrix_.value_ = problem.matrix_values.astype(np.float64)
    if integer and problem.integer.any():
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
            for flag in problem.integer
        ]
    return lp


def _result(highs: Any, problem: IlpProblem) -> IlpSolution:
    status = highs.getModelStatus()
    info = highs.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if status == highspy.HighsModelStatus.kOptimal:
        name = "optimal"  # within `relative_gap`, which `mip_gap` reports
    elif status == highspy.HighsModelStatus.kTimeLimit and has_solution:
        name = "time limit"
    elif status == highspy.HighsModelStatus.kTimeLimit:
        raise IlpInfeasible("time limit reached before any feasible assignment was found")
    else:
        raise IlpInfeasible(highs.modelStatusToString(status))
    values = np.array(highs.getSolution().col_value, dtype=np.float64)
    gap = float(info.mip_gap) if problem.integer.any() else 0.0
    if not np.isfinite(gap):
        gap = 0.0 if name == "optimal" else float("inf")
    gap = max(gap, 0.0)
    return IlpSolution(
        values=values,
        objective=float(info.objective_function_value),
        status=name,
        mip_gap=gap,
    )
