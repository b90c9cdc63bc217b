"""Which ops rerun their forward in the backward (activation recomputation), per mode.

- none: no op;
- full: every op; each layer keeps only its inputs (`planner/stage_costs.py`);
- selective, in a layer (an ILP's subgraph) with attention: its attention cores, as Megatron-LM's
  `--recompute-granularity selective` (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", section 4.2): the score and context matmuls, the
  softmax, its dropout and the scaling and masking between them. What they write grows with the
  square of the sequence (5 a s^2 b bytes of the 34 s b h + 5 a s^2 b a layer keeps, in the
  paper's notation) and costs few FLOPs to rebuild;
- selective, in a layer without attention: every op but the contractions. Those hold nearly all
  the FLOPs; the others are memory-bound, and what they write is rebuilt from the contractions'
  outputs, which stay kept (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost",
  section 4: drop the results of cheap ops).

An attention core is a Softmax whose input is, through pointwise and data-movement ops only, the
output of a contraction of two activations (Q K^T), and whose output reaches, through pointwise
and data-movement ops only, contractions of two activations (P V) and nothing else.

What recomputation keeps and rebuilds follows from the set (`planner/saved_tensors.py`:
`kept_and_rebuilt`); what it costs, from each recomputed op's forward
(`planner/strategies.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from cost_models.compute import CostClass
from planner.graph import Op, Subgraph, Tensor, TensorKind
from planner.ops import cost_class_of
from plans.plan import RECOMPUTE_FULL, RECOMPUTE_MODES, RECOMPUTE_NONE

# Ops between the scores and the softmax, or between the softmax and the context, searched at
# most (scaling, masking, NaN guards, dropout, casts and views take a handful).
MAX_CORE_CHAIN = 8

_POINTWISE = (CostClass.ELEMENTWISE, CostClass.TRANSCENDENTAL, CostClass.COPY)


def recomputed_ops(stage: Subgraph, mode: str) -> frozenset[str]:
    """The ops of `stage` whose forward reruns in the backward under `mode` (module
    docstring)."""
    if mode not in RECOMPUTE_MODES:
        raise ValueError(f"recompute: expected one of {', '.join(RECOMPUTE_MODES)}, found {mode!r}")
    if mode == RECOMPUTE_NONE:
        return frozenset()
    if mode == RECOMPUTE_FULL:
        return frozenset(op.name for op in stage.ops)
    cores = attention_cores(stage)
    if cores:
        return cores
    return frozenset(op.name for op in stage.ops if cost_class_of(op) is not CostClass.CONTRACTION)


def attention_cores(stage: Subgraph) -> frozenset[str]:
    """The ops of every attention core of `stage` (module docstring)."""
    found: set[str] = set()
    for op in stage.ops:
        if op.op_type != "Softmax" or not op.inputs:
            continue
        scores = _to_scores(op.inputs[0], stage, 0)
        context = _to_context(op, stage)
        if scores is not None and context is not None:
            found |= {op.name, *scores, *context}
    return frozenset(found)


def _is_product_of_activations(op: Op, tensors: Mapping[str, Tensor]) -> bool:
    """A contraction of two activations (no weight among its inputs): Q K^T or P V."""
    if cost_class_of(op) is not CostClass.CONTRACTION:
        return False
    kinds = [tensors[name].kind for name in op.present_inputs]
    data = [kind for kind in kinds if kind in (TensorKind.ACTIVATION, TensorKind.INPUT)]
    return len(data) >= 2 and TensorKind.PARAMETER not in kinds


def _to_scores(tensor: str, stage: Subgraph, depth: int) -> tuple[str, ...] | None:
    """The ops from the scores contraction to `tensor` (which the softmax reads), through
    pointwise ops that keep its shape; None when there is no such contraction."""
    op = stage.producer.get(tensor)
    if op is None or depth > MAX_CORE_CHAIN:
        return None
    tensors = stage.tensors
    if _is_product_of_activations(op, tensors):
        return (op.name,)
    if cost_class_of(op) not in _POINTWISE:
        return None
    shape = tensors[tensor].shape
    for name in op.present_inputs:
        if tensors[name].kind is TensorKind.ACTIVATION and tensors[name].shape == shape:
            found = _to_scores(name, stage, depth + 1)
            if found is not None:
                return (*found, op.name)
    return None


def _to_context(softmax: Op, stage: Subgraph) -> tuple[str, ...] | None:
    """The ops from the softmax's output to the context contractions: every reader of the
    probabilities (and of what pointwise ops make of them) must be one or the other."""
    tensors, consumers = stage.tensors, stage.consumers
    found: dict[str, None] = {}
    frontier = [name for name in softmax.outputs[:1] if name]
    contexts = 0
    for _ in range(MAX_CORE_CHAIN + 1):
        following: list[str] = []
        for tensor in frontier:
            readers = consumers.get(tensor, ())
            if not readers:  # the probabilities leave the stage (returned attention weights)
                return None
            for op in readers:
                if op.name in found:
                    continue
                if _is_product_of_activations(op, tensors):
                    found[op.name] = None
                    contexts += 1
                elif cost_class_of(op) in _POINTWISE:
                    found[op.name] = None
                    following += [name for name in op.outputs[:1] if name]  # not a dropout mask
                else:
                    return None
        if not following:
            return tuple(found) if contexts else None
        frontier = following
    return None
