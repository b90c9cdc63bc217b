"""`alpa-plan run`: apply a plan to a model and report what happened.

`run(request, facts)` reads the plan, the model and the inputs, starts `jax.distributed` when
the job has several processes, runs `steps` inference passes or training iterations, and returns
a `RunReport` (losses, step times, collectives per stage, peak memory where the backend tells,
and the largest relative difference from onnxruntime when asked). Only process 0 writes
`--outputs`: for inference the graph outputs by name (of the last step), for training `loss`,
the loss of every step.

A model with float64 inputs or weights runs with jax's 64-bit types on (`jax_enable_x64`, for
the rest of the process), so it computes in float64 as onnxruntime does.

Inputs (`--inputs IN.npz`): one array per graph input, by name, of the plan's global batch;
`labels` for the cross-entropy loss. Without a file, inputs are seeded random data of the right
shapes and dtypes (token ids below the embedding's size), and labels random class ids.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from executor import distributed
from executor.onnx_model import load_model, op_parameters
from executor.reference import max_relative_error, reference_outputs
from executor.replicas import GradientSync
from executor.runtime import PlanRuntime, RuntimeOptions, StageCollectives, timed
from executor.stages import ModelFacts
from executor.train import LOSSES
from plans.errors import InputError
from plans.io import read_plan

MODES = ("train", "infer")


@dataclass(frozen=True)
class RunRequest:
    plan_path: str
    model_path: str
    mode: str | None = None  # None: the plan's mode
    steps: int = 1
    seed: int = 0
    loss: str = "mean"
    learning_rate: float = 1e-3
    precision: str = "plan"  # compute in the plan's dtype, or "model": the model's own
    inputs_path: str | None = None
    outputs_path: str | None = None
    dims: Mapping[str, int] = field(default_factory=dict)
    check: bool = False  # compare inference outputs with onnxruntime
    cluster: distributed.Cluster = field(default_factory=distributed.Cluster)


@dataclass(frozen=True)
class RunReport:
    mode: str
    stages: int
    devices: int
    platform: str
    processes: int
    losses: tuple[float, ...]  # training: per step
    step_times_s: tuple[float, ...]  # wall time of each step, the first includes compilation
    collectives: tuple[StageCollectives, ...]
    gradient_sync: tuple[GradientSync, ...]  # training: how each stage sums its gradients
    peak_memory_bytes: int | None  # the largest over the plan's devices; None on a CPU
    estimated_iteration_s: float
    estimated_peak_memory_bytes: int
    reference_error: float | None  # max relative difference from onnxruntime (--check)
    outputs_written: str | None

    @property
    def steady_step_s(self) -> float:
        """Median step time without the first (compiling) step."""
        later = self.step_times_s[1:] or self.step_times_s
        return statistics.median(later)


def run(
    request: RunRequest,
    facts: ModelFacts | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RunReport:
    if request.loss not in LOSSES:
        raise InputError("--loss", "", f"one of {', '.join(LOSSES)}", repr(request.loss))
    distributed.start(distributed.from_environment(request.cluster))  # before any jax work
    processes = jax.process_count()
    model = load_model(request.model_path)
    if model.uses_float64:  # compute float64 as onnxruntime does, not in float32
        jax.config.update("jax_enable_x64", True)
    plan = read_plan(request.plan_path, op_parameters(model))
    mode = request.mode or plan.settings.mode
    if mode not in MODES:
        raise InputError("--mode", "", f"one of {', '.join(MODES)}", repr(mode))
    runtime = PlanRuntime(
        plan,
        model,
        RuntimeOptions(
            mode=mode,
            seed=request.seed,
            loss=request.loss,
            learning_rate=request.learning_rate,
            precision=request.precision,
            dims=dict(request.dims),
        ),
        facts=facts,
        plan_source=request.plan_path,
    )
    progress(f"bound {len(runtime.programs)} stage(s) to {_device_count(runtime)} device(s)")
    inputs, labels = _inputs(runtime, request)
    collectives = runtime.collectives()
    losses: list[float] = []
    times: list[float] = []
    outputs: dict[str, np.ndarray] = {}
    for step in range(request.steps):
        if mode == "train":
            loss, seconds = timed(lambda: runtime.train_step(inputs, labels))
            losses.append(float(loss))
            progress(f"step {step + 1}/{request.steps}: loss {loss:.6g} in {seconds:.3g} s")
        else:
            outputs, seconds = timed(lambda: runtime.infer(inputs))
            progress(f"step {step + 1}/{request.steps}: inference in {seconds:.3g} s")
        times.append(seconds)
    error = None
    if request.check and mode == "infer":
        expected = reference_outputs(model, runtime.weights, inputs)
        error = max(max_relative_error(outputs[name], expected[name]) for name in expected)
    written = None
    if request.outputs_path and jax.process_index() == 0:
        if mode == "train":
            np.savez(request.outputs_path, loss=np.asarray(losses, np.float64))
        else:
            np.savez(request.outputs_path, **outputs)
        written = request.outputs_path
    return RunReport(
        mode=mode,
        stages=len(runtime.programs),
        devices=_device_count(runtime),
        platform=jax.devices()[0].platform,
        processes=processes,
        losses=tuple(losses),
        step_times_s=tuple(times),
        collectives=collectives,
        gradient_sync=runtime.gradient_sync() if mode == "train" else (),
        peak_memory_bytes=_peak_memory(runtime),
        estimated_iteration_s=plan.estimate.iteration_time_s,
        estimated_peak_memory_bytes=plan.estimate.peak_memory_bytes,
        reference_error=error,
        outputs_written=written,
    )


def _device_count(runtime: PlanRuntime) -> int:
    # Distinct devices: interleaved stages share their group's.
    return len({device for program in runtime.programs for device in program.devices})


def _inputs(
    runtime: PlanRuntime, request: RunRequest
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if request.inputs_path is None:
        inputs = runtime.random_inputs(request.seed)
        labels = None
    else:
        loaded = _load_npz(runtime, request.inputs_path)
        labels = loaded.pop("labels", None)
        inputs = loaded
    shape = runtime.loss_output_shape() if request.loss == "cross-entropy" else ()
    batch_shape = (runtime.plan.settings.batch_size, *shape[1:-1])
    if request.loss == "cross-entropy" and labels is None:
        rng = np.random.default_rng(request.seed + 1)
        labels = rng.integers(0, shape[-1], batch_shape).astype(np.int32)
    elif request.loss == "cross-entropy" and labels is not None:
        labels = _checked_labels(labels, batch_shape, shape[-1])
    return inputs, labels


# An array's .npy header and padding, beyond its data; the widest element (complex128).
_NPY_HEADER_BYTES = 4096
_MAX_ITEM_BYTES = 16


def _load_npz(runtime: PlanRuntime, path_text: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz of inputs, each refused unread when it holds more bytes than the
    input it stands for (a zip bomb or a wrong batch); never a pickle."""
    path = Path(path_text)
    if not path.is_file():
        raise InputError(path_text, "", "an .npz file of inputs", "no such file")
    wanted = {value.name: value for value in runtime.model.inputs}
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise InputError(path_text, "", "an .npz file of inputs", "a single array (.npy)")
        with stored:
            members = stored.zip.infolist() if stored.zip is not None else []
            sizes = {info.filename.removesuffix(".npy"): info.file_size for info in members}
            loaded = {}
            for name in stored.files:
                if name == "labels":
                    shape = (runtime.plan.settings.batch_size, *runtime.loss_output_shape()[1:-1])
                elif name in wanted:
                    shape = runtime.global_shape(name)
                else:
                    raise InputError(
                        path_text,
                        name,
                        f"only arrays named after graph inputs ({', '.join(sorted(wanted))}) "
                        "and labels",
                        "an extra array",
                    )
                if sizes.get(name, 0) > _MAX_ITEM_BYTES * math.prod(shape) + _NPY_HEADER_BYTES:
                    raise InputError(
                        path_text,
                        name,
                        f"an array of shape {list(shape)}",
                        f"{sizes[name]} bytes of data",
                    )
                loaded[name] = stored[name]
    except (OSError, ValueError, EOFError, KeyError) as error:  # a pickle, a broken zip
        if isinstance(error, InputError):
            raise
        raise InputError(path_text, "", "an .npz file of inputs", str(error)) from None
    except Exception as error:  # zipfile.BadZipFile and friends
        raise InputError(
            path_text, "", "an .npz file of inputs", f"{type(error).__name__}: {error}"
        ) from None
    return loaded


def _checked_labels(labels: np.ndarray, shape: tuple[int, ...], classes: int) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise InputError("--inputs", "labels", "integer class ids", f"dtype {labels.dtype}")
    if labels.shape != shape:
        raise InputError(
            "--inputs", "labels", f"an array of shape {list(shape)}", str(list(labels.shape))
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(
            "--inputs", "labels", f"class ids from 0 to {classes - 1}", "ids outside that range"
        )
    return labels.astype(np.int32)


def _peak_memory(runtime: PlanRuntime) -> int | None:
    peaks = []
    for mesh in runtime.meshes:
        for device in mesh.devices.flat:
            if device.process_index != jax.process_index():
                continue
            stats = device.memory_stats()
            if stats and "peak_bytes_in_use" in stats:
                peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None
