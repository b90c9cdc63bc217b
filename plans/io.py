"""Plan <-> JSON, and the atomic write.

The text is deterministic: keys sorted, floats rounded to `FLOAT_DIGITS` significant digits,
lists in the plan's own order, no timestamps. Equal plans give byte-identical files.

Plans are written in the current format ("alpa-plan/2"). Plans of "alpa-plan/1" are read and
converted: a strategy name's ZeRO suffix (" zero2", " zero3") becomes the per-parameter `zero`
record of its stage (which needs the parameters each op reads: `op_parameters`, from the
model; without it the modes are dropped and the plan's search report warns so), the
once-per-iteration time stays in `gradient_sync` (version 1 did not separate the optimizer
step), and the free-form `search` section becomes a typed report of what it recognises.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from itertools import accumulate
from pathlib import Path
from typing import Any

from plans import limits
from plans.errors import InputError
from plans.plan import (
    RECOMPUTE_NONE,
    SCHEMA,
    ClusterInfo,
    CountRecord,
    Estimate,
    GpuInfo,
    JsonValue,
    Layer,
    MeshRecord,
    ModelInfo,
    Plan,
    PlannerInfo,
    SearchReport,
    Settings,
    Stage,
    StageMemory,
    StageTime,
    Transfer,
    ZeroStage,
    frozen_map,
)
from plans.schedules import schedule_problem
from plans.schema import check_version, validate

_V1 = "alpa-plan/1"

FLOAT_DIGITS = 6


def _round(value: float) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{FLOAT_DIGITS}g}")


def json_ready(value: Any) -> Any:
    """Mappings, tuples and floats as JSON-ready dicts, lists and rounded floats."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [json_ready(item) for item in value]
    if isinstance(value, float):
        return _round(value)
    return value


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    result: dict[str, Any] = json_ready(
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
                "warmup_extra": plan.settings.warmup_extra,
                "virtual_stages": plan.settings.virtual_stages,
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
            "search": search_to_dict(plan.search),
        }
    )
    return result


def search_to_dict(report: SearchReport) -> dict[str, Any]:
    """The report's fields that are set: `algorithm` and `warnings` always, the rest when they
    say something."""
    fields: dict[str, Any] = {
        "algorithm": report.algorithm,
        "layers": report.layers,
        "submeshes": report.submeshes,
        "microbatches": [_set_fields(vars(record)) for record in report.microbatches],
        "meshes": [_set_fields(vars(record)) for record in report.meshes],
        "layer_ilps": report.layer_ilps,
        "layer_ilps_at_time_limit": report.layer_ilps_at_time_limit,
        "stages_solved_whole": report.stages_solved_whole,
        "replicated_fallback": report.replicated_fallback,
        "parameters": report.parameters,
    }
    return {**_set_fields(fields), "warnings": report.warnings}


def _set_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None and value != ()
            and value != [] and value != {}}  # fmt: skip


def _stage_to_dict(stage: Stage) -> dict[str, Any]:
    return {
        "index": stage.index,
        "layers": stage.layers,
        "ops": stage.ops,
        "devices": stage.devices,
        "logical_mesh": stage.logical_mesh,
        "strategies": stage.strategies,
        "shardings": stage.shardings,
        "zero": {name: str(mode) for name, mode in stage.zero.items()},
        "recompute": stage.recompute,
        **({"recomputed_ops": stage.recomputed_ops} if stage.recomputed_ops else {}),
        "time_s": {
            "forward": stage.time.forward_s,
            "backward": stage.time.backward_s,
            "communication": stage.time.communication_s,
            "gradient_sync": stage.time.gradient_sync_s,
            "optimizer_step": stage.time.optimizer_step_s,
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
    the old file or the new one, never half of one. Any failure (a missing or read-only folder,
    a full disk, a directory at `path`) is an `InputError` naming `path`, and leaves no
    temporary file behind."""
    write_bytes_atomically(text.encode("utf-8"), path)


def write_bytes_atomically(data: bytes, path: str | Path) -> None:
    """`write_text_atomically` for bytes (an annotated ONNX model)."""
    target = Path(path)
    check_output_path(target)
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as error:
        raise _write_error(target, error) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _new_file_mode())  # mkstemp makes it 0600; give it the usual mode
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(target, error) from None
        raise


def check_output_path(path: str | Path) -> None:
    """`InputError` naming `path` unless a file can be written there: its folder exists and is
    writable, and `path` is not a directory. Commands call it before long work, so a typo in
    `-o` is reported at once; `write_text_atomically` checks again."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise InputError(str(path), "", "a file path to write", "a directory")
    if not folder.is_dir():
        found = f"no folder {str(folder)!r}" if not folder.exists() else f"{str(folder)!r}, a file"
        raise InputError(str(path), "", "a path in an existing folder", found)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            str(path), "", "a path in a writable folder", f"{str(folder)!r}, not writable"
        )


def _write_error(target: Path, error: OSError) -> InputError:
    return InputError(
        str(target), "", "a file that can be written", error.strerror or type(error).__name__
    )


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_plan(plan: Plan, path: str | Path) -> None:
    write_text_atomically(plan_to_json(plan), path)


# --- reading ---------------------------------------------------------------------------------


def plan_from_json(
    text: str, source: str, op_parameters: Mapping[str, tuple[str, ...]] | None = None
) -> Plan:
    """Parse a plan file; `InputError` names the JSON path of the first problem.
    `op_parameters` (op -> the parameters it reads) converts the ZeRO modes of a version-1
    plan (module docstring)."""
    return plan_from_document(parse_json(text, source), source, op_parameters)


def parse_json(text: str, source: str) -> Any:
    """The JSON document in `text`, refused before parsing when it is larger than
    `limits.MAX_PLAN_BYTES` or nests deeper than `limits.MAX_JSON_DEPTH`; NaN, Infinity and
    integers outside 64 bits are refused too (no plan holds them, and they break arithmetic)."""
    if len(text) > limits.MAX_PLAN_BYTES:  # characters: at most the bytes of UTF-8
        raise InputError(
            source, "", f"a plan file of at most {limits.MAX_PLAN_BYTES} bytes", "a larger file"
        )
    depth = json_depth(text)
    if depth > limits.MAX_JSON_DEPTH:
        raise InputError(
            source,
            "",
            f"JSON nested at most {limits.MAX_JSON_DEPTH} deep",
            f"{depth} levels" if depth < 10 * limits.MAX_JSON_DEPTH else "deeper nesting",
        )
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_int64
        )
    except InputError as error:
        raise InputError(source, "", error.expected, error.found) from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise InputError(source, "", "a JSON plan file", f"invalid JSON ({error})") from None


# A JSON string, or an unterminated one running to the end: always matches from an opening
# quote, so stripping strings is one linear pass whatever the text.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_TOO_DEEP_RUN = re.compile("[\\[{]{" + str(limits.MAX_JSON_DEPTH + 1) + ",}")


def json_depth(text: str) -> int:
    """How deep the objects and lists of JSON `text` nest, counted without parsing (and
    without recursion): brackets outside strings. Linear in the text."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    run = _TOO_DEEP_RUN.search(brackets)
    if run is not None:  # the usual hostile shape, found without counting
        return len(run.group())
    return max(0, max(accumulate(map(_BRACKET_STEP.__getitem__, brackets))))


def _refuse_constant(name: str) -> Any:
    raise InputError("", "", "finite numbers", name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError("", "", "finite numbers", text if len(text) <= 40 else text[:37] + "...")
    return value


def _int64(text: str) -> int:
    shown = text if len(text) <= 40 else text[:37] + "..."
    if len(text) > 20:
        raise InputError("", "", "integers of at most 64 bits", shown)
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise InputError("", "", "integers of at most 64 bits", shown)
    return value


def plan_from_document(
    document: Any, source: str, op_parameters: Mapping[str, tuple[str, ...]] | None = None
) -> Plan:
    """The plan in a parsed JSON document, once it passes the published schema of its format
    version (a version-1 plan is converted, module docstring)."""
    version = check_version(document, source)
    validate(document, source, version)
    planner, model, cluster = document["planner"], document["model"], document["cluster"]
    settings, estimate = document["settings"], document["estimate"]
    _check_counts(document, source)
    if version == _V1:
        stages, dropped = _stages_of_v1(document["stages"], op_parameters)
        search = _search_of_v1(document.get("search", {}), dropped)
    else:
        stages = tuple(_stage(stage) for stage in document["stages"])
        search = _search(document["search"])
    problem = schedule_problem(
        settings["schedule"], len(stages), settings["microbatches"],
        settings.get("warmup_extra", 0), settings.get("virtual_stages", 1),
    )  # fmt: skip
    if problem is not None:
        raise InputError(source, f"settings.{problem.field}", problem.expected, problem.found)
    return Plan(
        schema=SCHEMA,
        read_from=version,
        planner=PlannerInfo(version=planner["version"], options=frozen_map(planner["options"])),  # type: ignore[arg-type]
        model=ModelInfo(**model),
        cluster=ClusterInfo(
            name=cluster["name"],
            hosts=cluster["hosts"],
            gpus_per_host=cluster["gpus_per_host"],
            gpu=GpuInfo(
                **{**cluster["gpu"], "peak_flops": frozen_map(cluster["gpu"]["peak_flops"])}
            ),
        ),
        settings=Settings(**settings),
        layers=tuple(_layer(layer) for layer in document["layers"]),
        stages=stages,
        transfers=tuple(Transfer(**transfer) for transfer in document["transfers"]),
        estimate=Estimate(**estimate),
        search=search,
    )


def _check_counts(document: dict[str, Any], source: str) -> None:
    """The counts of a schema-valid plan within `plans.limits`, before anything (the
    timeline of `show`, the executor's schedule) is built from them."""
    settings, cluster = document["settings"], document["cluster"]
    bounds = (
        ("settings.batch_size", settings["batch_size"], limits.MAX_BATCH_SIZE),
        ("settings.microbatches", settings["microbatches"], limits.MAX_MICROBATCHES),
        ("settings.warmup_extra", settings.get("warmup_extra", 0), limits.MAX_MICROBATCHES),
        ("cluster.hosts", cluster["hosts"], limits.MAX_HOSTS),
        ("cluster.gpus_per_host", cluster["gpus_per_host"], limits.MAX_GPUS_PER_HOST),
    )
    for field, value, limit in bounds:
        if value > limit:
            raise InputError(source, field, *limits.too_many(limit, value))
    blocks = len(document["stages"]) * settings["microbatches"]
    if blocks > limits.MAX_SCHEDULE_BLOCKS:
        raise InputError(
            source,
            "settings.microbatches",
            f"at most {limits.MAX_SCHEDULE_BLOCKS} stage-microbatch blocks "
            f"({len(document['stages'])} stages)",
            str(settings["microbatches"]),
        )


def _layer(layer: dict[str, Any]) -> Layer:
    return Layer(**{**layer, "ops": tuple(layer["ops"])})


def _stage(stage: dict[str, Any]) -> Stage:
    time, memory = stage["time_s"], stage["memory_bytes"]
    return Stage(
        index=stage["index"],
        layers=tuple(stage["layers"]),
        ops=tuple(stage["ops"]),
        devices=tuple((host, gpu) for host, gpu in stage["devices"]),
        logical_mesh=(stage["logical_mesh"][0], stage["logical_mesh"][1]),
        strategies=frozen_map(stage["strategies"]),  # type: ignore[arg-type]
        shardings=frozen_map(stage["shardings"]),  # type: ignore[arg-type]
        zero=frozen_map({name: ZeroStage(mode) for name, mode in stage["zero"].items()}),  # type: ignore[arg-type]
        recompute=stage.get("recompute", RECOMPUTE_NONE),
        recomputed_ops=tuple(stage.get("recomputed_ops", ())),
        time=StageTime(
            forward_s=time["forward"],
            backward_s=time["backward"],
            communication_s=time["communication"],
            gradient_sync_s=time["gradient_sync"],
            optimizer_step_s=time["optimizer_step"],
            total_s=time["total"],
        ),
        memory=StageMemory(
            parameters_bytes=memory["parameters"],
            gradients_bytes=memory["gradients"],
            optimizer_bytes=memory["optimizer"],
            activations_bytes=memory["activations"],
            peak_bytes=memory["peak"],
        ),
    )


def _search(search: dict[str, Any]) -> SearchReport:
    return SearchReport(
        algorithm=search["algorithm"],
        layers=search.get("layers"),
        submeshes=tuple((a, b) for a, b in search.get("submeshes", ())),
        microbatches=tuple(CountRecord(**record) for record in search.get("microbatches", ())),
        meshes=tuple(
            MeshRecord(**{**record, "logical_mesh": tuple(record["logical_mesh"])})
            for record in search.get("meshes", ())
        ),
        layer_ilps=search.get("layer_ilps"),
        layer_ilps_at_time_limit=search.get("layer_ilps_at_time_limit"),
        stages_solved_whole=tuple(search.get("stages_solved_whole", ())),
        replicated_fallback=tuple(search.get("replicated_fallback", ())),
        parameters=frozen_map(_frozen_json(search.get("parameters", {}))),  # type: ignore[arg-type]
        warnings=tuple(search["warnings"]),
    )


def _frozen_json(value: Any) -> Any:
    """Parsed JSON as the plan's values: lists as tuples, objects as read-only maps."""
    if isinstance(value, dict):
        return frozen_map({key: _frozen_json(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen_json(item) for item in value)
    return value


# --- alpa-plan/1 -----------------------------------------------------------------------------

_V1_ZERO_SUFFIXES = {" zero2": ZeroStage.ZERO2, " zero3": ZeroStage.ZERO3}


def _stages_of_v1(
    stages: list[dict[str, Any]], op_parameters: Mapping[str, tuple[str, ...]] | None
) -> tuple[tuple[Stage, ...], int]:
    """Version-1 stages in the current form, and how many ops' ZeRO modes could not be given
    to parameters (no `op_parameters`)."""
    converted = []
    dropped = 0
    for stage in stages:
        strategies: dict[str, str] = {}
        modes: dict[str, ZeroStage] = {}
        for op, name in stage["strategies"].items():
            mode = ZeroStage.NONE
            for suffix, stage_mode in _V1_ZERO_SUFFIXES.items():
                if name.endswith(suffix):
                    name, mode = name[: -len(suffix)], stage_mode
            strategies[op] = name
            modes[op] = mode
        zero: dict[str, ZeroStage] = {}
        if op_parameters is None:
            dropped += sum(mode is not ZeroStage.NONE for mode in modes.values())
        else:
            for op in stage["ops"]:  # the first op reading a parameter owns it
                for parameter in op_parameters.get(op, ()):
                    zero.setdefault(parameter, modes.get(op, ZeroStage.NONE))
        time = stage["time_s"]
        current = {
            **stage,
            "strategies": strategies,
            "zero": zero,
            "time_s": {**time, "optimizer_step": 0.0},
        }
        converted.append(_stage(current))
    return tuple(converted), dropped


def _search_of_v1(search: dict[str, Any], dropped_zero_ops: int) -> SearchReport:
    """What a version-1 `search` section says that the typed report knows."""
    records = tuple(
        CountRecord(**{k: v for k, v in record.items() if k in CountRecord.__dataclass_fields__})
        for record in search.get("microbatches", ())
        if isinstance(record, dict) and "microbatches" in record and "status" in record
    )
    meshes = tuple(
        MeshRecord(
            **{
                **{k: v for k, v in record.items() if k in MeshRecord.__dataclass_fields__},
                "logical_mesh": tuple(record["logical_mesh"]),
            }
        )
        for record in search.get("meshes", ())
        if isinstance(record, dict) and "logical_mesh" in record and "status" in record
    )
    warnings: tuple[str, ...] = ()
    if dropped_zero_ops:
        warnings = (
            f"read from {_V1} without the model: the ZeRO modes of {dropped_zero_ops} ops' "
            "strategies are not assigned to parameters",
        )
    parameters: JsonValue = search.get("parameters", {})
    return SearchReport(
        algorithm=str(search.get("algorithm", "unknown")),
        layers=search.get("layers"),
        submeshes=tuple((a, b) for a, b in search.get("submeshes", ())),
        microbatches=records,
        meshes=meshes,
        layer_ilps=search.get("layer_ilps"),
        layer_ilps_at_time_limit=search.get("layer_ilps_at_time_limit"),
        stages_solved_whole=tuple(search.get("stages_solved_whole", ())),
        replicated_fallback=tuple(search.get("replicated_fallback", ())),
        parameters=frozen_map(_frozen_json(parameters if isinstance(parameters, dict) else {})),  # type: ignore[arg-type]
        warnings=warnings,
    )


def read_text(path: str | Path, what: str = "plan file") -> str:
    """The UTF-8 text of a file the user named; `InputError` when it cannot be read or is
    larger than `limits.MAX_PLAN_BYTES` (refused without reading the rest)."""
    source = str(path)
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(limits.MAX_PLAN_BYTES + 1)
        if len(data) > limits.MAX_PLAN_BYTES:
            raise InputError(
                source, "", f"a {what} of at most {limits.MAX_PLAN_BYTES} bytes", "a larger file"
            )
        return data.decode("utf-8")
    except FileNotFoundError:
        raise InputError(source, "", f"a {what}", "no such file") from None
    except IsADirectoryError:
        raise InputError(source, "", f"a {what}", "a directory") from None
    except UnicodeDecodeError as error:
        raise InputError(
            source, "", f"a UTF-8 {what}", f"a non-UTF-8 byte at offset {error.start}"
        ) from None
    except OSError as error:
        raise InputError(
            source, "", f"a readable {what}", error.strerror or type(error).__name__
        ) from None


def read_plan(path: str | Path, op_parameters: Mapping[str, tuple[str, ...]] | None = None) -> Plan:
    """The plan in a file (`plan_from_json`)."""
    return plan_from_json(read_text(path), str(path), op_parameters)
