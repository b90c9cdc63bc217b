"""The onnx wheel's backend test data as a conformance suite (issue 13, part 5).

Every model of `onnx/backend/test/data/{light,simple,pytorch-converted,pytorch-operator}` (149)
plans in train and in infer on one host of 8 GPUs, or is refused by `REFUSED`: exit code 2 and
one error line naming the file, the field and why. Every planned model with stored inputs runs
its forward pass under its inference plan and under its training plan on 8 CPU virtual devices
and gives the stored outputs (rtol 1e-3, atol 1e-5). How models are planned and run, and how the batch is chosen: `tests/conformance.py`.

The four large light CNNs (`SWEEP_ONLY`) take most of the sweep's time (about 30 s of planning on
two cores); they plan in `benchmarks/onnx_conformance.py`, whose table is
`benchmarks/CONFORMANCE.md`, or here with ALPA_PLAN_CONFORMANCE=all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import conformance
from conformance import Case, Planned

from cli import exit_codes

CASES = {case.name: case for case in conformance.cases()}

# Model -> what its one refusal line must say. Nothing else may be refused.
_SEQUENCES = "an op on sequence or optional values"
REFUSED: dict[str, str] = {
    # Expand to a shape that is a graph input: the output's shape is known only at run time.
    **{
        f"test_expand_shape_model{i}": "a shape that depends on data: Expand node"
        for i in range(1, 5)
    },
    # Tests of onnx's training ops (Gradient of ai.onnx.preview.training): not a forward graph.
    "test_gradient_of_add": "Gradient of domain 'ai.onnx.preview.training', an op of a training graph",
    "test_gradient_of_add_and_mul": "Gradient of domain 'ai.onnx.preview.training', an op of a training graph",
    # Sequence values (SequenceConstruct, SplitToSequence, ...).
    "test_sequence_model1": f"SequenceEmpty, {_SEQUENCES}",
    **{f"test_sequence_model{i}": f"SequenceConstruct, {_SEQUENCES}" for i in range(2, 6)},
    **{f"test_sequence_model{i}": f"SplitToSequence, {_SEQUENCES}" for i in range(6, 9)},
    # StringNormalizer on string tensors: text processing, no device work.
    **{
        name: "graph.input[x]: expected a numeric tensor, found a string tensor"
        for name in CASES
        if name.startswith("test_strnorm_model_")
    },
}
SWEEP_ONLY = {"light_densenet121", "light_inception_v2", "light_resnet50", "light_shufflenet"}
ALL = os.environ.get("ALPA_PLAN_CONFORMANCE") == "all"


class Plans:
    """Plans made so far, by (model, mode): the executor tests reuse the planning tests'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[tuple[str, str], Planned] = {}

    def get(self, case: Case, mode: str) -> Planned:
        key = (case.name, mode)
        if key not in self.made:
            self.made[key] = conformance.plan(case, mode, self.folder)
        return self.made[key]


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> Plans:
    return Plans(tmp_path_factory.mktemp("conformance"))


def _skip_if_sweep_only(name: str) -> None:
    if name in SWEEP_ONLY and not ALL:
        pytest.skip("planned by benchmarks/onnx_conformance.py (or ALPA_PLAN_CONFORMANCE=all)")


def test_the_suite_is_the_149_models_of_the_four_directories() -> None:
    by_directory = {
        d: sum(c.directory == d for c in CASES.values()) for d in conformance.DIRECTORIES
    }
    assert by_directory == {
        "light": 9,
        "simple": 23,
        "pytorch-converted": 82,
        "pytorch-operator": 35,
    }
    assert set(REFUSED) <= set(CASES) and set(CASES) >= SWEEP_ONLY
    assert len(REFUSED) == 20  # the list does not grow unnoticed


@pytest.mark.parametrize("mode", conformance.MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_model_plans_or_is_refused_with_one_line_naming_why(
    plans: Plans, name: str, mode: str
) -> None:
    _skip_if_sweep_only(name)
    case = CASES[name]
    result = plans.get(case, mode)
    if name in REFUSED:
        assert result.exit_code == exit_codes.BAD_INPUT, result.stderr
        assert result.plan is None
        (line,) = result.error_lines
        assert line.startswith(f"error: {case.model}: ")
        assert REFUSED[name] in line
        assert "Traceback" not in result.stderr
        return
    assert result.exit_code == exit_codes.OK, result.stderr
    assert result.plan is not None


EXECUTED = sorted(
    name for name, case in CASES.items() if case.data is not None and name not in REFUSED
)


def test_every_planned_model_with_stored_data_is_executed() -> None:
    # The light CNNs store no inputs; of the 140 small graphs, all but the refused have them.
    planned_with_data = {n for n, c in CASES.items() if c.directory != "light" and n not in REFUSED}
    assert set(EXECUTED) == planned_with_data and len(EXECUTED) == 120


@pytest.mark.parametrize("mode", conformance.MODES)
@pytest.mark.parametrize("name", EXECUTED)
def test_planned_model_runs_under_its_plan_and_gives_the_stored_outputs(
    plans: Plans, name: str, mode: str
) -> None:
    """The forward pass under the inference plan, and under the training plan's shardings."""
    pytest.importorskip("jax")
    case = CASES[name]
    result = plans.get(case, mode)
    assert result.plan is not None, result.stderr
    executed = conformance.execute(case, result.plan)
    assert executed.matched, executed.detail
