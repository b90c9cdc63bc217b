"""ONNX model -> `Graph` with static shapes. The planner imports `onnx` only here, in
`planner/shape_resolution.py` (its helper) and in `planner/onnx_export.py` (the way back).

Steps:
1. read the protobuf without weight data (`load_external_data=False`): only shapes matter, so a
   graph-only model whose external weight file is absent plans like any other;
2. bind symbolic dimensions: the batch (dimension 0 of every data input) from `batch_size`, any
   other from `dims`;
3. resolve static shapes in one pass over the nodes (`planner/shape_resolution.py`): onnx's
   inference per node at concrete input shapes, with the values of the shape arithmetic
   (Shape, Gather, Concat, Range, ...) evaluated as it goes; nodes whose outputs all have
   values (constants and shape arithmetic) fold away. A shape that depends on data is an error
   naming the tensor and its op;
4. find which dimension of each tensor follows the batch: do step 3 again at twice the batch and
   compare shapes;
5. build the immutable `Graph`, with FLOPs and bytes per op and the exporter's name scopes.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import Message
from onnx import numpy_helper

from planner.graph import AttrValue, Graph, Op, Tensor, TensorKind
from planner.ops import info_of, priced
from planner.shape_resolution import (
    VALUE_LIMIT_ELEMENTS,
    KnownTensors,
    Resolution,
    check_supported,
    resolve_shapes,
)
from plans import limits
from plans.errors import InputError
from plans.naming import unique_op_name

# Metadata key under which torch's dynamo exporter records module name scopes per node.
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

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


def load_onnx(
    path: str | Path, batch_size: int | None = None, dims: Mapping[str, int] | None = None
) -> Graph:
    """Read an ONNX model and return its `Graph` at the given batch size.

    Raises `InputError` for anything wrong with the file or the bindings.
    """
    source = str(path)
    model = read_model(Path(path))
    check_supported(model, source)
    bindings = dict(dims or {})
    batch = _bind_batch(model, source, batch_size, bindings)
    resolved = _resolve(model, source, bindings)
    batch_dims = _batch_dims(model, source, bindings, batch, resolved)
    return _build_graph(model, resolved, source, batch, batch_dims)


# --- 1. reading -----------------------------------------------------------------------------


def read_model(path: Path) -> onnx.ModelProto:
    """The model's protobuf, checked, without weight data; local functions inlined (the
    graph whose nodes the plan names)."""
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
    _check_text(model, source, "")
    _check_external_locations(model, source, path.parent)
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


def _check_text(message: Message, source: str, path: str) -> None:
    """Every string field is text: protobuf hands a string field of invalid UTF-8 (a
    corrupted file) back as bytes, which no name may be."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else (value,)
        for index, item in enumerate(values):
            where = f"{path}{field.name}[{index}]" if field.is_repeated else path + field.name
            if field.type == field.TYPE_MESSAGE:
                _check_text(item, source, where + ".")
            elif field.type == field.TYPE_STRING and not isinstance(item, str):
                raise InputError(source, where, "UTF-8 text", repr(item)[:60])


def _check_external_locations(model: onnx.ModelProto, source: str, folder: Path) -> None:
    """Refuse weights whose external data lies outside the model's folder (`plans.limits`):
    the planner never reads them, but `run` would; the checker covers constants' tensors."""
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in init.external_data if e.key == "location"), "")
        if limits.outside_folder(location, folder):
            raise InputError(
                source,
                f"graph.initializer[{init.name}].external_data.location",
                "a file inside the model's folder",
                repr(location),
            )


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
        if value > limits.MAX_DIMENSION:
            raise InputError(source, f"--dim {name}", *limits.too_many(limits.MAX_DIMENSION, value))
    if batch_size is not None and batch_size < 1:
        raise InputError(source, "--batch-size", "a positive integer", str(batch_size))
    if batch_size is not None and batch_size > limits.MAX_BATCH_SIZE:
        raise InputError(
            source, "--batch-size", *limits.too_many(limits.MAX_BATCH_SIZE, batch_size)
        )
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
        if not 1 <= fixed <= limits.MAX_BATCH_SIZE:
            raise InputError(
                source, field, f"a batch of 1 to {limits.MAX_BATCH_SIZE} samples", str(fixed)
            )
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


# --- 3. shapes -------------------------------------------------------------------------------


def _resolve(
    model: onnx.ModelProto, source: str, bindings: Mapping[str, int], batch: int | None = None
) -> Resolution:
    """Static shapes after binding (`planner/shape_resolution.py` does the work)."""
    data_inputs = _data_inputs(model)
    batched = _batch_inputs(data_inputs)
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, int] = {}
    values: dict[str, np.ndarray] = {}
    for value in data_inputs:
        shapes[value.name] = _bound_shape(
            value, source, bindings, batch if value.name in batched else None
        )
        dtypes[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        dtypes[init.name] = init.data_type
        embedded = _embedded_value(init)
        # Weights never get values: an op on a weight (a tied embedding's transpose) is work
        # the model does, and the weight stays a trained parameter.
        weight = _initializer_kind(init, False, False) is TensorKind.PARAMETER
        if embedded is not None and not weight:
            values[init.name] = embedded
    return resolve_shapes(model, KnownTensors(shapes, dtypes, values), source)


def _batch_inputs(data_inputs: Sequence[onnx.ValueInfoProto]) -> set[str]:
    """The data inputs whose dimension 0 is the batch: the first input's dimension 0 (as
    `_bind_batch` reads it), and every input whose dimension 0 is the same symbol, or the same
    fixed size when the first's is fixed. A weight matrix fed as an input ([3, 4] beside data of
    [2, 3]) or a broadcast operand ([3]) keeps its shape."""
    leading = [
        (value.name, value.type.tensor_type.shape.dim[0])
        for value in data_inputs
        if value.type.tensor_type.HasField("shape") and value.type.tensor_type.shape.dim
    ]
    if not leading:
        return set()
    first = leading[0][1]

    def same(dim: onnx.TensorShapeProto.Dimension) -> bool:
        if first.HasField("dim_value"):
            return dim.HasField("dim_value") and bool(dim.dim_value == first.dim_value)
        return not dim.HasField("dim_value") and bool(dim.dim_param == first.dim_param)

    return {name for name, dim in leading if same(dim)}


def _bound_shape(
    value: onnx.ValueInfoProto, source: str, bindings: Mapping[str, int], batch: int | None
) -> tuple[int, ...]:
    """A data input's shape with its symbolic dimensions bound (dimension 0 forced to `batch`
    if given)."""
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise InputError(source, f"graph.input[{value.name}]", "a tensor input", "another type")
    if not tensor_type.HasField("shape"):
        raise InputError(
            source, f"graph.input[{value.name}].shape", "a shape (rank and dimensions)", "none"
        )
    dims: list[int] = []
    for position, dim in enumerate(tensor_type.shape.dim):
        if position == 0 and batch is not None:
            dims.append(batch)
        elif dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            if dim.dim_param not in bindings:
                raise InputError(
                    source,
                    f"graph.input[{value.name}].shape[{position}]",
                    f"a value for the symbolic dimension '{dim.dim_param}' "
                    f"(--dim {dim.dim_param}=N)",
                    "none",
                )
            dims.append(bindings[dim.dim_param])
        else:
            raise InputError(
                source,
                f"graph.input[{value.name}].shape[{position}]",
                "a named or fixed dimension",
                "an unnamed unknown dimension",
            )
    return tuple(dims)


def _embedded_value(init: onnx.TensorProto) -> np.ndarray | None:
    if init.data_location == onnx.TensorProto.EXTERNAL:
        return None
    count = int(np.prod(init.dims)) if init.dims else 1
    if count > VALUE_LIMIT_ELEMENTS:
        return None
    try:
        return numpy_helper.to_array(init)
    except Exception:  # an exotic element type: leave it without a value
        return None


# --- 4. batch dimensions --------------------------------------------------------------------


def _batch_dims(
    model: onnx.ModelProto,
    source: str,
    bindings: Mapping[str, int],
    batch: int,
    resolved: Resolution,
) -> dict[str, int]:
    """Which dimension of each tensor scales with the batch: resolve again at twice the batch
    and keep, per tensor, the first dimension that doubled. A model whose graph fixes the batch
    in its constants gives no answer at the other size; its tensors then have none."""
    try:
        doubled = _resolve(model, source, bindings, batch=2 * batch)
    except InputError:
        return {}
    found: dict[str, int] = {}
    for name, shape in resolved.shapes.items():
        other = doubled.shapes.get(name)
        if other is None or len(shape) != len(other):
            continue
        for position, (small, large) in enumerate(zip(shape, other, strict=True)):
            if small != large:
                if large == 2 * small:
                    found[name] = position
                break
    return found


# --- 5. the Graph ---------------------------------------------------------------------------


def _build_graph(
    model: onnx.ModelProto,
    resolved: Resolution,
    source: str,
    batch: int,
    batch_dims: Mapping[str, int],
) -> Graph:
    graph = model.graph
    data_inputs = {value.name for value in _data_inputs(model)}
    initializers = {init.name: init for init in graph.initializer}
    tensors: dict[str, Tensor] = {}
    warnings: list[str] = []

    def add(name: str, kind: TensorKind) -> None:
        if not name or name in tensors:
            return
        dtype = _dtype_name(resolved.dtypes.get(name, 0), source, name)
        value = resolved.values.get(name) if kind is TensorKind.CONSTANT else None
        tensors[name] = Tensor(
            name=name,
            shape=resolved.shapes[name],
            dtype=dtype,
            kind=kind,
            batch_dim=batch_dims.get(name),
            value=_small_value(value),
        )

    for name in data_inputs:
        add(name, TensorKind.INPUT)
    kept = [(index, node) for index, node in enumerate(graph.node) if index not in resolved.folded]
    referenced = {name for _, node in kept for name in node.input}
    folded_outputs = {
        name for index in resolved.folded for name in graph.node[index].output if name
    }
    statistics = _running_statistics(graph)
    for name, init in initializers.items():
        if name in referenced:  # dead weights are not part of the model
            add(name, _initializer_kind(init, False, name in statistics))
    for name in sorted(folded_outputs & (referenced | {v.name for v in graph.output})):
        add(name, TensorKind.CONSTANT)
    ops: list[Op] = []
    names_used: set[str] = set()
    unknown_types: set[str] = set()
    for index, node in kept:
        if node.op_type == "Constant" and not node.domain:
            add(node.output[0], TensorKind.CONSTANT)  # no value kept (too large): a literal
            continue
        for name in node.input:
            if name and name not in tensors:
                # An input that no node produced and no initializer holds: a graph input that
                # is also listed among initializers, or an outer-scope name.
                add(name, TensorKind.INPUT)
        outputs = tuple("" if name in resolved.unread else name for name in node.output)
        for name in outputs:
            add(name, TensorKind.ACTIVATION)
        op = Op(
            name=unique_op_name(node.name, node.op_type, index, names_used),
            op_type=node.op_type,
            inputs=tuple(node.input),
            outputs=outputs,
            attributes=_attributes(node),
            scopes=_name_scopes(node),
            domain="" if node.domain == "ai.onnx" else node.domain,
        )
        if info_of(op) is None:
            unknown_types.add(node.op_type)
        ops.append(op)
    if unknown_types:
        warnings.append(
            "op types without a specific cost rule (priced by element count): "
            + ", ".join(sorted(unknown_types))
        )
    return priced(
        Graph(
            name=graph.name or Path(source).stem,
            ops=tuple(ops),
            tensors=tensors,
            inputs=tuple(value.name for value in graph.input if value.name in data_inputs),
            outputs=tuple(value.name for value in graph.output),
            batch_size=batch,
            warnings=tuple(warnings),
        )
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


def _small_value(value: np.ndarray | None) -> tuple[float, ...] | None:
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
