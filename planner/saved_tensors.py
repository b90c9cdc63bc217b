"""Which activations a training step keeps from the forward pass for the backward pass.

An op's gradient needs some of its inputs or its output, not all (what autodiff frameworks
save; a fused elementwise chain saves its inputs, not every intermediate):

- contractions (MatMul, Gemm, Einsum, Conv): their activation inputs;
- products and quotients (Mul, Div) and nonlinear functions of their input (Gelu, Pow, Erf,
  normalisations): their inputs;
- functions whose derivative follows from their output (Softmax, Tanh, Sigmoid, Exp, Relu):
  their output;
- lookups (Gather) and selections (Where): the indices or the condition;
- linear data movement and sums (Add, Sub, Reshape, Transpose, Concat, Split, Slice, Cast,
  ReduceSum, ReduceMean, ...): nothing.

An op type not listed keeps all its inputs (the safe side). A saved view keeps the buffer it
aliases, charged to the op that wrote that buffer. Under recomputation (`planner/recompute.py`)
`kept_and_rebuilt` says what is still kept and what the backward rebuilds instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.graph import Op, Subgraph, Tensor, TensorKind
from planner.ops import Saved, is_view, saved_rule_of


def _buffer(name: str, producer: Mapping[str, Op]) -> str:
    """The tensor whose memory `name` occupies: follow views back to what they alias."""
    while name in producer and is_view(producer[name]):
        inputs = producer[name].present_inputs
        if not inputs:
            break
        name = inputs[0]
    return name


def saved_for_backward(stage: Subgraph) -> frozenset[str]:
    """Names of the tensors held from forward to backward: op outputs (charged to the op that
    writes them) and data inputs."""
    producer, tensors = stage.producer, stage.tensors

    def buffer(name: str) -> str:
        return _buffer(name, producer)

    saved: set[str] = set()
    for op in stage.ops:
        rule = saved_rule_of(op)
        if rule is Saved.NOTHING:
            continue
        if rule is Saved.OUTPUT:
            wanted = [name for name in op.outputs[:1] if name]
        elif rule in (Saved.FIRST_INPUT, Saved.SECOND_INPUT):
            position = 0 if rule is Saved.FIRST_INPUT else 1
            wanted = [op.inputs[position]] if position < len(op.inputs) else []
        else:
            wanted = list(op.present_inputs)
        for name in wanted:
            if name and tensors[name].kind in (TensorKind.ACTIVATION, TensorKind.INPUT):
                saved.add(buffer(name))
    return frozenset(saved)


def kept_and_rebuilt(
    stage: Subgraph, recomputed: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """With the ops `recomputed` rerunning their forward in the backward
    (`planner/recompute.py`): the tensors still held from forward to backward, and the saved
    tensors the backward rebuilds instead.

    A saved tensor a recomputed op writes is rebuilt; what the recomputed ops read from other
    ops (or from the data) is kept, for the rerun."""
    saved = saved_for_backward(stage)
    if not recomputed:
        return saved, frozenset()
    producer, tensors = stage.producer, stage.tensors

    def rebuilt_by_rerun(name: str) -> bool:
        return name in producer and producer[name].name in recomputed

    rebuilt = frozenset(name for name in saved if rebuilt_by_rerun(name))
    read = {
        _buffer(name, producer)
        for op in stage.ops
        if op.name in recomputed
        for name in op.present_inputs
        if tensors[name].kind in (TensorKind.ACTIVATION, TensorKind.INPUT)
        and not rebuilt_by_rerun(name)
    }
    kept = (saved - rebuilt) | {name for name in read if not rebuilt_by_rerun(name)}
    return frozenset(kept), rebuilt


def charged_to(op: Op, saved: frozenset[str], tensors: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The saved tensors (`saved_for_backward`) whose memory `op` pays for: the saved outputs
    it writes and the saved data inputs it reads."""
    return tuple(
        dict.fromkeys(
            name
            for name in (*op.outputs, *op.inputs)
            if name in saved and (name in op.outputs or tensors[name].kind is TensorKind.INPUT)
        )
    )
