"""Static shapes of every tensor of a bound ONNX graph, and the values of its shape arithmetic.

Called by the importer once the data inputs have concrete shapes (the batch and every `--dim`
bound). One pass over the nodes in graph (topological) order keeps, for every tensor, its
concrete shape and element type and, for a small tensor computed only from constants and shapes,
its value:

- values: a node all of whose inputs have values (or a Shape/Size of a tensor whose shape is
  known) is evaluated with onnx's reference implementation of its op, when its outputs are at
  most `VALUE_LIMIT_ELEMENTS` elements. This is how the shape-computing subgraph of an export
  (Shape, Gather, Slice, Concat, Unsqueeze, Range, comparisons, Where, Cast, arithmetic, ...)
  becomes concrete numbers;
- shapes: onnx's own inference function of the op, run on that one node with the concrete
  shapes of its inputs and the values known so far (`infer_node_outputs`): a Reshape's target,
  an Expand's shape, a Range's bounds or a ConstantOfShape's shape then give static dims.
  Because every input shape is concrete, no fresh symbol (`unk__N`) can arise, as it does when
  onnx infers the whole graph symbolically: the causal-mask builders of transformers' decoders
  (Range, LessOrEqual, BitwiseAnd, Expand, Where) resolve like any other op.

Where onnx's inference leaves an output's shape open, `_OWN_RULES` fills in what follows from
the op's definition (the mask of an old Dropout). An output that nothing reads needs no shape.
Any other shape left open depends on data (NonZero, a TopK whose k is computed from data): one
`InputError` names the tensor, the op and the input whose value is unknown.

Control flow (If, Loop, Scan) is refused with the node named, except an If whose condition has
a value and whose taken branch folds to constants; sequence and optional types are refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from plans.errors import InputError

# A tensor keeps its value only when it has at most this many elements: shape arithmetic is
# tiny, and large constants (a causal mask over a long sequence) cost memory for no gain.
VALUE_LIMIT_ELEMENTS = 1 << 16

Shape = tuple[int, ...]

_NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)
_CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})
_SEQUENCE_OPS = frozenset(
    {
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
    }
)


@dataclass(frozen=True)
class Resolution:
    """What one pass found: every tensor that an op reads or a graph output names has a shape."""

    shapes: Mapping[str, Shape]
    dtypes: Mapping[str, int]  # ONNX element type codes
    values: Mapping[str, np.ndarray]  # small tensors computed from constants and shapes
    folded: frozenset[int]  # indices of nodes whose outputs all have values
    unread: frozenset[str]  # outputs that nothing reads and whose shape stayed open


@dataclass(frozen=True)
class KnownTensors:
    """The starting point: data inputs (bound) and initializers, with the values of those that
    are constants (never of trainable weights, which stay parameters)."""

    shapes: Mapping[str, Shape]
    dtypes: Mapping[str, int]
    values: Mapping[str, np.ndarray]


# Domains of graphs that are not a model's forward pass: onnx's training ops (Gradient,
# optimizers) describe a backward or an update that the planner derives itself.
_TRAINING_DOMAINS = frozenset({"ai.onnx.preview.training", "ai.onnx.training"})


def check_supported(model: onnx.ModelProto, source: str) -> None:
    """Refuse, before anything is bound, what no binding makes plannable: sequence and optional
    values, loops, training-graph ops and string tensors, each named in one line."""
    for value in [*model.graph.input, *model.graph.output]:
        kind = value.type.WhichOneof("value")
        where = "input" if value in model.graph.input else "output"
        if kind not in (None, "tensor_type"):
            raise InputError(
                source,
                f"graph.{where}[{value.name}]",
                "a tensor",
                f"a value of type {kind.removesuffix('_type')} (sequence and optional values "
                "are not planned)",
            )
        if kind == "tensor_type" and value.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            raise InputError(
                source,
                f"graph.{where}[{value.name}]",
                "a numeric tensor",
                "a string tensor (text processing has no device work to plan)",
            )
    for node in model.graph.node:
        if node.domain in _TRAINING_DOMAINS:
            raise InputError(
                source,
                f"node {_label(node)}",
                "the forward graph of a model (the planner derives the backward and the update)",
                f"{node.op_type} of domain {node.domain!r}, an op of a training graph",
            )
        _check_node_supported(node, source)


def resolve_shapes(model: onnx.ModelProto, known: KnownTensors, source: str) -> Resolution:
    """Shapes (and small values) of every tensor of `model`'s graph; see the module docstring.

    Raises `InputError` naming the tensor and the node when a shape depends on data, and naming
    the node for control flow or sequence types.
    """
    opsets = {entry.domain or "": entry.version for entry in model.opset_import}
    pass_ = _Pass(model.graph, opsets, model.ir_version, source)
    pass_.start(known)
    pass_.run()
    return pass_.result()


class _Pass:
    """The mutable state of one resolution pass (kept inside `resolve_shapes`)."""

    def __init__(
        self, graph: onnx.GraphProto, opsets: Mapping[str, int], ir_version: int, source: str
    ) -> None:
        self.graph = graph
        self.opsets = dict(opsets)
        self.opset_protos = [helper.make_opsetid(domain, v) for domain, v in opsets.items()]
        self.ir_version = ir_version or onnx.IR_VERSION
        self.source = source
        self.shapes: dict[str, Shape] = {}
        self.dtypes: dict[str, int] = {}
        self.values: dict[str, np.ndarray] = {}
        self.folded: set[int] = set()
        self.unread: set[str] = set()
        self.readers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                if name:
                    self.readers[name] = self.readers.get(name, 0) + 1
        for value in graph.output:
            self.readers[value.name] = self.readers.get(value.name, 0) + 1
        # Caches of the protobufs handed to onnx's inference, one per tensor.
        self._types: dict[str, onnx.TypeProto] = {}
        self._data: dict[str, onnx.TensorProto] = {}

    def start(self, known: KnownTensors) -> None:
        self.shapes.update(known.shapes)
        self.dtypes.update(known.dtypes)
        self.values.update(known.values)

    def result(self) -> Resolution:
        return Resolution(
            shapes=MappingProxyType(dict(self.shapes)),
            dtypes=MappingProxyType(dict(self.dtypes)),
            values=MappingProxyType(dict(self.values)),
            folded=frozenset(self.folded),
            unread=frozenset(self.unread),
        )

    def run(self) -> None:
        for index, node in enumerate(self.graph.node):
            self._check_supported(node)
            for name in node.input:
                if name and name not in self.shapes:
                    raise InputError(
                        self.source,
                        f"node {_label(node)}: input {name}",
                        "a tensor that a graph input, an initializer or an earlier node defines",
                        "none (nodes out of order, or an undefined name)",
                    )
            if node.op_type == "If" and not node.domain:
                self._fold_if(index, node)
                continue
            self._node(index, node)

    # --- one node -----------------------------------------------------------------------------

    def _node(self, index: int, node: onnx.NodeProto) -> None:
        inferred = self._infer(node)
        for position, name in enumerate(node.output):
            if not name:
                continue
            shape, dtype = inferred.get(name, (None, 0))
            if shape is None:
                shape = _own_rule(node, position, self.shapes)
            if shape is None:
                if self.readers.get(name, 0) == 0:
                    self.unread.add(name)
                    continue
                raise self._data_dependent(node, name)
            self.shapes[name] = shape
            self.dtypes[name] = dtype or self._fallback_dtype(node)
        self._evaluate(index, node)

    def _infer(self, node: onnx.NodeProto) -> dict[str, tuple[Shape | None, int]]:
        """onnx's inference of the node's outputs at the concrete input shapes and values."""
        domain = "" if node.domain == "ai.onnx" else node.domain
        try:
            schema = defs.get_schema(node.op_type, self.opsets.get(domain, 1), domain)
        except Exception:  # SchemaError: an op of a custom domain, or newer than this onnx
            raise InputError(
                self.source,
                f"node {_label(node)}",
                "an op of the ONNX standard whose output shapes onnx can infer",
                f"op type {node.op_type}"
                + (f" of domain {node.domain!r}" if domain else " unknown to this onnx"),
            ) from None
        if "broadcast" in schema.attributes and node.op_type != "Gemm":
            self._check_legacy_broadcast(node)
        types = {name: self._type(name) for name in node.input if name}
        data = {name: self._tensor(name) for name in node.input if name in self.values}
        try:
            outputs = shape_inference.infer_node_outputs(
                schema, node, types, data, opset_imports=self.opset_protos,
                ir_version=self.ir_version,
            )  # fmt: skip
        except Exception as error:  # InferenceError: the op rejects its input shapes
            raise InputError(
                self.source,
                f"node {_label(node)}",
                "input shapes the op accepts",
                _first_line(error),
            ) from None
        found: dict[str, tuple[Shape | None, int]] = {}
        for name, type_proto in outputs.items():
            if not type_proto.HasField("tensor_type"):
                raise InputError(
                    self.source,
                    f"node {_label(node)}: output {name}",
                    "a tensor",
                    f"a value of another type ({type_proto.WhichOneof('value')}) from "
                    f"{node.op_type}",
                )
            tensor_type = type_proto.tensor_type
            shape: Shape | None = None
            if tensor_type.HasField("shape") and all(
                dim.HasField("dim_value") for dim in tensor_type.shape.dim
            ):
                shape = tuple(int(dim.dim_value) for dim in tensor_type.shape.dim)
            found[name] = (shape, tensor_type.elem_type)
        return found

    def _check_legacy_broadcast(self, node: onnx.NodeProto) -> None:
        """Before opset 7, a binary op broadcasts only with `broadcast=1`, and then its second
        input must match the first's dimensions from `axis` on (by default the trailing ones);
        onnx's inference of those versions passes the first input's shape through unchecked."""
        first, second = (self.shapes[name] for name in node.input[:2])
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        if not attrs.get("broadcast", 0):
            if first != second:
                raise InputError(
                    self.source,
                    f"node {_label(node)}",
                    "inputs of one shape (before opset 7 an op broadcasts only with broadcast=1)",
                    f"shapes {list(first)} and {list(second)}",
                )
            return
        axis = int(attrs.get("axis", len(first) - len(second)))
        axis = axis + len(first) if axis < 0 else axis
        window = first[axis : axis + len(second)]
        if len(window) != len(second) or any(
            extent not in (own, 1) for own, extent in zip(window, second, strict=True)
        ):
            raise InputError(
                self.source,
                f"node {_label(node)}",
                f"a second input that matches the first's dimensions from axis {axis} "
                "(broadcasting before opset 7)",
                f"shapes {list(first)} and {list(second)}",
            )

    def _evaluate(self, index: int, node: onnx.NodeProto) -> None:
        """Give the node's outputs values when its inputs have them and the outputs are small."""
        if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC_OPS:
            return
        outputs = [name for name in node.output if name and name in self.shapes]
        if not outputs or any(
            _elements(self.shapes[name]) > VALUE_LIMIT_ELEMENTS for name in outputs
        ):
            return
        if node.op_type in ("Shape", "Size"):
            results = {node.output[0]: _shape_value(node, self.shapes[node.input[0]])}
        else:
            inputs = [name for name in node.input if name]
            if any(name not in self.values for name in inputs):
                return
            try:
                evaluator = ReferenceEvaluator(node, opsets=self.opsets)
                with np.errstate(all="ignore"):  # log(0) of a relative-position bucket is -inf
                    arrays = evaluator.run(None, {name: self.values[name] for name in inputs})
            except Exception:  # the reference evaluator lacks the op or rejects its inputs
                return
            results = {
                name: np.asarray(array)
                for name, array in zip(node.output, arrays, strict=False)
                if name
            }
        for name, value in results.items():
            if name in self.shapes and tuple(value.shape) != self.shapes[name]:
                return  # inference and evaluation disagree: trust neither with a value
        self.values.update(results)
        if all(name in self.values for name in node.output if name):
            self.folded.add(index)

    def _fold_if(self, index: int, node: onnx.NodeProto) -> None:
        """An If whose condition has a value: fold it when its taken branch folds."""
        condition = self.values.get(node.input[0])
        if condition is None or condition.size != 1:
            raise InputError(
                self.source,
                f"node {_label(node)}",
                "no control flow (an If folds only when its condition is a constant)",
                "an If whose condition depends on data",
            )
        branch_name = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
        branch = next(attr.g for attr in node.attribute if attr.name == branch_name)
        inner = _Pass(branch, self.opsets, self.ir_version, self.source)
        inner.start(KnownTensors(self.shapes, self.dtypes, self.values))
        for init in branch.initializer:
            inner.shapes[init.name] = tuple(int(d) for d in init.dims)
            inner.dtypes[init.name] = init.data_type
            if init.data_location != onnx.TensorProto.EXTERNAL:
                inner.values[init.name] = numpy_helper.to_array(init)
        inner.run()
        results = [inner.values.get(value.name) for value in branch.output]
        if any(value is None for value in results):
            raise InputError(
                self.source,
                f"node {_label(node)}",
                "no control flow (an If folds only when its taken branch is constant)",
                f"an If whose {branch_name} computes on data",
            )
        for name, value in zip(node.output, results, strict=False):
            assert value is not None
            if name:
                self.shapes[name] = tuple(value.shape)
                self.dtypes[name] = helper.np_dtype_to_tensor_dtype(value.dtype)
                self.values[name] = value
        self.folded.add(index)

    # --- helpers ------------------------------------------------------------------------------

    def _check_supported(self, node: onnx.NodeProto) -> None:
        _check_node_supported(node, self.source)

    def _type(self, name: str) -> onnx.TypeProto:
        found = self._types.get(name)
        if found is None:
            found = helper.make_tensor_type_proto(self.dtypes.get(name, 0), self.shapes[name])
            self._types[name] = found
        return found

    def _tensor(self, name: str) -> onnx.TensorProto:
        found = self._data.get(name)
        if found is None:
            found = numpy_helper.from_array(self.values[name], name)
            self._data[name] = found
        return found

    def _fallback_dtype(self, node: onnx.NodeProto) -> int:
        present = [name for name in node.input if name]
        return self.dtypes.get(present[0], onnx.TensorProto.FLOAT) if present else 1

    def _data_dependent(self, node: onnx.NodeProto, output: str) -> InputError:
        unknown = [name for name in node.input if name and name not in self.values]
        if len(unknown) > 1 and unknown[0] == node.input[0]:
            unknown = unknown[1:]  # the data operand: its values never set a shape by themselves
        reason = (
            f"{node.op_type} node {_label(node)} makes it from the values of "
            + ", ".join(unknown)
            + ", which are known only when the model runs"
            if unknown and node.op_type not in _DATA_SHAPED_OPS
            else f"{node.op_type} node {_label(node)} makes it from the data it reads"
        )
        return InputError(
            self.source,
            f"tensor {output}",
            "a shape that follows from the input shapes (bind them with --batch-size and "
            "--dim NAME=VALUE)",
            f"a shape that depends on data: {reason}",
        )


def _check_node_supported(node: onnx.NodeProto, source: str) -> None:
    standard = node.domain in ("", "ai.onnx")
    if standard and node.op_type in _SEQUENCE_OPS:
        raise InputError(
            source,
            f"node {_label(node)}",
            "tensor values only",
            f"{node.op_type}, an op on sequence or optional values",
        )
    if standard and node.op_type in _CONTROL_FLOW_OPS - {"If"}:
        raise InputError(
            source,
            f"node {_label(node)}",
            "no control flow (export with static loops unrolled)",
            f"a {node.op_type}",
        )


# Ops whose output shape depends on the values of their data input itself.
_DATA_SHAPED_OPS = frozenset({"NonZero", "Unique", "Compress", "StringSplit", "NonMaxSuppression"})


def _own_rule(node: onnx.NodeProto, position: int, shapes: Mapping[str, Shape]) -> Shape | None:
    """Shapes the op's definition fixes where onnx's inference function gives none."""
    if node.op_type == "Dropout" and position == 1 and node.input[0] in shapes:
        return shapes[node.input[0]]  # the mask has the input's shape (opsets 1 to 11)
    return None


def _shape_value(node: onnx.NodeProto, shape: Shape) -> np.ndarray:
    dims = np.array(shape, dtype=np.int64)
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), dtype=np.int64)
    attrs = {attr.name: attr.i for attr in node.attribute}
    rank = len(dims)
    start = attrs.get("start", 0)
    end = attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return dims[start:end]


def _elements(shape: Shape) -> int:
    count = 1
    for extent in shape:
        count *= extent
    return count


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} (unnamed)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
