"""What the planner knows about an ONNX op type, registered once, in its family's module.

Every registered op type has every facet:

- `notation`: its index-notation rule (`planner/notation.py`), from which its sharding
  strategies and their collectives follow;
- `flops`: its forward FLOPs from static shapes;
- `traffic`: how it touches memory: a view moves nothing, a selection reads only what it
  emits of its first input (plus its index operands), anything else streams all its inputs and
  outputs;
- `saved`: which of its tensors a training step keeps for the backward;
- `cost`: the class of kernel that runs it (`cost_models.compute.CostClass`): the roofline
  and the calibration price it by that class (contractions also backward at twice the
  forward).

An op type that no family registers (or a custom domain) runs replicated, is priced as an
elementwise op by its output elements, keeps all its inputs, and the plan's search report names
it (`planner/ops/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from cost_models.compute import CostClass
from planner.graph import Op, Tensor
from planner.notation import Rule


class Traffic(StrEnum):
    VIEW = "view"  # relabels memory: no bytes moved
    SELECTING = "selecting"  # reads of its first input only what it writes
    STREAMING = "streaming"  # reads every input, writes every output


class Saved(StrEnum):
    """What an op's backward needs of its forward (what autodiff frameworks save)."""

    INPUTS = "inputs"  # its activation inputs (contractions, products, f(x) with f' of x)
    OUTPUT = "output"  # its first output (softmax, tanh, exp, relu: f' follows from f)
    FIRST_INPUT = "first input"  # its first input only (Where's condition)
    SECOND_INPUT = "second input"  # its second input only (Gather's indices)
    NOTHING = "nothing"  # linear movement, sums, comparisons


FlopsRule = Callable[[Op, Mapping[str, Tensor]], float]


@dataclass(frozen=True)
class OpInfo:
    op_type: str
    family: str  # the module that registered it
    notation: Rule
    flops: FlopsRule
    traffic: Traffic
    saved: Saved
    cost: CostClass


_REGISTRY: dict[str, OpInfo] = {}


def register(
    op_types: Iterable[str],
    *,
    family: str,
    notation: Rule,
    flops: FlopsRule,
    traffic: Traffic,
    saved: Saved,
    cost: CostClass,
) -> None:
    """Register each op type of `op_types` with these facets; an op type registers once."""
    for op_type in op_types:
        if op_type in _REGISTRY:
            raise ValueError(
                f"op type {op_type} is registered twice ({_REGISTRY[op_type].family}, {family})"
            )
        _REGISTRY[op_type] = OpInfo(op_type, family, notation, flops, traffic, saved, cost)


def registered() -> Mapping[str, OpInfo]:
    """Every registered op type, by name."""
    return dict(sorted(_REGISTRY.items()))


def info_of(op: Op) -> OpInfo | None:
    """The op's registered facts; None for an unregistered type or a custom domain."""
    if op.domain:
        return None
    return _REGISTRY.get(op.op_type)
