"""The op registry (planner/ops/): every op has every fact, one known answer per family, the
executor runs what the planner has rules for, and README lists the registry."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from conftest import ROOT

from cli.ops_command import markdown_table
from cost_models.cluster import Cluster, Gpu, Link
from cost_models.compute import CostClass
from cost_models.mesh import logical_mesh
from planner.graph import AttrValue, Op, Tensor, TensorKind
from planner.notation import Notation
from planner.ops import notation_of, op_flops, op_traffic_bytes, registered
from planner.ops.registry import OpInfo, Saved, Traffic
from planner.strategies import CostContext, op_strategies

FAMILIES = {
    "elementwise", "contractions", "normalisation", "reductions", "pooling", "data movement",
    "sources",
}  # fmt: skip


@pytest.mark.parametrize("op_type", sorted(registered()))
def test_every_registered_op_has_every_fact(op_type: str) -> None:
    info = registered()[op_type]
    assert isinstance(info, OpInfo) and info.op_type == op_type
    assert info.family in FAMILIES
    assert callable(info.notation) and callable(info.flops)
    assert isinstance(info.traffic, Traffic)
    assert isinstance(info.saved, Saved)
    assert isinstance(info.cost, CostClass)


# --- one op of each family by hand, on a 1 x 4 mesh -------------------------------------------

CLUSTER = Cluster(
    "one-host", 1, 4, Gpu("gpu", 16 * 2**30, (("float32", 10e12),), 1e12),
    Link(100e9, 1e-6), Link(10e9, 1e-5),
)  # fmt: skip
MESH = logical_mesh(CLUSTER, (1, 4), (1, 4))


def _tensor(name: str, shape: tuple[int, ...], kind: TensorKind = TensorKind.ACTIVATION,
            value: tuple[float, ...] | None = None, dtype: str = "float32") -> Tensor:  # fmt: skip
    return Tensor(name, shape, dtype, kind, value=value)


def _op(op_type: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
        **attributes: AttrValue) -> Op:  # fmt: skip
    return Op(op_type, op_type, inputs, outputs, tuple(sorted(attributes.items())))


def _strategies(op: Op, tensors: dict[str, Tensor]) -> dict[str, float]:
    """Strategy name -> communication seconds of one microbatch (inference)."""
    context = CostContext(MESH, CLUSTER.gpu, "float32", "adam", training=False)
    found = op_strategies(op, notation_of(op, tensors), tensors, context, frozenset())
    return {s.name: s.communication_s for s in found}


def _all_reduce_s(num_bytes: float) -> float:  # the 1 x 4 axis: 2 (n-1)/n V beta + alpha
    return 2 * 3 / 4 * num_bytes / 100e9 + 1e-6


def _reduce_scatter_s(num_bytes: float) -> float:  # (n-1)/n V beta + alpha, V before scattering
    return 3 / 4 * num_bytes / 100e9 + 1e-6


def test_elementwise_add_broadcasts_and_splits_without_communication() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "b": _tensor("b", (16,), TensorKind.PARAMETER),
               "y": _tensor("y", (8, 16))}  # fmt: skip
    op = _op("Add", ("x", "b"), ("y",))
    assert op_flops(op, tensors) == 8 * 16
    assert op_traffic_bytes(op, tensors) == (4 * (128 + 16), 4 * 128)
    assert _strategies(op, tensors) == {"RR = RR x R": 0.0, "S1R = S1R x R": 0.0,
                                        "RS1 = RS1 x S1": 0.0}  # fmt: skip


def test_contraction_matmul_splits_m_n_or_k_and_k_costs_an_all_reduce() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "w": _tensor("w", (16, 32), TensorKind.PARAMETER),
               "y": _tensor("y", (8, 32))}  # fmt: skip
    op = _op("MatMul", ("x", "w"), ("y",))
    assert op_flops(op, tensors) == 2 * 8 * 16 * 32
    assert _strategies(op, tensors) == {
        "RR = RR x RR": 0.0,
        "S1R = S1R x RR": 0.0,  # rows
        "RR = RS1 x S1R": pytest.approx(_all_reduce_s(4 * 8 * 32)),  # k: partial sums
        # ... or the partial sums reduce-scattered onto the rows or the columns
        "S1R = RS1 x S1R": pytest.approx(_reduce_scatter_s(4 * 8 * 32)),
        "RS1 = RS1 x S1R": pytest.approx(_reduce_scatter_s(4 * 8 * 32)),
        "RS1 = RR x RS1": 0.0,  # columns
    }


def test_normalisation_layer_norm_statistics_split_costs_two_numbers_a_row() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "y": _tensor("y", (8, 16))}
    op = _op("LayerNormalization", ("x",), ("y",), axis=-1)
    assert op_flops(op, tensors) == 8 * 8 * 16
    # Split features: the mean and variance of each row all-reduced (2 numbers per row).
    assert _strategies(op, tensors) == {
        "RR = RR": 0.0,
        "S1R = S1R": 0.0,
        "RS1 = RS1": pytest.approx(_all_reduce_s(2 * 4 * 8 * 16 / 4 / 4)),
    }


def test_reduction_over_a_split_axis_all_reduces_the_result() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "y": _tensor("y", (8,)),
               "axes": _tensor("axes", (1,), TensorKind.CONSTANT, (1.0,), "int64")}  # fmt: skip
    op = _op("ReduceSum", ("x", "axes"), ("y",), keepdims=0)
    assert op_flops(op, tensors) == 8 * 16  # one per input element
    assert _strategies(op, tensors) == {
        "R = RR": 0.0,
        "S1 = S1R": 0.0,
        "R = RS1": pytest.approx(_all_reduce_s(4 * 8)),
        "S1 = RS1": pytest.approx(_reduce_scatter_s(4 * 8)),  # the sums scattered
    }


def test_pooling_splits_batch_or_channels_never_the_window() -> None:
    tensors = {"x": _tensor("x", (4, 8, 8, 8)), "y": _tensor("y", (4, 8, 4, 4))}
    op = _op("MaxPool", ("x",), ("y",), kernel_shape=(2, 2), strides=(2, 2))
    assert op_flops(op, tensors) == 4 * 8 * 4 * 4 * (2 * 2)
    assert set(_strategies(op, tensors)) == {"RRRR = RRRR", "S1RRR = S1RRR", "RS1RR = RS1RR"}


def test_data_movement_transpose_moves_the_split_with_its_label_and_reshape_is_a_view() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "y": _tensor("y", (16, 8)),
               "z": _tensor("z", (128,)),
               "shape": _tensor("shape", (1,), TensorKind.CONSTANT, (128.0,), "int64")}  # fmt: skip
    transpose = _op("Transpose", ("x",), ("y",), perm=(1, 0))
    assert op_flops(transpose, tensors) == 0
    assert set(_strategies(transpose, tensors)) == {"RR = RR", "RS1 = S1R", "S1R = RS1"}
    reshape = _op("Reshape", ("x", "shape"), ("z",))
    assert op_traffic_bytes(reshape, tensors) == (0, 0)
    # The merged run (8, 16) -> 128 splits only on its major dimension.
    assert set(_strategies(reshape, tensors)) == {"R = RR", "S1 = S1R"}


def test_sources_range_is_computed_locally_in_any_split() -> None:
    scalar: Callable[[str], Tensor] = lambda n: _tensor(n, (), TensorKind.CONSTANT, (0.0,), "int64")  # noqa: E731
    tensors = {"start": scalar("start"), "limit": scalar("limit"), "delta": scalar("delta"),
               "y": _tensor("y", (64,), dtype="int64")}  # fmt: skip
    op = _op("Range", ("start", "limit", "delta"), ("y",))
    assert op_flops(op, tensors) == 0
    assert _strategies(op, tensors) == {"R = -": 0.0, "S1 = -": 0.0}


def test_an_unregistered_op_type_runs_replicated_and_is_priced_by_its_elements() -> None:
    tensors = {"x": _tensor("x", (8, 16)), "y": _tensor("y", (8, 16))}
    op = _op("Hardmax", ("x",), ("y",))
    notation = notation_of(op, tensors)
    assert isinstance(notation, Notation) and not notation.known
    assert op_flops(op, tensors) == 8 * 16
    assert list(_strategies(op, tensors)) == ["RR = RR"]


# --- the executor and the README ---------------------------------------------------------------

# Folded by the importer itself: the planner never sees such an op.
IMPORTER_ONLY = {"Constant"}


def test_the_executor_runs_every_op_type_the_planner_has_a_rule_for_and_the_reverse() -> None:
    ops = pytest.importorskip("executor.ops")
    executor_types = set(ops.TABLE)
    planner_types = set(registered())
    assert sorted(planner_types - executor_types) == []
    assert sorted(executor_types - planner_types - IMPORTER_ONLY) == []


def test_readme_lists_the_registry_as_alpa_plan_ops_prints_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- ops: begin -->\n(.*?)<!-- ops: end -->", readme, re.DOTALL)
    assert found is not None, "README.md lacks the ops table markers"
    assert found.group(1) == markdown_table(), "run `alpa-plan ops --markdown` into README.md"
