"""Elementwise ops with numpy broadcasting: every label batch-like, no communication.

Inputs broadcast right-aligned to the output; a dimension of extent 1 that broadcasts gets a
label of its own, which stays unsplit. Ops whose extra inputs are settings (Clip's bounds,
Dropout's ratio) label only their first input.

Saved for the backward: products, quotients and nonlinear functions of their input keep their
inputs; functions whose derivative follows from their output keep the output; linear ops,
comparisons, logic, rounding and casts keep nothing (a rounding's gradient is zero).
"""

from __future__ import annotations

from cost_models.compute import CostClass
from planner.graph import Op
from planner.notation import Fresh, Labels, NoRule, Notation, Shapes, broadcast
from planner.ops.flops import no_flops, per_output_element
from planner.ops.registry import Saved, Traffic, register

FAMILY = "elementwise"


def elementwise(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    out = shapes.output(0)
    if out is None:
        raise NoRule
    output = fresh.many(len(out))
    inputs: list[Labels | None] = []
    unsplittable: set[str] = set()
    for position in range(shapes.num_inputs):
        shape = shapes.input(position)
        if shape is None:
            inputs.append(None)
            continue
        labels, fixed = broadcast(output, out, shape, fresh)
        inputs.append(labels)
        unsplittable |= fixed
    outputs = (
        output,
        *[output if shapes.output(i) == out else None for i in range(1, shapes.num_outputs)],
    )
    return Notation(tuple(inputs), outputs, frozenset(unsplittable))


def first_input_only(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """Elementwise in the first input; the other inputs are scalars or settings."""
    notation = elementwise(op, shapes, fresh)
    inputs = (notation.inputs[0], *(None for _ in notation.inputs[1:]))
    return Notation(inputs, notation.outputs, notation.unsplittable)


_E, _T = CostClass.ELEMENTWISE, CostClass.TRANSCENDENTAL
# Op type -> (operations per output element, what the backward keeps, kernel class). The
# transcendental class (a tanh-like kernel, compute-bound on some devices) holds the ops that
# evaluate a transcendental function.
_OPS: dict[str, tuple[float, Saved, CostClass]] = {
    # linear: the gradient needs nothing
    **{t: (1.0, Saved.NOTHING, _E) for t in ("Add", "Sub", "Neg", "Sum", "Mean")},
    # products, quotients, piecewise functions of the input
    **{t: (1.0, Saved.INPUTS, _E) for t in ("Mul", "Div", "Max", "Min", "Abs", "PRelu", "Mod")},
    **{
        t: (1.0, Saved.INPUTS, _E)
        for t in ("LeakyRelu", "Celu", "HardSigmoid", "Softsign", "ThresholdedRelu", "Shrink")
    },
    **{t: (1.0, Saved.INPUTS, _T) for t in ("Selu", "Elu", "HardSwish", "Softplus", "Mish")},
    **{t: (1.0, Saved.INPUTS, _T) for t in ("Log", "Pow", "Sin", "Cos", "Tan", "Asin", "Acos")},
    **{t: (1.0, Saved.INPUTS, _T) for t in ("Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh")},
    "Gelu": (8.0, Saved.INPUTS, _T),
    "Erf": (4.0, Saved.INPUTS, _T),
    # the derivative follows from the output
    "Relu": (1.0, Saved.OUTPUT, _E),
    "Reciprocal": (1.0, Saved.OUTPUT, _E),
    "Exp": (1.0, Saved.OUTPUT, _T),
    "Sqrt": (1.0, Saved.OUTPUT, _T),
    "Tanh": (4.0, Saved.OUTPUT, _T),
    "Sigmoid": (4.0, Saved.OUTPUT, _T),
    # comparisons, logic, bits, rounding: no gradient
    **{
        t: (1.0, Saved.NOTHING, _E)
        for t in (
            "Equal",
            "Less",
            "Greater",
            "LessOrEqual",
            "GreaterOrEqual",
            "Not",
            "And",
            "Or",
            "Xor",
            "BitwiseAnd",
            "BitwiseOr",
            "BitwiseXor",
            "BitwiseNot",
            "BitShift",
            "IsInf",
            "IsNaN",
            "Sign",
            "Ceil",
            "Floor",
            "Round",
        )
    },
    # selection by a condition: the gradient needs the condition only
    "Where": (1.0, Saved.FIRST_INPUT, _E),
}

for _op_type, (_count, _saved, _cost) in _OPS.items():
    register(
        (_op_type,),
        family=FAMILY,
        notation=elementwise,
        flops=per_output_element(_count),
        traffic=Traffic.STREAMING,
        saved=_saved,
        cost=_cost,
    )
register(
    ("Clip",),
    family=FAMILY,
    notation=first_input_only,
    flops=per_output_element(),
    traffic=Traffic.STREAMING,
    saved=Saved.INPUTS,
    cost=_E,
)
register(  # a cast moves bytes and computes nothing
    ("Cast", "CastLike"),
    family=FAMILY,
    notation=elementwise,
    flops=no_flops,
    traffic=Traffic.STREAMING,
    saved=Saved.NOTHING,
    cost=CostClass.COPY,
)
register(  # inference-time identities: they relabel their input
    ("Identity",),
    family=FAMILY,
    notation=elementwise,
    flops=no_flops,
    traffic=Traffic.VIEW,
    saved=Saved.NOTHING,
    cost=CostClass.COPY,
)
register(
    ("Dropout",),
    family=FAMILY,
    notation=first_input_only,
    flops=no_flops,
    traffic=Traffic.VIEW,
    saved=Saved.NOTHING,
    cost=_E,
)
