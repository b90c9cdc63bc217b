"""An ONNX file as plain values: nodes, weights, data inputs. The executor's only `onnx` import.

Weights come from the file (embedded or in its external data file). A graph-only model (the
external data file is absent) gets seeded random weights: `OnnxModel.missing_weights` names
them and `seeded_weights` makes them. `with_weights` writes weights into a copy of the model, so
onnxruntime can run a graph-only model on the executor's weights.

Op names follow the rule the planner writes (`plans/naming.py`): the node's name,
or `{op_type}_{index}` when it has none, with `_1`, `_2`, ... for duplicates. The planner names
nodes of its constant-folded graph, so for unnamed nodes the CLI passes the planner's own names
(`stages.ModelFacts`); exporters name every node, and then both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from plans import limits
from plans.errors import InputError
from plans.naming import unique_op_name


@dataclass(frozen=True)
class Node:
    """One ONNX node; attributes as Python values (tensors as NumPy arrays)."""

    index: int
    name: str  # unique, by the planner's rule
    op_type: str
    domain: str
    inputs: tuple[str, ...]  # "" for an absent optional input
    outputs: tuple[str, ...]
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class DataInput:
    """A graph input that is data, not a weight. `shape` keeps symbolic dimensions as names."""

    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class OnnxModel:
    source: str
    opset: int
    nodes: tuple[Node, ...]
    inputs: tuple[DataInput, ...]
    outputs: tuple[str, ...]
    weights: Mapping[str, np.ndarray]  # initializers with their data
    missing_weights: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]]  # graph-only ones
    parameters: frozenset[str]  # trainable initializers (the planner's rule, see below)

    @property
    def initializer_names(self) -> frozenset[str]:
        return frozenset(self.weights) | frozenset(self.missing_weights)

    @property
    def uses_float64(self) -> bool:
        """Whether a data input or a weight is float64: such a model computes in float64 only
        with jax's 64-bit types on (`jax.enable_x64`); without them jax computes in float32."""
        dtypes = [value.dtype for value in self.inputs]
        dtypes += [np.dtype(value.dtype) for value in self.weights.values()]
        dtypes += [dtype for _, dtype in self.missing_weights.values()]
        return any(dtype == np.float64 for dtype in dtypes)


def op_parameters(model: OnnxModel) -> dict[str, tuple[str, ...]]:
    """Op name -> the trainable parameters it reads, in input order (for plans that record
    ZeRO per op, `plans/io.py`)."""
    return {
        node.name: tuple(dict.fromkeys(n for n in node.inputs if n in model.parameters))
        for node in model.nodes
    }


def load_model(path: str | Path) -> OnnxModel:
    """Read the model; weights from the file or its external data when present."""
    source = str(path)
    target = Path(path)
    if not target.is_file():
        raise InputError(source, "", "an ONNX model file", "no such file")
    try:
        proto = onnx.load(source, load_external_data=False)
    except Exception as error:  # protobuf DecodeError and friends: not ONNX
        raise InputError(
            source, "", "an ONNX model (protobuf ModelProto)", _first_line(error)
        ) from None
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not opset:
        raise InputError(source, "opset_import", "an ONNX (ai.onnx) opset version", "none")
    graph = proto.graph
    weights: dict[str, np.ndarray] = {}
    missing: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
    for init in graph.initializer:
        value = _initializer_value(init, target.parent, source)
        if value is None:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
            missing[init.name] = (tuple(int(d) for d in init.dims), dtype)
        else:
            weights[init.name] = value
    names: set[str] = set()
    nodes = tuple(
        Node(
            index=index,
            name=unique_op_name(node.name, node.op_type, index, names),
            op_type=node.op_type,
            domain="" if node.domain == "ai.onnx" else node.domain,
            inputs=tuple(node.input),
            outputs=tuple(node.output),
            attributes=MappingProxyType(
                {attr.name: _attribute(attr, source, node) for attr in node.attribute}
            ),
        )
        for index, node in enumerate(graph.node)
    )
    initializers = set(weights) | set(missing)
    inputs = tuple(
        _data_input(value, source) for value in graph.input if value.name not in initializers
    )
    return OnnxModel(
        source=source,
        opset=opset,
        nodes=nodes,
        inputs=inputs,
        outputs=tuple(value.name for value in graph.output),
        weights=MappingProxyType(weights),
        missing_weights=MappingProxyType(missing),
        parameters=_parameters(graph, weights, missing),
    )


def seeded_weights(model: OnnxModel, seed: int) -> dict[str, np.ndarray]:
    """Weights for a graph-only model, reproducible from `seed` (by name, in sorted order).

    Rules, by shape and name: tensors of rank >= 2 are N(0, 0.02^2) (GPT-2's initialiser);
    vectors are ones when their name ends in weight/scale/var (norm scales, running variances)
    and N(0, 0.02^2) otherwise (biases, running means); integer tensors are zeros.
    """
    rng = np.random.default_rng(seed)
    made: dict[str, np.ndarray] = {}
    for name in sorted(model.missing_weights):
        shape, dtype = model.missing_weights[name]
        if dtype.kind not in "f":
            made[name] = np.zeros(shape, dtype)
        elif len(shape) < 2 and name.endswith(("weight", "scale", "var", "running_var")):
            made[name] = np.ones(shape, dtype)
        else:
            made[name] = (0.02 * rng.standard_normal(shape)).astype(dtype)
    return made


def with_weights(path: str | Path, weights: Mapping[str, np.ndarray], target: str | Path) -> None:
    """Write a copy of the model at `path` to `target` with these initializer values embedded
    (for onnxruntime; the executor never needs it)."""
    proto = onnx.load(str(path), load_external_data=False)
    replaced = []
    for init in proto.graph.initializer:
        if init.name in weights:
            replaced.append(numpy_helper.from_array(np.asarray(weights[init.name]), init.name))
        else:
            replaced.append(init)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(replaced)
    onnx.save(proto, str(target))


def _initializer_value(init: onnx.TensorProto, base: Path, source: str) -> np.ndarray | None:
    if init.data_location == onnx.TensorProto.EXTERNAL:
        info = external_data_helper.ExternalDataInfo(init)
        if limits.outside_folder(info.location, base):  # never opened
            raise InputError(
                source,
                f"graph.initializer[{init.name}].external_data.location",
                "a file inside the model's folder",
                repr(info.location),
            )
        if not (base / info.location).is_file():
            return None
        loaded = onnx.TensorProto()
        loaded.CopyFrom(init)
        external_data_helper.load_external_data_for_tensor(loaded, str(base))
        return numpy_helper.to_array(loaded)
    return numpy_helper.to_array(init)


def _parameters(
    graph: onnx.GraphProto,
    weights: Mapping[str, np.ndarray],
    missing: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
) -> frozenset[str]:
    """Trainable initializers, as the planner decides (`_initializer_kind`): floating point with
    more than one element (a scalar is a literal such as an epsilon), and not used only as a
    BatchNormalization's running mean or variance (buffers no optimizer updates), and read by
    some node (dead weights are not part of the model)."""
    statistics: set[str] = set()
    other_uses: set[str] = set()
    for node in graph.node:
        for position, name in enumerate(node.input):
            if node.op_type == "BatchNormalization" and position in (3, 4):
                statistics.add(name)
            else:
                other_uses.add(name)
    found = set()
    for name, value in weights.items():
        if value.dtype.kind == "f" and value.size > 1:
            found.add(name)
    for name, (_, dtype) in missing.items():
        if dtype.kind == "f":
            found.add(name)
    return frozenset((found & other_uses) - (statistics - other_uses))


def _data_input(value: onnx.ValueInfoProto, source: str) -> DataInput:
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise InputError(source, f"graph.input[{value.name}]", "a tensor input", "another type")
    dims: list[int | str] = []
    for position, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append("batch" if position == 0 else f"{value.name}_{position}")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    return DataInput(value.name, tuple(dims), dtype)


def _attribute(attr: onnx.AttributeProto, source: str, node: onnx.NodeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [item.decode("utf-8") for item in value]
    if isinstance(value, onnx.GraphProto | list) and attr.type in (
        onnx.AttributeProto.GRAPH,
        onnx.AttributeProto.GRAPHS,
    ):
        raise InputError(
            source,
            f"node {node.name or node.op_type}: attribute {attr.name}",
            "an op without subgraphs (the executor runs no control flow)",
            f"a subgraph in {node.op_type}",
        )
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
