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
aliases, charged to the op that wrote that buffer.
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.graph import Op, Subgraph, Tensor, TensorKind
from planner.ops import Saved, is_view, saved_rule_of


def saved_for_backward(stage: Subgraph) -> frozenset[str]:
    """Names of the tensors held from forward to backward: op outputs (charged to the op that
    writes them) and data inputs."""
    producer, tensors = stage.producer, stage.tensors

    def buffer(name: str) -> str:
        """The tensor whose memory `name` occupies: follow views back to what they alias."""
        while name in producer and is_view(producer[name]):
            inputs = producer[name].present_inputs
            if not inputs:
                break
            name = inputs[0]
        return name

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
