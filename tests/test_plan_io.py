"""Plan JSON: round trip, determinism of the text, errors by JSON path, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MODELS, P3

from cost_models.cluster_yaml import load_cluster
from planner.onnx_import import load_onnx
from planner.options import PlanOptions
from planner.search import plan
from plans.errors import InputError
from plans.io import plan_from_json, plan_to_json, read_plan, write_plan
from plans.plan import Plan


@pytest.fixture(scope="module")
def tiny_plan() -> Plan:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=32)
    return plan(graph, load_cluster(P3, hosts=1), PlanOptions())


def test_round_trip_gives_the_same_text(tiny_plan: Plan) -> None:
    text = plan_to_json(tiny_plan)
    again = plan_from_json(text, "plan.json")
    assert plan_to_json(again) == text


def test_write_then_read(tmp_path: Path, tiny_plan: Plan) -> None:
    path = tmp_path / "plan.json"
    write_plan(tiny_plan, path)
    assert plan_to_json(read_plan(path)) == plan_to_json(tiny_plan)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def _broken(tiny_plan: Plan, change: str) -> str:
    data = json.loads(plan_to_json(tiny_plan))
    if change == "device":
        data["stages"][0]["devices"][0] = 7
    elif change == "schema":
        data["schema"] = "alpa-plan/99"
    elif change == "missing":
        del data["estimate"]["samples_per_s"]
    elif change == "type":
        data["settings"]["batch_size"] = "lots"
    elif change == "virtual":
        data["settings"]["virtual_stages"] = 3
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("device", "p.json: stages[0].devices[0]: expected [host, gpu], found 7"),
        ("schema", "p.json: schema: expected 'alpa-plan/1' or 'alpa-plan/2' (this alpa-plan reads them), found 'alpa-plan/99'"),
        ("missing", "p.json: estimate.samples_per_s: expected a value, found nothing"),
        ("type", "p.json: settings.batch_size: expected an integer, found 'lots'"),
        ("virtual", "p.json: settings.virtual_stages: expected a divisor of the stage count 2, found 3"),
    ],
)  # fmt: skip
def test_errors_name_the_json_path(tiny_plan: Plan, change: str, message: str) -> None:
    with pytest.raises(InputError) as error:
        plan_from_json(_broken(tiny_plan, change), "p.json")
    assert str(error.value) == message


def test_not_json() -> None:
    with pytest.raises(InputError, match=r"p.json: expected a JSON plan file, found invalid JSON"):
        plan_from_json("{nope", "p.json")


def test_floats_are_rounded_to_six_digits(tiny_plan: Plan) -> None:
    data = json.loads(plan_to_json(tiny_plan))
    value = data["estimate"]["iteration_time_s"]
    assert value == float(f"{value:.6g}")
