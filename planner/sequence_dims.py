"""Which dimension of each tensor runs over the token sequence: what context parallelism splits.

The seeds are the data inputs of token indices, integer tensors [batch, sequence] (token ids,
attention masks, position ids): dimension 1. From there the sequence follows the ops' index
notation (`planner/notation.py`) in topological order: an op's label is a sequence label when
it labels the sequence dimension of one of the op's inputs, and each output's sequence
dimension is its first dimension with a sequence label. A Reshape goes by extents instead: the
output dimension that spans the same run of elements as the input's sequence dimension, or
the one that contains that run (a merge [b, s, h] -> [b s, h]: the merged dimension is both
the batch and the sequence), or, when the sequence is cut in pieces, the outermost piece.
So a projection [b, s, h] keeps s, a head split [b, s, n, d] and its transpose [b, n, s, d]
carry it, attention scores [b, n, s_q, s_k] take the queries' s_q (the first), and the
context P V takes s_q again. A tensor the sequence does not reach (a weight, a pooled
output, an image model's tensors) has none.
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.graph import Graph, Tensor, TensorKind
from planner.ops import notation_of

TOKEN_DTYPES = frozenset({"int32", "int64", "bool"})


# Where the sequence lies in a tensor: its dimension, the sequence's stride in that
# dimension's steps (above 1 when the dimension merges it with dims inside it: in [s h] the
# sequence steps h at a time; a merged [b s] has it at stride 1, the batch outside), its extent.
_Run = tuple[int, int, int]


def with_sequence_dims(graph: Graph) -> Graph:
    """`graph` with each tensor's `sequence_dim` set (module docstring)."""
    found: dict[str, _Run] = {}
    for name in graph.inputs:
        tensor = graph.tensors[name]
        if _is_token_input(tensor):
            found[name] = (1, 1, tensor.shape[1])
    for op in graph.ops:
        if op.op_type == "Reshape":
            source, target = op.inputs[0], op.outputs[0]
            if source in found and target:
                run = _reshaped(
                    graph.tensors[source].shape, found[source], graph.tensors[target].shape
                )
                if run is not None:
                    found[target] = run
            continue
        notation = notation_of(op, graph.tensors)
        runs = {
            group[found[name][0]]: found[name]
            for name, group in zip(op.inputs, notation.inputs, strict=False)
            if name in found and group is not None
        }
        if not runs:
            continue
        for name, group in zip(op.outputs, notation.outputs, strict=False):
            if not name or group is None or name in found:
                continue
            position = next((i for i, label in enumerate(group) if label in runs), None)
            if position is not None:
                _, stride, extent = runs[group[position]]
                found[name] = (position, stride, extent)
    tensors = {
        name: replace(tensor, sequence_dim=found[name][0]) if name in found else tensor
        for name, tensor in graph.tensors.items()
    }
    return replace(graph, tensors=tensors)


def _reshaped(shape: tuple[int, ...], run: _Run, target: tuple[int, ...]) -> _Run | None:
    """Where the sequence at `run` of `shape` lies in `target` (module docstring): a reshape
    keeps the elements' order, so the sequence keeps its stride in elements."""
    dim, stride, extent = run
    inner = stride * math.prod(shape[dim + 1 :])  # elements between sequence positions
    outer = inner * extent
    step = math.prod(target)
    for position, size in enumerate(target):
        step //= size  # elements of one step along `position`
        if size > 1 and step <= inner and step * size >= outer and inner % step == 0:
            return (position, inner // step, extent)  # the whole sequence in one dimension
        if size > 1 and inner < step < outer:
            return (position, 1, size)  # the outermost piece of a sequence cut in pieces
    return None


def _is_token_input(tensor: Tensor) -> bool:
    return (
        tensor.kind is TensorKind.INPUT
        and tensor.dtype in TOKEN_DTYPES
        and len(tensor.shape) == 2
        and tensor.batch_dim == 0
    )
