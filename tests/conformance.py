"""The onnx wheel's backend test data as a conformance suite (issue 13, part 5): shared by
`tests/test_onnx_conformance.py` (the fast part, in CI) and `benchmarks/onnx_conformance.py`
(the whole sweep and its table, `benchmarks/CONFORMANCE.md`).

The models: every one under `onnx/backend/test/data/{light,simple,pytorch-converted,
pytorch-operator}` of the installed onnx wheel: the 9 light CNNs of the model zoo (weights
stripped, no stored inputs) and 140 small graphs, most with `test_data_set_0/` (inputs and
the outputs onnx's reference backends give).

How a model is planned, as a user would: `alpa-plan MODEL CLUSTER --hosts 1 --mode M --dtype
float32 --jobs 1` in-process, on one host of 8 V100s (`examples/clusters/aws-p3.16xlarge.yaml`
with `--hosts 1`). The batch: these graphs have static shapes (all but one, which is refused for
its sequences before any binding), and a model exported with a fixed batch plans at that batch,
the leading dimension of its first data input (README, "Models"), so no `--batch-size` is
passed. A symbolic dimension would be bound from the stored input's shape (the batch from its
leading dimension), or to 2 without stored inputs. float32, the models' own dtype, so the
executor's numbers can match the stored ones; one job, because planning must not fork worker
processes in a process where jax's threads run.

How a planned model is executed: the executor (`executor.runtime.PlanRuntime`) binds the plan to
the model on 8 CPU virtual devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set
before jax starts), runs inference on the stored inputs (`input_<i>.pb`, the graph's data inputs
in order) and compares every output with `output_<i>.pb`: rtol 1e-3, atol 1e-5, NaN where the
stored output has NaN (a square root of a negative input). A model with float64 tensors runs
with jax's 64-bit types on, as `alpa-plan run` does (`executor/run.py`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from conftest import CLUSTERS
from onnx import numpy_helper

from cli.main import main

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
DIRECTORIES = ("light", "simple", "pytorch-converted", "pytorch-operator")
MODES = ("train", "infer")
CLUSTER = CLUSTERS / "aws-p3.16xlarge.yaml"
DEVICES = 8
RTOL, ATOL = 1e-3, 1e-5
# Without stored inputs, a symbolic dimension is bound to this.
DEFAULT_DIM = 2


@dataclass(frozen=True)
class Case:
    name: str  # the model's name in the onnx wheel: light_resnet50, test_Conv2d, ...
    directory: str  # light, simple, pytorch-converted or pytorch-operator
    model: Path
    data: Path | None  # test_data_set_0/, where the wheel stores inputs and outputs


def cases() -> list[Case]:
    """Every model of the four directories, in directory then name order."""
    found = []
    for directory in DIRECTORIES:
        folder = DATA / directory
        if directory == "light":
            for path in sorted(folder.glob("*.onnx")):
                found.append(Case(path.stem, directory, path, None))
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            data = path / "test_data_set_0"
            found.append(
                Case(path.name, directory, path / "model.onnx", data if data.is_dir() else None)
            )
    return found


@dataclass(frozen=True)
class Planned:
    mode: str
    exit_code: int
    stderr: str
    plan: Path | None  # the plan written, when exit code 0

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def reason(self) -> str:
        """The one error line without its `error: FILE: ` prefix."""
        lines = self.error_lines
        if not lines:
            return ""
        line = lines[-1].removeprefix("error: ")
        _, _, rest = line.partition(".onnx: ")
        return rest or line


def _read_tensor(path: Path) -> np.ndarray:
    proto = onnx.TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


def _numbered(folder: Path, prefix: str) -> list[Path]:
    files = folder.glob(f"{prefix}_*.pb")
    return sorted(files, key=lambda path: int(path.stem.split("_")[-1]))


def stored_inputs(case: Case) -> list[np.ndarray]:
    return [] if case.data is None else [_read_tensor(p) for p in _numbered(case.data, "input")]


def stored_outputs(case: Case) -> list[np.ndarray]:
    return [] if case.data is None else [_read_tensor(p) for p in _numbered(case.data, "output")]


def binding_flags(case: Case) -> list[str]:
    """`--batch-size` and `--dim` for the model's symbolic dimensions (module docstring)."""
    model = onnx.load(str(case.model), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    data_inputs = [value for value in model.graph.input if value.name not in weights]
    arrays = stored_inputs(case)
    bound: dict[str, int] = {}
    for index, value in enumerate(data_inputs):
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") or not dim.dim_param:
                continue
            stored = arrays[index].shape if index < len(arrays) else ()
            # An empty stored input (test_sequence_model8's) binds no size: a batch or a
            # dimension of 0 is bad input (`--batch-size 0`), refused before the model is read.
            size = stored[position] if position < len(stored) else 0
            bound.setdefault(dim.dim_param, size if size > 0 else DEFAULT_DIM)
    if not bound:
        return []
    first = data_inputs[0].type.tensor_type.shape.dim
    batch_symbol = first[0].dim_param if first and not first[0].HasField("dim_value") else None
    flags = []
    for symbol, value in bound.items():
        flags += (
            ["--batch-size", str(value)]
            if symbol == batch_symbol
            else ["--dim", f"{symbol}={value}"]
        )
    return flags


def plan(case: Case, mode: str, folder: Path) -> Planned:
    """Plan the model in `mode` with the CLI, in-process; the plan goes to `folder`."""
    target = folder / f"{case.name}.{mode}.plan.json"
    argv = [str(case.model), str(CLUSTER), "--hosts", "1", "--mode", mode, "--dtype", "float32"]
    argv += [*binding_flags(case), "--jobs", "1", "-o", str(target)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return Planned(mode, code, err.getvalue(), target if code == 0 and target.exists() else None)


@dataclass(frozen=True)
class Executed:
    matched: bool
    detail: str  # the first output that differs, or how many outputs matched


def execute(case: Case, plan_path: Path) -> Executed:
    """Run the plan's forward pass on the stored inputs with the executor and compare with the
    stored outputs. Needs jax with 8 devices: set XLA_FLAGS before jax is first imported."""
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={DEVICES}")
    import jax

    from executor.onnx_model import load_model
    from executor.runtime import PlanRuntime, RuntimeOptions
    from executor.stages import ModelFacts
    from planner.onnx_import import load_onnx
    from plans.io import read_plan

    the_plan = read_plan(plan_path)
    model = load_model(case.model)
    graph = load_onnx(case.model, batch_size=the_plan.settings.batch_size)
    facts = ModelFacts(
        graph.fingerprint,
        {op.name: op.outputs for op in graph.ops},
        frozenset(name for name in graph.inputs if graph.tensors[name].batch_dim is not None),
    )
    inputs = dict(zip((value.name for value in model.inputs), stored_inputs(case), strict=True))
    with jax.enable_x64(model.uses_float64):
        runtime = PlanRuntime(the_plan, model, RuntimeOptions(mode="infer"), facts=facts)
        actual = runtime.infer(inputs)
    expected = dict(zip(model.outputs, stored_outputs(case), strict=True))
    return compare(actual, expected)


def compare(actual: Mapping[str, Any], expected: Mapping[str, np.ndarray]) -> Executed:
    for name, want in expected.items():
        found = np.asarray(actual[name])
        if found.shape != want.shape:
            return Executed(
                False, f"output {name}: shape {list(found.shape)}, stored {list(want.shape)}"
            )
        if want.dtype.kind in "fc":
            close = np.isclose(found, want, rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            close = found == want
        if not np.all(close):
            difference = np.abs(found.astype(np.float64) - want.astype(np.float64))
            worst = float(np.nanmax(np.where(close, 0, difference)))
            return Executed(
                False, f"output {name}: {int(np.sum(~close))} elements differ, by up to {worst:.3g}"
            )
    return Executed(True, f"{len(expected)} output(s) match")
