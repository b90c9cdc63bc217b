"""ONNX model -> `Graph` with static shapes. The only module that imports `onnx`.

Steps:
1. read the protobuf without weight data (`load_external_data=False`): only shapes matter, so a
   graph-only model whose external weight file is absent plans like any other;
2. bind symbolic dimensions: the batch (dimension 0 of every data input) from `batch_size`, any
   other from `dims`;
3. infer shapes with data propagation, fold what is constant (Shape of a static tensor, and ops
   whose inputs are all known small constants, evaluated with onnx's reference evaluator), infer
   again, until nothing changes. onnx's data propagation alone leaves Range- and Shape-derived
   tensors symbolic; folding is what makes a dynamic-batch export fully static;
4. find which dimension of each tensor follows the batch: do step 3 again at twice the batch and
   compare shapes;
5. build the immutable `Graph`, with FLOPs and bytes per op and the exporter's name scopes.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from planner.graph import AttrValue, Graph, Op, Tensor, TensorKind, op_traffic_bytes
from planner.op_flops import op_flops
from plans.errors import InputError
from plans.naming import unique_op_name

# Metadata key under which torch's dynamo exporter records module name scopes per node.
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

# Folding evaluates an op only when its inputs and outputs are at most this many elements:
# shape arithmetic is tiny, and large constants (causal masks) cost memory for no gain.
_FOLD_LIMIT_ELEMENTS = 1 << 16
_MAX_FOLD_ROUNDS = 32
_NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)

_DTYPE_NAMES: Mapping[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.STRING: "string",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.COMPLEX64: "complex64",
    onnx.TensorProto.COMPLEX128: "complex128",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.FLOAT8E4M3FN: "float8",
    onnx.TensorProto.FLOAT8E4M3FNUZ: "float8",
    onnx.TensorProto.FLOAT8E5M2: "float8",
    onnx.TensorProto.FLOAT8E5M2FNUZ: "float8",
}


@dataclass(frozen=True)
class _Inferred:
    """Shapes and dtypes of every tensor after binding, folding and inference."""

    model: onnx.ModelProto
    shapes: Mapping[str, tuple[int | str | None, ...] | None]
    dtypes: Mapping[str, int]
    folded: frozenset[str]  # names of tensors whose values became constants


def load_onnx(
    path: str | Path, batch_size: int | None = None, dims: Mapping[str, int] | None = None
) -> Graph:
    """Read an ONNX model and return its `Graph` at the given batch size.

    Raises `InputError` for anything wrong with the file or the bindings.
    """
    source = str(path)
    model = _read_model(Path(path))
    bindings = dict(dims or {})
    batch = _bind_batch(model, source, batch_size, bindings)
    inferred = _infer_static(model, source, bindings)
    unknown = _unknown_shapes(inferred)
    if unknown:
        listed = ", ".join(f"{name} {shape}" for name, shape in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise InputError(
            source,
            "tensor shapes",
            "static shapes after binding (bind symbolic dimensions with --dim NAME=VALUE)",
            f"{len(unknown)} tensors with unknown dimensions: {listed}{more}",
        )
    batch_dims = _batch_dims(model, source, bindings, batch, inferred)
    return _build_graph(inferred, source, batch, batch_dims)


# --- 1. reading -----------------------------------------------------------------------------


def _read_model(path: Path) -> onnx.ModelProto:
    source = str(path)
    if not path.exists():
        raise InputError(source, "", "an ONNX model file", "no such file")
    if path.is_dir():
        raise InputError(source, "", "an ONNX model file", "a directory")
    try:
        model = onnx.load(source, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: the file is not ONNX
        raise InputError(
            source, "", "an ONNX model (protobuf ModelProto)", _first_line(error)
        ) from None
    if not model.graph.node:
        raise InputError(
            source, "graph.node", "an ONNX model with at least one node", "an empty graph"
        )
    if not model.opset_import:
        raise InputError(source, "opset_import", "an ONNX opset version", "none")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    try:
        onnx.checker.check_model(_without_external_data(model))
    except Exception as error:  # ValidationError: structurally broken (e.g. truncated) model
        raise InputError(source, "", "a valid ONNX model", _first_line(error)) from None
    return model


def _without_external_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for the checker in which weights stored outside the file are graph inputs: the
    checker insists that external data exist, and the planner never reads it."""
    external = [
        init for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
    ]
    if not external:
        return model
    checked = onnx.ModelProto()
    checked.CopyFrom(model)
    names = {init.name for init in external}
    kept = [init for init in checked.graph.initializer if init.name not in names]
    del checked.graph.initializer[:]
    checked.graph.initializer.extend(kept)
    listed = {value.name for value in checked.graph.input}
    for init in external:
        if init.name not in listed:
            checked.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    return checked


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# --- 2. binding -----------------------------------------------------------------------------


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def _bind_batch(
    model: onnx.ModelProto, source: str, batch_size: int | None, bindings: dict[str, int]
) -> int:
    """Put the batch into `bindings` (for a symbolic batch) and return the batch size."""
    for name, value in bindings.items():
        if value < 1:
            raise InputError(source, f"--dim {name}", "a positive integer", str(value))
    if batch_size is not None and batch_size < 1:
        raise InputError(source, "--batch-size", "a positive integer", str(batch_size))
    leading: list[tuple[str, onnx.TensorShapeProto.Dimension]] = []
    for value in _data_inputs(model):
        shape = value.type.tensor_type.shape
        if value.type.tensor_type.HasField("shape") and shape.dim:
            leading.append((value.name, shape.dim[0]))
    if not leading:
        raise InputError(
            source, "graph.input", "a data input with a batch dimension", "no data inputs"
        )
    name, first = leading[0]
    field = f"graph.input[{name}].shape[0]"
    if first.HasField("dim_value"):
        fixed = first.dim_value
        if batch_size is not None and batch_size != fixed:
            raise InputError(
                source,
                field,
                f"a symbolic batch dimension to bind --batch-size {batch_size}",
                f"a fixed batch of {fixed}; export the model with a dynamic batch dimension "
                "(dynamic_shapes={'input_ids': {0: 'batch'}})",
            )
        return fixed
    symbol = first.dim_param or "?"
    if batch_size is None:
        if symbol in bindings:
            return bindings[symbol]
        raise InputError(
            source,
            field,
            f"--batch-size N to bind the symbolic batch dimension '{symbol}'",
            "no --batch-size",
        )
    if symbol in bindings and bindings[symbol] != batch_size:
        raise InputError(
            source, f"--dim {symbol}", f"the batch size {batch_size}", str(bindings[symbol])
        )
    if first.dim_param:
        bindings[symbol] = batch_size
    return batch_size


def _bound_model(
    model: onnx.ModelProto, source: str, bindings: Mapping[str, int], batch: int | None
) -> onnx.ModelProto:
    """A copy with data-input dimensions bound (and dimension 0 forced to `batch` if given),
    intermediate shape annotations dropped so that inference starts from the inputs."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for value in _data_inputs(bound):
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if position == 0 and batch is not None:
                dim.dim_value = batch
            elif dim.HasField("dim_param"):
                if dim.dim_param not in bindings:
                    raise InputError(
                        source,
                        f"graph.input[{value.name}].shape[{position}]",
                        f"a value for the symbolic dimension '{dim.dim_param}' "
                        f"(--dim {dim.dim_param}=N)",
                        "none",
                    )
                dim.dim_value = bindings[dim.dim_param]
            elif not dim.HasField("dim_value"):
                raise InputError(
                    source,
                    f"graph.input[{value.name}].shape[{position}]",
                    "a named or fixed dimension",
                    "an unnamed unknown dimension",
                )
    del bound.graph.value_info[:]
    for value in bound.graph.output:
        value.type.tensor_type.ClearField("shape")
    return bound


# --- 3. inference and folding ---------------------------------------------------------------


def _infer_static(
    model: onnx.ModelProto, source: str, bindings: Mapping[str, int], batch: int | None = None
) -> _Inferred:
    current = _bound_model(model, source, bindings, batch)
    folded: set[str] = set()
    for _ in range(_MAX_FOLD_ROUNDS):
        current = _infer(current, source)
        shapes, dtypes = _shape_table(current)
        current, newly_folded = _fold_once(current, shapes)
        folded |= newly_folded
        if not newly_folded:
            break
    shapes, dtypes = _shape_table(current)
    return _Inferred(current, shapes, dtypes, frozenset(folded))


def _infer(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:  # InferenceError: inconsistent shapes in the model
        raise InputError(
            source, "shape inference", "consistent shapes", _first_line(error)
        ) from None


def _shape_table(
    model: onnx.ModelProto,
) -> tuple[dict[str, tuple[int | str | None, ...] | None], dict[str, int]]:
    shapes: dict[str, tuple[int | str | None, ...] | None] = {}
    dtypes: dict[str, int] = {}
    graph = model.graph
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        dtypes[init.name] = init.data_type
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name in shapes and shapes[value.name] is not None and value.name in dtypes:
            continue
        tensor_type = value.type.tensor_type
        dtypes[value.name] = tensor_type.elem_type
        if not tensor_type.HasField("shape"):
            shapes[value.name] = None
            continue
        dims: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        shapes[value.name] = tuple(dims)
    return shapes, dtypes


def _is_static(shape: tuple[int | str | None, ...] | None) -> bool:
    return shape is not None and all(isinstance(dim, int) for dim in shape)


def _embedded_value(init: onnx.TensorProto) -> np.ndarray | None:
    if init.data_location == onnx.TensorProto.EXTERNAL:
        return None
    count = int(np.prod(init.dims)) if init.dims else 1
    if count > _FOLD_LIMIT_ELEMENTS:
        return None
    try:
        return numpy_helper.to_array(init)
    except Exception:  # an exotic element type: leave it unfolded
        return None


def _fold_once(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int | str | None, ...] | None]
) -> tuple[onnx.ModelProto, set[str]]:
    """Evaluate every op whose result is a known small constant; return the model with those
    ops replaced by initializers, and the names of the tensors folded."""
    values: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        value = _embedded_value(init)
        # Weights are never folded: an op on a weight (a tied embedding's transpose) is work
        # the model does, and the weight stays a trained parameter.
        if value is not None and _initializer_kind(init, False, False) is not TensorKind.PARAMETER:
            values[init.name] = value
    opsets = {entry.domain or "": entry.version for entry in model.opset_import}
    folded_nodes: list[int] = []
    for index, node in enumerate(model.graph.node):
        results = _evaluate(node, values, shapes, opsets)
        if results is None:
            continue
        values.update(results)
        folded_nodes.append(index)
    if not folded_nodes:
        return model, set()
    result = onnx.ModelProto()
    result.CopyFrom(model)
    drop = set(folded_nodes)
    kept = [node for index, node in enumerate(model.graph.node) if index not in drop]
    new_names: set[str] = set()
    for index in folded_nodes:
        for name in model.graph.node[index].output:
            if name:
                new_names.add(name)
    # Graph outputs that fold stay produced by an Identity of the constant, so the graph keeps
    # its interface.
    del result.graph.node[:]
    result.graph.node.extend(kept)
    existing = {init.name for init in result.graph.initializer}
    for name in sorted(new_names):
        if name not in existing:
            result.graph.initializer.append(numpy_helper.from_array(values[name], name))
    return result, new_names


def _evaluate(
    node: onnx.NodeProto,
    values: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int | str | None, ...] | None],
    opsets: Mapping[str, int],
) -> dict[str, np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC_OPS:
        return None
    if any(attr.type == onnx.AttributeProto.GRAPH for attr in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if not _is_static(shape):
            return None
        dims = np.array(shape, dtype=np.int64)
        if node.op_type == "Size":
            return {node.output[0]: np.array(int(np.prod(dims)), dtype=np.int64)}
        attrs = {attr.name: attr.i for attr in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(dims))
        return {node.output[0]: dims[start:end] if "end" in attrs else dims[start:]}
    inputs = [name for name in node.input if name]
    if any(name not in values for name in inputs):
        return None
    if sum(values[name].size for name in inputs) > _FOLD_LIMIT_ELEMENTS:
        return None
    try:
        evaluator = ReferenceEvaluator(node, opsets=dict(opsets))
        outputs = evaluator.run(None, {name: values[name] for name in inputs})
    except Exception:  # the reference evaluator lacks the op or rejects its inputs: keep it
        return None
    results: dict[str, np.ndarray] = {}
    for name, output in zip(node.output, outputs, strict=False):
        array = np.asarray(output)
        if array.size > _FOLD_LIMIT_ELEMENTS:
            return None
        if name:
            results[name] = array
    return results


def _unknown_shapes(inferred: _Inferred) -> list[tuple[str, str]]:
    unknown: list[tuple[str, str]] = []
    seen: set[str] = set()
    for node in inferred.model.graph.node:
        for name in [*node.input, *node.output]:
            if not name or name in seen:
                continue
            seen.add(name)
            shape = inferred.shapes.get(name)
            if not _is_static(shape):
                shown = (
                    "unknown"
                    if shape is None
                    else "["
                    + ", ".join(str(dim if dim is not None else "?") for dim in shape)
                    + "]"
                )
                unknown.append((name, shown))
    return unknown


# --- 4. batch dimensions --------------------------------------------------------------------


def _batch_dims(
    model: onnx.ModelProto,
    source: str,
    bindings: Mapping[str, int],
    batch: int,
    inferred: _Inferred,
) -> dict[str, int]:
    """Which dimension of each tensor scales with the batch: infer again at twice the batch and
    keep, per tensor, the first dimension that doubled. A model whose graph fixes the batch in
    its constants gives no answer at the other size; its tensors then have none."""
    try:
        doubled = _infer_static(model, source, bindings, batch=2 * batch)
    except InputError:
        return {}
    found: dict[str, int] = {}
    for name, shape in inferred.shapes.items():
        other = doubled.shapes.get(name)
        if not _is_static(shape) or not _is_static(other):
            continue
        assert shape is not None and other is not None
        if len(shape) != len(other):
            continue
        for position, (small, large) in enumerate(zip(shape, other, strict=True)):
            if small != large:
                assert isinstance(small, int) and isinstance(large, int)
                if large == 2 * small:
                    found[name] = position
                break
    return found


# --- 5. the Graph ---------------------------------------------------------------------------


def _build_graph(
    inferred: _Inferred, source: str, batch: int, batch_dims: Mapping[str, int]
) -> Graph:
    graph = inferred.model.graph
    data_inputs = {value.name for value in _data_inputs(inferred.model)}
    initializers = {init.name: init for init in graph.initializer}
    tensors: dict[str, Tensor] = {}
    warnings: list[str] = []

    def add(name: str, kind: TensorKind, value: tuple[float, ...] | None = None) -> None:
        if not name or name in tensors:
            return
        shape = inferred.shapes[name]
        assert shape is not None
        dtype = _dtype_name(inferred.dtypes.get(name, 0), source, name)
        tensors[name] = Tensor(
            name=name,
            shape=tuple(int(dim) for dim in shape),  # type: ignore[arg-type]
            dtype=dtype,
            kind=kind,
            batch_dim=batch_dims.get(name),
            value=value if kind is TensorKind.CONSTANT else None,
        )

    for name in data_inputs:
        add(name, TensorKind.INPUT)
    referenced = {name for node in graph.node for name in node.input}
    statistics = _running_statistics(graph)
    for name, init in initializers.items():
        if name in referenced:  # dead weights are not part of the model
            kind = _initializer_kind(init, name in inferred.folded, name in statistics)
            add(name, kind, _small_value(init))
    ops: list[Op] = []
    names_used: set[str] = set()
    unknown_types: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and not node.domain:
            add(node.output[0], TensorKind.CONSTANT)  # not folded (too large): still a literal
            continue
        for name in node.input:
            if name and name not in tensors:
                # An input that no node produced and no initializer holds: a graph input that
                # is also listed among initializers, or an outer-scope name.
                add(name, TensorKind.INPUT)
        for name in node.output:
            add(name, TensorKind.ACTIVATION)
        op = Op(
            name=unique_op_name(node.name, node.op_type, index, names_used),
            op_type=node.op_type,
            inputs=tuple(node.input),
            outputs=tuple(node.output),
            attributes=_attributes(node),
            scopes=_name_scopes(node),
            domain="" if node.domain == "ai.onnx" else node.domain,
        )
        if node.domain not in ("", "ai.onnx") or node.op_type not in _KNOWN_OP_TYPES:
            unknown_types.add(node.op_type)
        ops.append(op)
    if unknown_types:
        warnings.append(
            "op types without a specific cost rule (priced by element count): "
            + ", ".join(sorted(unknown_types))
        )
    priced = []
    for op in ops:
        read, written = op_traffic_bytes(op, tensors)
        priced.append(
            replace(op, flops=op_flops(op, tensors), bytes_read=read, bytes_written=written)
        )
    return Graph(
        name=graph.name or Path(source).stem,
        ops=tuple(priced),
        tensors=tensors,
        inputs=tuple(value.name for value in graph.input if value.name in data_inputs),
        outputs=tuple(value.name for value in graph.output),
        batch_size=batch,
        warnings=tuple(warnings),
    )


def _initializer_kind(init: onnx.TensorProto, folded: bool, statistics: bool) -> TensorKind:
    """Floating-point initializers are parameters; integer ones and folded values constants.

    An embedded floating-point scalar is a literal (an epsilon, a scale), not a weight, and
    batch-norm running statistics (`statistics`) are buffers that no optimizer updates.
    """
    if folded or statistics:
        return TensorKind.CONSTANT
    is_float = _DTYPE_NAMES.get(init.data_type, "") in (
        "float32",
        "float16",
        "bfloat16",
        "float64",
        "float8",
    )
    external = init.data_location == onnx.TensorProto.EXTERNAL
    count = int(np.prod(init.dims)) if init.dims else 1
    if is_float and (external or count > 1):
        return TensorKind.PARAMETER
    return TensorKind.CONSTANT


# Constants up to this many elements keep their values in the Graph (axes, split sizes).
_KEPT_VALUE_ELEMENTS = 64


def _small_value(init: onnx.TensorProto) -> tuple[float, ...] | None:
    value = _embedded_value(init)
    if value is None or value.size > _KEPT_VALUE_ELEMENTS or value.dtype.kind not in "iufb":
        return None
    return tuple(value.reshape(-1).tolist())


def _running_statistics(graph: onnx.GraphProto) -> set[str]:
    """Tensors used only as a BatchNormalization's running mean or variance (inputs 3, 4)."""
    other_uses: set[str] = set()
    statistics: set[str] = set()
    for node in graph.node:
        for position, name in enumerate(node.input):
            if node.op_type == "BatchNormalization" and position in (3, 4):
                statistics.add(name)
            else:
                other_uses.add(name)
    return statistics - other_uses


def _dtype_name(code: int, source: str, tensor: str) -> str:
    name = _DTYPE_NAMES.get(code)
    if name is None:
        raise InputError(
            source,
            f"tensor {tensor}: elem_type",
            "a supported ONNX element type (float, float16, bfloat16, int64, bool, ...)",
            str(code),
        )
    return name


def _name_scopes(node: onnx.NodeProto) -> tuple[str, ...]:
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ()
            if isinstance(scopes, list | tuple):
                return tuple(str(scope) for scope in scopes)
    return ()


def _attributes(node: onnx.NodeProto) -> tuple[tuple[str, AttrValue], ...]:
    converted: list[tuple[str, AttrValue]] = []
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        converted.append((attr.name, _attr_value(value)))
    return tuple(sorted(converted))


def _attr_value(value: object) -> AttrValue:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, onnx.TensorProto):
        return f"<tensor {list(value.dims)}>"
    if isinstance(value, onnx.GraphProto):
        return "<graph>"
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [_attr_value(item) for item in value]
        if all(isinstance(item, int) for item in items):
            return tuple(int(item) for item in items)  # type: ignore[arg-type]
        if all(isinstance(item, int | float) for item in items):
            return tuple(float(item) for item in items)  # type: ignore[arg-type]
        return tuple(str(item) for item in items)
    return str(value)


# Op types the cost rules know by name (op_flops and the view/selection sets in graph.py);
# anything else is priced by element count and named in a warning.
_KNOWN_OP_TYPES = frozenset(
    {
        "Abs",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "CastLike",
        "Ceil",
        "Clip",
        "Concat",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "CumSum",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GroupNormalization",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mod",
        "Mul",
        "Neg",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "Pow",
        "PRelu",
        "Range",
        "Reciprocal",
        "ReduceL2",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "RMSNormalization",
        "ScatterElements",
        "ScatterND",
        "Shape",
        "Sigmoid",
        "Sign",
        "SimplifiedLayerNormalization",
        "Sin",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Where",
        "Xor",
    }
)
