"""Plan <-> JSON, and the atomic write.

The text is deterministic: keys sorted, floats rounded to `FLOAT_DIGITS` significant digits,
lists in the plan's own order, no timestamps. Equal plans give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plans.errors import InputError
from plans.plan import (
    SCHEMA,
    ClusterInfo,
    Estimate,
    GpuInfo,
    Layer,
    ModelInfo,
    Plan,
    PlannerInfo,
    Settings,
    Stage,
    StageMemory,
    StageTime,
    Transfer,
    frozen_map,
)

FLOAT_DIGITS = 6


def _round(value: float) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{FLOAT_DIGITS}g}")


def _plain(value: Any) -> Any:
    """Mappings, tuples and floats as JSON-ready dicts, lists and rounded floats."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return _round(value)
    return value


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    result: dict[str, Any] = _plain(
        {
            "schema": plan.schema,
            "planner": {"version": plan.planner.version, "options": plan.planner.options},
            "model": {
                "name": plan.model.name,
                "fingerprint": plan.model.fingerprint,
                "parameters": plan.model.parameters,
                "flops_per_sample": plan.model.flops_per_sample,
            },
            "cluster": {
                "name": plan.cluster.name,
                "hosts": plan.cluster.hosts,
                "gpus_per_host": plan.cluster.gpus_per_host,
                "gpu": {
                    "name": plan.cluster.gpu.name,
                    "memory_bytes": plan.cluster.gpu.memory_bytes,
                    "peak_flops": plan.cluster.gpu.peak_flops,
                    "memory_bandwidth_bytes_per_s": plan.cluster.gpu.memory_bandwidth_bytes_per_s,
                },
            },
            "settings": {
                "mode": plan.settings.mode,
                "batch_size": plan.settings.batch_size,
                "microbatches": plan.settings.microbatches,
                "schedule": plan.settings.schedule,
                "dtype": plan.settings.dtype,
                "optimizer": plan.settings.optimizer,
            },
            "layers": [
                {
                    "name": layer.name,
                    "ops": layer.ops,
                    "flops": layer.flops,
                    "parameter_bytes": layer.parameter_bytes,
                }
                for layer in plan.layers
            ],
            "stages": [_stage_to_dict(stage) for stage in plan.stages],
            "transfers": [
                {
                    "tensor": t.tensor,
                    "source_stage": t.source_stage,
                    "destination_stage": t.destination_stage,
                    "source_spec": t.source_spec,
                    "destination_spec": t.destination_spec,
                    "size_bytes": t.size_bytes,
                    "time_s": t.time_s,
                }
                for t in plan.transfers
            ],
            "estimate": {
                "iteration_time_s": plan.estimate.iteration_time_s,
                "samples_per_s": plan.estimate.samples_per_s,
                "tflops_per_gpu": plan.estimate.tflops_per_gpu,
                "peak_memory_bytes": plan.estimate.peak_memory_bytes,
            },
            "search": plan.search,
        }
    )
    return result


def _stage_to_dict(stage: Stage) -> dict[str, Any]:
    return {
        "index": stage.index,
        "layers": stage.layers,
        "ops": stage.ops,
        "devices": stage.devices,
        "logical_mesh": stage.logical_mesh,
        "strategies": stage.strategies,
        "shardings": stage.shardings,
        "time_s": {
            "forward": stage.time.forward_s,
            "backward": stage.time.backward_s,
            "communication": stage.time.communication_s,
            "gradient_sync": stage.time.gradient_sync_s,
            "total": stage.time.total_s,
        },
        "memory_bytes": {
            "parameters": stage.memory.parameters_bytes,
            "gradients": stage.memory.gradients_bytes,
            "optimizer": stage.memory.optimizer_bytes,
            "activations": stage.memory.activations_bytes,
            "peak": stage.memory.peak_bytes,
        },
    }


def plan_to_json(plan: Plan) -> str:
    return dumps_stable(plan_to_dict(plan)) + "\n"


def dumps_stable(value: Any, indent: str = "") -> str:
    """JSON with sorted keys, one key per line, and lists of scalars (or of short scalar
    lists, such as device ids) kept on one line: readable, diffable, deterministic."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        items = [
            f"{inner}{json.dumps(key)}: {dumps_stable(value[key], inner)}" for key in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if all(_is_flat(item) for item in value):
            return json.dumps(value, separators=(", ", ": "), allow_nan=False)
        inner = indent + "  "
        items = [f"{inner}{dumps_stable(item, inner)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, allow_nan=False)


def _is_flat(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) <= 4 and not any(isinstance(item, dict | list) for item in value)
    return not isinstance(value, dict)


def write_text_atomically(text: str, path: str | Path) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place: readers see
    the old file or the new one, never half of one."""
    target = Path(path)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path(".")
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_plan(plan: Plan, path: str | Path) -> None:
    write_text_atomically(plan_to_json(plan), path)


# --- reading ---------------------------------------------------------------------------------


class _Reader:
    """Walks a JSON document, reporting the first problem by its JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str, found: object) -> InputError:
        shown = json.dumps(found) if not isinstance(found, str) else repr(found)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return InputError(self.source, path, expected, shown)

    def get(self, data: Mapping[str, Any], path: str, key: str) -> Any:
        if key not in data:
            raise InputError(self.source, _join(path, key), "a value", "nothing")
        return data[key]

    def _value(self, data: Mapping[str, Any], path: str, key: str, ok: bool, what: str) -> Any:
        value = data[key]
        if not ok:
            raise self.fail(_join(path, key), what, value)
        return value

    def number(self, data: Mapping[str, Any], path: str, key: str) -> float:
        value = self.get(data, path, key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(self._value(data, path, key, ok, "a number"))

    def integer(self, data: Mapping[str, Any], path: str, key: str) -> int:
        value = self.get(data, path, key)
        ok = isinstance(value, int) and not isinstance(value, bool)
        return int(self._value(data, path, key, ok, "an integer"))

    def text(self, data: Mapping[str, Any], path: str, key: str) -> str:
        value = self.get(data, path, key)
        return str(self._value(data, path, key, isinstance(value, str), "a string"))

    def obj(self, data: Mapping[str, Any], path: str, key: str) -> dict[str, Any]:
        value = self.get(data, path, key)
        result: dict[str, Any] = self._value(data, path, key, isinstance(value, dict), "an object")
        return result

    def array(self, data: Mapping[str, Any], path: str, key: str) -> list[Any]:
        value = self.get(data, path, key)
        result: list[Any] = self._value(data, path, key, isinstance(value, list), "a list")
        return result


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def plan_from_json(text: str, source: str) -> Plan:
    """Parse a plan file; `InputError` names the JSON path of the first problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(source, "", "a JSON plan file", f"invalid JSON ({error})") from None
    read = _Reader(source)
    if not isinstance(data, dict):
        raise read.fail("", "a JSON object", data)
    schema = read.text(data, "", "schema")
    if schema != SCHEMA:
        raise InputError(source, "schema", f"'{SCHEMA}' (this alpa-plan reads it)", repr(schema))
    planner = read.obj(data, "", "planner")
    model = read.obj(data, "", "model")
    cluster = read.obj(data, "", "cluster")
    gpu = read.obj(cluster, "cluster", "gpu")
    settings = read.obj(data, "", "settings")
    estimate = read.obj(data, "", "estimate")
    layers = read.array(data, "", "layers")
    stages = read.array(data, "", "stages")
    transfers = read.array(data, "", "transfers")
    return Plan(
        schema=schema,
        planner=PlannerInfo(
            version=read.text(planner, "planner", "version"),
            options=frozen_map(read.obj(planner, "planner", "options")),  # type: ignore[arg-type]
        ),
        model=ModelInfo(
            name=read.text(model, "model", "name"),
            fingerprint=read.text(model, "model", "fingerprint"),
            parameters=read.integer(model, "model", "parameters"),
            flops_per_sample=read.number(model, "model", "flops_per_sample"),
        ),
        cluster=ClusterInfo(
            name=read.text(cluster, "cluster", "name"),
            hosts=read.integer(cluster, "cluster", "hosts"),
            gpus_per_host=read.integer(cluster, "cluster", "gpus_per_host"),
            gpu=GpuInfo(
                name=read.text(gpu, "cluster.gpu", "name"),
                memory_bytes=read.integer(gpu, "cluster.gpu", "memory_bytes"),
                peak_flops=frozen_map(read.obj(gpu, "cluster.gpu", "peak_flops")),  # type: ignore[arg-type]
                memory_bandwidth_bytes_per_s=read.number(
                    gpu, "cluster.gpu", "memory_bandwidth_bytes_per_s"
                ),
            ),
        ),
        settings=Settings(
            mode=read.text(settings, "settings", "mode"),
            batch_size=read.integer(settings, "settings", "batch_size"),
            microbatches=read.integer(settings, "settings", "microbatches"),
            schedule=read.text(settings, "settings", "schedule"),
            dtype=read.text(settings, "settings", "dtype"),
            optimizer=read.text(settings, "settings", "optimizer"),
        ),
        layers=tuple(_read_layer(read, layer, f"layers[{i}]") for i, layer in enumerate(layers)),
        stages=tuple(_read_stage(read, stage, f"stages[{i}]") for i, stage in enumerate(stages)),
        transfers=tuple(
            _read_transfer(read, transfer, f"transfers[{i}]")
            for i, transfer in enumerate(transfers)
        ),
        estimate=Estimate(
            iteration_time_s=read.number(estimate, "estimate", "iteration_time_s"),
            samples_per_s=read.number(estimate, "estimate", "samples_per_s"),
            tflops_per_gpu=read.number(estimate, "estimate", "tflops_per_gpu"),
            peak_memory_bytes=read.integer(estimate, "estimate", "peak_memory_bytes"),
        ),
        search=frozen_map(data.get("search", {})),  # type: ignore[arg-type]
    )


def _read_layer(read: _Reader, layer: Any, path: str) -> Layer:
    if not isinstance(layer, dict):
        raise read.fail(path, "an object", layer)
    return Layer(
        name=read.text(layer, path, "name"),
        ops=tuple(_strings(read, layer, path, "ops")),
        flops=read.number(layer, path, "flops"),
        parameter_bytes=read.integer(layer, path, "parameter_bytes"),
    )


def _read_stage(read: _Reader, stage: Any, path: str) -> Stage:
    if not isinstance(stage, dict):
        raise read.fail(path, "an object", stage)
    devices = read.array(stage, path, "devices")
    pairs = []
    for i, device in enumerate(devices):
        if (
            not isinstance(device, list)
            or len(device) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in device)
        ):
            raise read.fail(f"{path}.devices[{i}]", "[host, gpu]", device)
        pairs.append((device[0], device[1]))
    mesh = read.array(stage, path, "logical_mesh")
    if len(mesh) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in mesh):
        raise read.fail(f"{path}.logical_mesh", "[n0, n1]", mesh)
    time = read.obj(stage, path, "time_s")
    memory = read.obj(stage, path, "memory_bytes")
    time_path, memory_path = f"{path}.time_s", f"{path}.memory_bytes"
    return Stage(
        index=read.integer(stage, path, "index"),
        layers=tuple(_strings(read, stage, path, "layers")),
        ops=tuple(_strings(read, stage, path, "ops")),
        devices=tuple(pairs),
        logical_mesh=(mesh[0], mesh[1]),
        strategies=frozen_map(_string_map(read, stage, path, "strategies")),  # type: ignore[arg-type]
        shardings=frozen_map(_string_map(read, stage, path, "shardings")),  # type: ignore[arg-type]
        time=StageTime(
            forward_s=read.number(time, time_path, "forward"),
            backward_s=read.number(time, time_path, "backward"),
            communication_s=read.number(time, time_path, "communication"),
            gradient_sync_s=read.number(time, time_path, "gradient_sync"),
            total_s=read.number(time, time_path, "total"),
        ),
        memory=StageMemory(
            parameters_bytes=read.integer(memory, memory_path, "parameters"),
            gradients_bytes=read.integer(memory, memory_path, "gradients"),
            optimizer_bytes=read.integer(memory, memory_path, "optimizer"),
            activations_bytes=read.integer(memory, memory_path, "activations"),
            peak_bytes=read.integer(memory, memory_path, "peak"),
        ),
    )


def _read_transfer(read: _Reader, transfer: Any, path: str) -> Transfer:
    if not isinstance(transfer, dict):
        raise read.fail(path, "an object", transfer)
    return Transfer(
        tensor=read.text(transfer, path, "tensor"),
        source_stage=read.integer(transfer, path, "source_stage"),
        destination_stage=read.integer(transfer, path, "destination_stage"),
        source_spec=read.text(transfer, path, "source_spec"),
        destination_spec=read.text(transfer, path, "destination_spec"),
        size_bytes=read.integer(transfer, path, "size_bytes"),
        time_s=read.number(transfer, path, "time_s"),
    )


def _strings(read: _Reader, data: Mapping[str, Any], path: str, key: str) -> list[str]:
    values = read.array(data, path, key)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise read.fail(f"{_join(path, key)}[{i}]", "a string", value)
    return values


def _string_map(read: _Reader, data: Mapping[str, Any], path: str, key: str) -> dict[str, str]:
    values = read.obj(data, path, key)
    for name, value in values.items():
        if not isinstance(value, str):
            raise read.fail(f"{_join(path, key)}.{name}", "a string", value)
    return values


def read_plan(path: str | Path) -> Plan:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "", "a plan file", "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(source, "", "a readable UTF-8 plan file", str(error)) from None
    return plan_from_json(text, source)
