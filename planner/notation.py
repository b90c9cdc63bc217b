"""Index notation: every op described like an einsum (docs/DESIGN.md section 4).

Each dimension of an op's tensors gets a label; a label shared by two tensors is the same index.
From the labels alone follow an op's sharding strategies and their communication:

- batch-like: in the output and in every input that has it (elementwise dims, matmul batch);
- contracted: in inputs, not in the output (matmul k, reduced axes, the vocabulary of an
  embedding lookup): splitting it leaves partial sums that an all-reduce completes;
- free: in one input and the output (matmul n, a weight's output features);
- output-only: created by the op (a broadcast of Expand): splitting it is a local slice.

Labels in `unsplittable` never get a mesh axis (convolution windows, concatenation axes, a
reshape's minor dims); labels in `statistics` are reduced by a normalisation (softmax axis, layer
norm features): splitting them costs an all-reduce of the per-row statistics. An op whose type
has no rule gets every label unsplittable: its only strategy is replicated.

This module holds the notation value and the helpers rules are written with; the rules
themselves live with their op families in the op registry (`planner/ops/`), which also says
which rule an op gets (`planner.ops.notation_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from planner.graph import Op, Tensor

Labels = tuple[str, ...]


@dataclass(frozen=True)
class Notation:
    """Labels per dimension of each input and output (None: the tensor takes no part, e.g. a
    shape operand or an omitted optional input)."""

    inputs: tuple[Labels | None, ...]
    outputs: tuple[Labels | None, ...]
    unsplittable: frozenset[str] = frozenset()
    statistics: frozenset[str] = frozenset()
    # False when no rule knew the op type: the strategy is a replicated fallback.
    known: bool = True

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label, in order of first appearance."""
        seen: dict[str, None] = {}
        for group in (*self.inputs, *self.outputs):
            for label in group or ():
                seen.setdefault(label, None)
        return tuple(seen)

    @property
    def output_labels(self) -> frozenset[str]:
        return frozenset(label for group in self.outputs for label in group or ())

    @property
    def contracted(self) -> frozenset[str]:
        """Labels of the inputs that no output has."""
        inputs = {label for group in self.inputs for label in group or ()}
        return frozenset(inputs - self.output_labels)


class Fresh:
    """A supply of distinct labels."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"l{self._next}"

    def many(self, count: int) -> Labels:
        return tuple(self() for _ in range(count))


Rule = Callable[[Op, "Shapes", Fresh], Notation]


class Shapes:
    """Shapes and small constant values of an op's tensors, by input/output position."""

    def __init__(self, op: Op, tensors: Mapping[str, Tensor]) -> None:
        self._op = op
        self._tensors = tensors

    def input(self, position: int) -> tuple[int, ...] | None:
        if position >= len(self._op.inputs) or not self._op.inputs[position]:
            return None
        return self._tensors[self._op.inputs[position]].shape

    def needed_input(self, position: int) -> tuple[int, ...]:
        """The shape of input `position`; `NoRule` when the op has no such input."""
        shape = self.input(position)
        if shape is None:
            raise NoRule
        return shape

    def output(self, position: int = 0) -> tuple[int, ...] | None:
        if position >= len(self._op.outputs) or not self._op.outputs[position]:
            return None
        return self._tensors[self._op.outputs[position]].shape

    def value(self, position: int) -> tuple[float, ...] | None:
        if position >= len(self._op.inputs) or not self._op.inputs[position]:
            return None
        return self._tensors[self._op.inputs[position]].value

    @property
    def num_inputs(self) -> int:
        return len(self._op.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._op.outputs)


class NoRule(Exception):
    """The rule does not cover this instance (an unusual attribute or rank)."""


def fallback(shapes: Shapes, fresh: Fresh) -> Notation:
    """Every label unsplittable: a replicated strategy, marked unknown."""
    inputs = tuple(
        None if shapes.input(i) is None else fresh.many(len(shapes.input(i) or ()))
        for i in range(shapes.num_inputs)
    )
    outputs = tuple(
        None if shapes.output(i) is None else fresh.many(len(shapes.output(i) or ()))
        for i in range(shapes.num_outputs)
    )
    every = frozenset(label for group in (*inputs, *outputs) for label in group or ())
    return Notation(inputs, outputs, unsplittable=every, known=False)


def axis_index(value: int, rank: int) -> int:
    """An ONNX axis attribute (negative from the end) as an index; NoRule when out of range."""
    axis = value + rank if value < 0 else value
    if not 0 <= axis < max(rank, 1):
        raise NoRule
    return axis


def int_attr(op: Op, name: str, default: int) -> int:
    value = op.attr(name, default)
    if not isinstance(value, int):
        raise NoRule
    return value


def replicated(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """A known op that never splits: every label unsplittable (no warning, unlike `fallback`)."""
    notation = fallback(shapes, fresh)
    return Notation(notation.inputs, notation.outputs, notation.unsplittable)


def broadcast(
    output_labels: Labels, output_shape: tuple[int, ...], shape: tuple[int, ...], fresh: Fresh
) -> tuple[Labels, set[str]]:
    """Labels of an input broadcast (right-aligned) to the output; dims of extent 1 that
    broadcast get labels of their own, which must stay unsplit."""
    offset = len(output_shape) - len(shape)
    if offset < 0:
        raise NoRule
    labels: list[str] = []
    unsplittable: set[str] = set()
    for position, extent in enumerate(shape):
        if extent == output_shape[offset + position]:
            labels.append(output_labels[offset + position])
        elif extent == 1:
            label = fresh()
            labels.append(label)
            unsplittable.add(label)
        else:
            raise NoRule
    return tuple(labels), unsplittable
