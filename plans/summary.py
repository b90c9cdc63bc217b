"""What `alpa-plan show` reports, as plain values: utilisation, the op listing, the summary.

Pure functions of a plan; the terminal rendering lives in `cli/render.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from plans.io import json_ready
from plans.plan import Plan, Stage


@dataclass(frozen=True)
class OpRow:
    stage: int
    layer: str  # "" when the plan has no layers
    op: str
    strategy: str  # "" when the plan records none for the op


@dataclass(frozen=True)
class TensorRow:
    stage: int
    tensor: str
    spec: str


def model_flops_utilisation(plan: Plan) -> float | None:
    """Achieved FLOP/s per GPU over the GPU's peak in the plan's dtype (MFU); None when the
    plan records no peak for that dtype."""
    peak_flops = plan.cluster.gpu.peak_flops.get(plan.settings.dtype)
    if not peak_flops:
        return None
    return plan.estimate.tflops_per_gpu * 1e12 / peak_flops


def hosts_of(stage: Stage) -> tuple[int, ...]:
    return tuple(sorted({host for host, _ in stage.devices}))


def matches(pattern: str, name: str, layer: str = "") -> bool:
    """Does a glob match NAME or LAYER/NAME? The layer part may name the layer's last dotted
    components: 'h.3/*' matches every op of layer 'transformer.h.3' (not of 'transformer.h.13')."""
    if fnmatchcase(name, pattern):
        return True
    if not layer:
        return False
    qualified = f"{layer}/{name}"
    return fnmatchcase(qualified, pattern) or fnmatchcase(qualified, f"*.{pattern}")


def op_rows(plan: Plan, pattern: str = "*") -> tuple[OpRow, ...]:
    """Every op whose name (or layer/name) matches `pattern`, in stage order."""
    layer_of = {op: layer.name for layer in plan.layers for op in layer.ops}
    return tuple(
        OpRow(stage.index, layer_of.get(op, ""), op, stage.strategies.get(op, ""))
        for stage in plan.stages
        for op in stage.ops
        if matches(pattern, op, layer_of.get(op, ""))
    )


def tensor_rows(plan: Plan, pattern: str = "*") -> tuple[TensorRow, ...]:
    """Every tensor spec whose tensor name matches `pattern`, in stage order."""
    return tuple(
        TensorRow(stage.index, tensor, spec)
        for stage in plan.stages
        for tensor, spec in stage.shardings.items()
        if matches(pattern, tensor)
    )


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The compact machine summary of `show --json` (floats rounded as in plan files)."""
    estimate = plan.estimate
    result: dict[str, Any] = json_ready(
        {
            "model": plan.model.name,
            "parameters": plan.model.parameters,
            "cluster": plan.cluster.name,
            "hosts": plan.cluster.hosts,
            "gpus_per_host": plan.cluster.gpus_per_host,
            "gpu": plan.cluster.gpu.name,
            "gpu_memory_bytes": plan.cluster.gpu.memory_bytes,
            "mode": plan.settings.mode,
            "dtype": plan.settings.dtype,
            "batch_size": plan.settings.batch_size,
            "microbatches": plan.settings.microbatches,
            "schedule": plan.settings.schedule,
            "warmup_extra": plan.settings.warmup_extra,
            "virtual_stages": plan.settings.virtual_stages,
            "iteration_time_s": estimate.iteration_time_s,
            "samples_per_s": estimate.samples_per_s,
            "tflops_per_gpu": estimate.tflops_per_gpu,
            "mfu": model_flops_utilisation(plan),
            "peak_memory_bytes": estimate.peak_memory_bytes,
            "stages": [_stage_summary(stage) for stage in plan.stages],
            "transfers": len(plan.transfers),
            "transfer_bytes": sum(t.size_bytes for t in plan.transfers),
        }
    )
    return result


def _stage_summary(stage: Stage) -> dict[str, Any]:
    return {
        "index": stage.index,
        "layers": len(stage.layers),
        "ops": len(stage.ops),
        "devices": len(stage.devices),
        "hosts": hosts_of(stage),
        "logical_mesh": stage.logical_mesh,
        "recompute": stage.recompute,
        "forward_s": stage.time.forward_s,
        "backward_s": stage.time.backward_s,
        "communication_s": stage.time.communication_s,
        "gradient_sync_s": stage.time.gradient_sync_s,
        "optimizer_step_s": stage.time.optimizer_step_s,
        "peak_memory_bytes": stage.memory.peak_bytes,
    }
