"""`alpa-plan check`: one line per problem, exit 1 if there is any."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import MODELS
from plan_helpers import (
    GPT_CLUSTER,
    GPT_PLAN,
    document,
    gpt_plan,
    interleaved,
    two_stages,
    write_document,
)

from cli import exit_codes
from cli.main import main
from plans.check import ClusterFacts, ModelFacts, check_plan
from plans.plan import frozen_map

GPT_MODEL = MODELS / "gpt-tiny.onnx"
Document = dict[str, Any]


def check(capsys: pytest.CaptureFixture[str], plan: Path, *args: str) -> tuple[int, list[str]]:
    code = main(["check", str(plan), *args])
    return code, capsys.readouterr().out.splitlines()


def test_a_planned_plan_passes_with_its_model_and_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, lines = check(capsys, GPT_PLAN, "--model", str(GPT_MODEL), "--cluster", str(GPT_CLUSTER))
    assert (code, lines) == (exit_codes.OK, [f"{GPT_PLAN}: read alpa-plan/2", f"{GPT_PLAN}: ok"])


def test_a_two_stage_plan_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_document(document(two_stages(gpt_plan())), tmp_path / "p.json")
    assert check(capsys, path, "--model", str(GPT_MODEL))[0] == exit_codes.OK


def test_an_interleaved_plan_passes_and_its_stages_must_share_their_group(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = document(interleaved(gpt_plan()))
    path = write_document(data, tmp_path / "p.json")
    assert check(capsys, path, "--model", str(GPT_MODEL))[0] == exit_codes.OK
    data["stages"][2]["devices"] = data["stages"][1]["devices"]  # stage 2 on group 1
    path = write_document(data, tmp_path / "moved.json")
    code, lines = check(capsys, path, "--model", str(GPT_MODEL))
    assert code == exit_codes.CHECK_FAILED
    assert (
        f"{path}: stage 2: expected the devices of stage 0 (virtual_stages 2: stage k runs on "
        "the devices of stage k mod 2), found others"
    ) in lines
    assert f"{path}: device [1, 0] is in more than one stage: 1, 2, 3" in lines


def _move_op(data: Document) -> None:
    data["stages"][1]["ops"].pop()


def _copy_op(data: Document) -> None:
    data["stages"][1]["ops"].append(data["stages"][0]["ops"][0])


def _share_device(data: Document) -> None:
    data["stages"][1]["devices"][0] = data["stages"][0]["devices"][0]


def _outside(data: Document) -> None:
    data["stages"][1]["devices"][3] = [5, 0]


def _unused(data: Document) -> None:
    data["stages"][1]["devices"].pop()
    data["stages"][1]["logical_mesh"] = [1, 3]


def _mesh(data: Document) -> None:
    data["stages"][0]["logical_mesh"] = [2, 4]


def _indivisible(data: Document) -> None:
    data["stages"][0]["shardings"]["embedding_1"] = "S1RR"  # shape (1, 32, 64)


def _memory(data: Document) -> None:
    data["stages"][1]["memory_bytes"]["peak"] = 17 * 2**30


def _fingerprint(data: Document) -> None:
    data["model"]["fingerprint"] = "sha256:0"


def _schema(data: Document) -> None:
    data["stages"][0]["devices"][0] = 7


PROBLEMS: list[tuple[Callable[[Document], None], str]] = [
    (_move_op, "op {last_op} of the model is in no stage"),
    (_copy_op, "op {first_op} is in more than one stage: 0, 1"),
    (_share_device, "device [0, 0] is in more than one stage: 0, 1"),
    (_outside, "stage 1: device [5, 0] is outside the cluster (2 hosts x 4 GPUs)"),
    (_unused, "1 of 8 devices are in no stage: [1, 3]"),
    (_mesh, "stage 0: logical mesh 2x4 has 8 devices, the stage has 4"),
    (_indivisible, "stage 0: tensor embedding_1: dimension 0 of size 1 does not split 4 ways (S1RR on 1x4)"),
    (_memory, "stage 1: peak memory 17.00 GiB per GPU exceeds the GPU's 16.00 GiB"),
    (_fingerprint, "the model's fingerprint {fingerprint} is not the plan's sha256:0 (another model, or another batch size)"),
    (_schema, "stages[0].devices[0]: expected [host, gpu], found 7"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), PROBLEMS)
def test_each_problem_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    change: Callable[[Document], None],
    message: str,
) -> None:
    plan = two_stages(gpt_plan())
    data = document(plan)
    change(data)
    path = write_document(data, tmp_path / "p.json")
    code, lines = check(capsys, path, "--model", str(GPT_MODEL), "--cluster", str(GPT_CLUSTER))
    expected = message.format(
        first_op=plan.stages[0].ops[0],
        last_op=plan.stages[1].ops[-1],
        fingerprint=plan.model.fingerprint,
    )
    assert code == exit_codes.CHECK_FAILED
    assert f"{path}: {expected}" in lines


def test_an_op_the_model_does_not_have(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = document(two_stages(gpt_plan()))
    data["stages"][0]["ops"].append("node_from_elsewhere")
    path = write_document(data, tmp_path / "p.json")
    code, lines = check(capsys, path, "--model", str(GPT_MODEL))
    assert (code, lines) == (
        exit_codes.CHECK_FAILED,
        [
            f"{path}: read alpa-plan/2",
            f"{path}: op node_from_elsewhere in stage 0 is not in the model",
        ],
    )


def test_without_a_model_the_plan_alone_is_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = document(two_stages(gpt_plan()))
    _fingerprint(data)
    _indivisible(data)
    _mesh(data)
    path = write_document(data, tmp_path / "p.json")
    code, lines = check(capsys, path)
    assert (code, lines) == (
        exit_codes.CHECK_FAILED,
        [
            f"{path}: read alpa-plan/2",
            f"{path}: stage 0: logical mesh 2x4 has 8 devices, the stage has 4",
        ],
    )


def test_a_missing_model_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(GPT_PLAN), "--model", "missing.onnx"]) == exit_codes.BAD_INPUT
    assert "missing.onnx" in capsys.readouterr().err


def test_specs_that_split_an_axis_twice_or_have_the_wrong_rank() -> None:
    plan = gpt_plan()
    stage = replace(plan.stages[0], shardings=frozen_map({"a": "S0S0", "b": "RRR"}))
    facts = ModelFacts(
        fingerprint=plan.model.fingerprint,
        op_names=stage.ops,
        tensor_shapes={"a": (8, 8), "b": (8, 8)},
    )
    problems = check_plan(replace(plan, stages=(stage,)), facts)
    assert [p.message for p in problems if p.kind == "spec"] == [
        "stage 0: tensor a: spec S0S0 splits over a mesh axis twice",
        "stage 0: tensor b: spec RRR has 3 dimensions, the tensor 2",
    ]


def test_the_cluster_file_overrides_the_plans_record() -> None:
    plan = gpt_plan()
    small = ClusterFacts(hosts=2, gpus_per_host=4, gpu_memory_bytes=1024)
    problems = check_plan(plan, cluster=small)
    assert [p.kind for p in problems] == ["memory"]


def test_check_says_it_read_a_version_1_plan_and_converts_it_with_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = Path(__file__).parent / "data" / "plans" / "mlp-tiny-zero.alpa-plan-1.json"
    code, lines = check(capsys, old, "--model", str(MODELS / "mlp-tiny.onnx"))
    assert (code, lines) == (
        exit_codes.OK,
        [f"{old}: read alpa-plan/1 (converted to alpa-plan/2)", f"{old}: ok"],
    )
