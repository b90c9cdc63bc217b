"""The published JSON Schema: real plans pass it, `jsonschema` agrees with our validator, and
the first problem is named by its JSON path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import MODELS
from plan_helpers import GPT_CLUSTER, document, gpt_plan, two_stages

from cli import exit_codes
from cli.main import main
from plans.errors import InputError
from plans.io import plan_from_json, plan_to_json
from plans.schema import load_schema, schema_path, validate

Document = dict[str, Any]


def _jsonschema_errors(data: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(load_schema())
    return [error.message for error in validator.iter_errors(data)]


@pytest.mark.parametrize("version", ["alpa-plan/1", "alpa-plan/2"])
def test_the_schemas_are_valid_draft_2020_12_schemas(version: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(schema_path(version).read_text()))


# gshard-moe-tiny's plan is checked against the schema by its golden case (test_golden_cases.py).
@pytest.mark.parametrize("model", ["mlp-tiny", "gpt-tiny", "wide-resnet-tiny"])
def test_plans_of_the_example_models_pass_the_schema(tmp_path: Path, model: str) -> None:
    out = tmp_path / "plan.json"
    args = [str(MODELS / f"{model}.onnx"), str(GPT_CLUSTER), "--batch-size", "64", "--hosts", "1"]
    assert main([*args, "-o", str(out)]) == exit_codes.OK
    text = out.read_text()
    assert _jsonschema_errors(json.loads(text)) == []
    validate(json.loads(text), "plan.json")
    assert plan_to_json(plan_from_json(text, "plan.json")) == text


def test_a_pipelined_plan_passes_the_schema() -> None:
    data = document(two_stages(gpt_plan()))
    assert _jsonschema_errors(data) == []
    validate(data, "plan.json")


def _set(path: str, value: object) -> Callable[[Document], None]:
    """A change to a document: set the value at a dotted path with [i] indices."""

    def change(data: Document) -> None:
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        target: Any = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


_DELETE = object()

BROKEN = [
    (_set("stages[0].devices[0]", 7), "stages[0].devices[0]: expected [host, gpu], found 7"),
    (_set("stages[0].devices[0]", [0, -1]), "stages[0].devices[0]: expected [host, gpu], found [0, -1]"),
    (_set("stages[0].devices[0]", [0, 1, 2]), "stages[0].devices[0]: expected [host, gpu], found [0, 1, 2]"),
    (_set("stages[0].logical_mesh", [2]), "stages[0].logical_mesh: expected [n0, n1], found [2]"),
    (_set("settings.schedule", "zigzag"), "settings.schedule: expected one of '1f1b', 'gpipe', found 'zigzag'"),
    (_set("settings.batch_size", 0), "settings.batch_size: expected an integer >= 1, found 0"),
    (_set("settings.batch_size", True), "settings.batch_size: expected an integer, found true"),
    (_set("estimate.samples_per_s", _DELETE), "estimate.samples_per_s: expected a value, found nothing"),
    (_set("stages[0].colour", "red"), "stages[0].colour: expected no such field in alpa-plan/2, found 'red'"),
    (_set("stages[0].shardings.x", "S2R"), "stages[0].shardings.x: expected a sharding spec such as 'S0R' (one of R, S0, S1, S01 per tensor dimension), found 'S2R'"),
    (_set("stages[0].time_s.forward", -1.0), "stages[0].time_s.forward: expected a number >= 0, found -1.0"),
    (_set("stages", []), "stages: expected at least 1 item, found []"),
    (_set("transfers", [{}]), "transfers[0].tensor: expected a value, found nothing"),
    (_set("model.name", None), "model.name: expected a string, found null"),
    (_set("stages[0].zero.x", "zero9"), "stages[0].zero.x: expected one of 'none', 'zero1', 'zero2', 'zero3', found 'zero9'"),
    (_set("stages[0].time_s.optimizer_step", _DELETE), "stages[0].time_s.optimizer_step: expected a value, found nothing"),
    (_set("search.warnings", _DELETE), "search.warnings: expected a value, found nothing"),
    (_set("search.colour", "red"), "search.colour: expected no such field in alpa-plan/2, found 'red'"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BROKEN)
def test_the_first_problem_is_named_by_its_json_path_and_jsonschema_agrees(
    change: Callable[[Document], None], message: str
) -> None:
    data = copy.deepcopy(document(gpt_plan()))
    change(data)
    with pytest.raises(InputError) as error:
        validate(data, "p.json")
    assert str(error.value) == f"p.json: {message}"
    assert _jsonschema_errors(data), "jsonschema accepts what the validator refuses"


def test_baseline_parameters_and_planner_options_stay_open_objects() -> None:
    data = document(gpt_plan())
    data["search"]["parameters"] = {"anything": {"goes": [1, "two"]}}
    data["planner"]["options"]["new_option"] = 3
    validate(data, "p.json")
    assert _jsonschema_errors(data) == []


READS = "'alpa-plan/1' or 'alpa-plan/2' (this alpa-plan reads them)"


@pytest.mark.parametrize("version", ["alpa-plan/0", "alpa-plan/3", "alpa-plan/10"])
def test_other_format_versions_say_which_was_found_and_which_are_read(version: str) -> None:
    data = document(gpt_plan())
    data["schema"] = version
    with pytest.raises(InputError) as error:
        plan_from_json(json.dumps(data), "p.json")
    assert str(error.value) == f"p.json: schema: expected {READS}, found '{version}'"


def test_a_newer_plan_is_bad_input_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = document(gpt_plan())
    data["schema"] = "alpa-plan/3"
    path = tmp_path / "new.json"
    path.write_text(json.dumps(data))
    for command in (["show"], ["diff", str(path)], ["check"]):
        assert main([*command, str(path)]) == exit_codes.BAD_INPUT
        err = capsys.readouterr().err
        assert "found 'alpa-plan/3'" in err and READS in err


# --- alpa-plan/1, read and converted ---------------------------------------------------------

PLANS = Path(__file__).parent / "data" / "plans"
V1_ZERO = PLANS / "mlp-tiny-zero.alpa-plan-1.json"  # written by alpa-plan before format 2
V1_GPT = PLANS / "gpt-tiny-2x4.alpa-plan-1.json"


def test_version_1_plans_pass_their_own_schema() -> None:
    for path in (V1_ZERO, V1_GPT):
        data = json.loads(path.read_text())
        assert data["schema"] == "alpa-plan/1"
        jsonschema.Draft202012Validator(load_schema("alpa-plan/1")).validate(data)


def test_a_version_1_plan_is_converted_with_its_zero_modes_per_parameter() -> None:
    from plans.plan import ZeroStage

    op_parameters = {
        "node_linear": ("fc1.weight", "fc1.bias"),
        "node_linear_1": ("fc2.weight", "fc2.bias"),
    }
    plan = plan_from_json(V1_ZERO.read_text(), str(V1_ZERO), op_parameters)
    assert plan.read_from == "alpa-plan/1" and plan.schema == "alpa-plan/2"
    (stage,) = plan.stages
    assert dict(stage.zero) == {
        name: ZeroStage.ZERO2 for names in op_parameters.values() for name in names
    }
    assert stage.strategies["node_linear"] == "RR = RR x RR x R"  # the suffix is gone
    old = json.loads(V1_ZERO.read_text())["stages"][0]["time_s"]
    assert stage.time.gradient_sync_s == old["gradient_sync"] and stage.time.optimizer_step_s == 0
    assert plan.search.warnings == ()
    # Written back, it is a plan of the current format.
    written = json.loads(plan_to_json(plan))
    assert written["schema"] == "alpa-plan/2" and _jsonschema_errors(written) == []


def test_a_version_1_plan_read_without_its_model_says_what_it_could_not_convert() -> None:
    plan = plan_from_json(V1_ZERO.read_text(), str(V1_ZERO))
    assert dict(plan.stages[0].zero) == {}
    assert plan.search.warnings == (
        "read from alpa-plan/1 without the model: the ZeRO modes of 2 ops' strategies are not "
        "assigned to parameters",
    )
