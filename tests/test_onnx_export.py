"""`alpa-plan export PLAN MODEL --to onnx` and `check PLAN --model annotated.onnx`: the
round trip on every example model, onnx's checker on the result, and what check says about an
annotation that does not say the plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from conftest import MODELS, P3
from plan_helpers import CASES, GPT_PLAN, document, gpt_plan, interleaved, write_document

from cli import exit_codes
from cli.main import main

GPT_MODEL = MODELS / "gpt-tiny.onnx"
Change = Callable[[onnx.ModelProto], None]

# The golden plans and the models they were planned for (tests/data/cases/*/args.txt).
GOLDEN = {
    "gpt-tiny": CASES / "gpt-tiny-2x4" / "expected.plan.json",
    "gshard-moe-tiny": CASES / "gshard-moe-tiny-h100-intra" / "expected.plan.json",
    "mlp-tiny": CASES / "mlp-tiny-p3" / "expected.plan.json",
}


def export(plan: Path, model: Path, output: Path, *extra: str) -> int:
    return main(["export", str(plan), str(model), "--to", "onnx", "-o", str(output), *extra])


def check(capsys: pytest.CaptureFixture[str], plan: Path, model: Path) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["check", str(plan), "--model", str(model)])
    return code, capsys.readouterr().out.splitlines()[1:]  # after "read alpa-plan/2"


def evaluated_plan(model: str, path: Path) -> Path:
    """A two-stage plan of `model` on one p3.16xlarge host (dp 2 x tp 2 x pp 2), priced by
    `evaluate` (seconds, where the full search would take minutes)."""
    args = ["evaluate", str(MODELS / f"{model}.onnx"), str(P3), "--hosts", "1"]
    args += ["--dp", "2", "--tp", "2", "--pp", "2", "--microbatch", "2", "--batch-size", "8"]
    assert main([*args, "--jobs", "1", "-o", str(path)]) == exit_codes.OK
    return path


def with_weight_files(model: Path) -> None:
    """Zero-filled files for the external data `model` references (the examples ship graphs
    only), so that onnx's checker can open them."""
    proto = onnx.load(str(model), load_external_data=False)
    sizes: dict[str, int] = {}
    for init in proto.graph.initializer:
        entries = {entry.key: entry.value for entry in init.external_data}
        if "location" in entries:
            end = int(entries.get("offset", 0)) + int(entries["length"])
            sizes[entries["location"]] = max(sizes.get(entries["location"], 0), end)
    for location, size in sizes.items():
        (model.parent / location).write_bytes(bytes(size))


def assert_round_trip(
    capsys: pytest.CaptureFixture[str], plan: Path, model: Path, tmp_path: Path
) -> onnx.ModelProto:
    annotated = tmp_path / "annotated.onnx"
    assert export(plan, model, annotated) == exit_codes.OK
    with_weight_files(annotated)
    onnx.checker.check_model(str(annotated), full_check=True)
    assert check(capsys, plan, annotated) == (exit_codes.OK, [f"{plan}: ok"])
    return onnx.load(str(annotated), load_external_data=False)


@pytest.mark.parametrize("model", sorted(GOLDEN))
def test_golden_plans_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: str
) -> None:
    assert_round_trip(capsys, GOLDEN[model], MODELS / f"{model}.onnx", tmp_path)


OTHER_MODELS = sorted(path.stem for path in MODELS.glob("*.onnx") if path.stem not in GOLDEN)


@pytest.mark.parametrize("model", OTHER_MODELS)
def test_every_other_example_model_round_trips_a_two_stage_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: str
) -> None:
    plan = evaluated_plan(model, tmp_path / "plan.json")
    proto = assert_round_trip(capsys, plan, MODELS / f"{model}.onnx", tmp_path)
    assert [c.name for c in proto.configuration] == ["mesh0", "mesh1"]
    assert [len(c.device) for c in proto.configuration] == [4, 4]


def test_only_the_multi_device_fields_are_added(tmp_path: Path) -> None:
    annotated = tmp_path / "annotated.onnx"
    assert export(GPT_PLAN, GPT_MODEL, annotated) == exit_codes.OK
    original = onnx.load(str(GPT_MODEL), load_external_data=False)
    proto = onnx.load(str(annotated), load_external_data=False)
    assert proto.ir_version == max(original.ir_version, 11)
    assert len(proto.configuration) == 1
    assert proto.configuration[0].device == [f"host{h}/gpu{g}" for h in (0, 1) for g in range(4)]
    annotated_nodes = [node for node in proto.graph.node if node.device_configurations]
    assert len(annotated_nodes) == sum(len(stage.ops) for stage in gpt_plan().stages)
    # Clear what export adds: the rest, weights' external data references included, is as it
    # was.
    del proto.configuration[:]
    for node in proto.graph.node:
        del node.device_configurations[:]
    proto.ir_version = original.ir_version
    assert proto == original
    assert any(init.external_data for init in proto.graph.initializer)


def test_an_expert_parallel_matmul_carries_its_split_by_hand(tmp_path: Path) -> None:
    # The golden GShard MoE plan (one 2 x 4 stage) runs the first expert matmul node_bmm as
    # `S1RR = S1RR x S1RR`: experts (dim 0) split four ways over mesh axis 1, so shard c is
    # held by the column c of the mesh, devices c and 4 + c.
    annotated = tmp_path / "annotated.onnx"
    assert export(GOLDEN["gshard-moe-tiny"], MODELS / "gshard-moe-tiny.onnx", annotated) == 0
    proto = onnx.load(str(annotated), load_external_data=False)
    node = next(n for n in proto.graph.node if n.name == "node_bmm")
    config = node.device_configurations[0]
    assert (config.configuration_id, config.pipeline_stage) == ("mesh0", 0)
    assert [spec.tensor_name for spec in config.sharding_spec] == [*node.input, *node.output]
    for spec in config.sharding_spec:
        assert [(d.axis, [s.num_shards for s in d.simple_sharding]) for d in spec.sharded_dim] == [
            (0, [4])
        ]
        assert list(spec.device) == [-1, -2, -3, -4]
        groups = {entry.key: list(entry.value) for entry in spec.index_to_device_group_map}
        assert groups == {-1: [0, 4], -2: [1, 5], -3: [2, 6], -4: [3, 7]}


def test_an_interleaved_plan_names_one_configuration_per_device_group(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = write_document(document(interleaved(gpt_plan())), tmp_path / "plan.json")
    proto = assert_round_trip(capsys, plan, GPT_MODEL, tmp_path)
    assert [c.name for c in proto.configuration] == ["mesh0", "mesh1"]
    stages = {
        (n.device_configurations[0].configuration_id, n.device_configurations[0].pipeline_stage)
        for n in proto.graph.node
        if n.device_configurations
    }
    assert stages == {("mesh0", 0), ("mesh1", 1), ("mesh0", 2), ("mesh1", 3)}


def _tampered(tmp_path: Path, change: Change) -> Path:
    annotated = tmp_path / "annotated.onnx"
    assert export(GPT_PLAN, GPT_MODEL, annotated) == exit_codes.OK
    proto = onnx.load(str(annotated), load_external_data=False)
    change(proto)
    path = tmp_path / "tampered.onnx"
    onnx.save(proto, str(path))
    return path


def _first_annotated(proto: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in proto.graph.node if n.device_configurations)


def _renumber_a_device(proto: onnx.ModelProto) -> None:
    proto.configuration[0].device[0] = "host9/gpu0"


def _move_a_node(proto: onnx.ModelProto) -> None:
    _first_annotated(proto).device_configurations[0].pipeline_stage = 3


def _drop_a_node(proto: onnx.ModelProto) -> None:
    del _first_annotated(proto).device_configurations[:]


def _split_a_replicated_tensor(proto: onnx.ModelProto) -> None:
    # The golden gpt-tiny plan replicates every tensor: say the first node's first input is
    # split in two along its dim 0, half on each host (row of the 2 x 4 mesh).
    spec = _first_annotated(proto).device_configurations[0].sharding_spec[0]
    del spec.index_to_device_group_map[:]
    spec.device[:] = [-1, -2]
    spec.index_to_device_group_map.add(key=-1, value=range(4))
    spec.index_to_device_group_map.add(key=-2, value=range(4, 8))
    spec.sharded_dim.add(axis=0).simple_sharding.add(num_shards=2)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_renumber_a_device, "configuration mesh0: devices [host9/gpu0, host0/gpu1"),
        (_move_a_node, "annotated mesh0 stage 3, the plan's mesh0 stage 0"),
        (_drop_a_node, "not annotated"),
        (_split_a_replicated_tensor, "annotated S0R, the plan's RR"),
    ],
)
def test_check_reports_an_annotation_that_differs_from_the_plan(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    change,
    says: str,
) -> None:
    code, lines = check(capsys, GPT_PLAN, _tampered(tmp_path, change))
    assert code == exit_codes.CHECK_FAILED
    assert len(lines) == 1, lines
    assert says in lines[0]


def test_a_model_without_annotations_is_checked_as_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check(capsys, GPT_PLAN, GPT_MODEL) == (exit_codes.OK, [f"{GPT_PLAN}: ok"])


def test_exporting_onto_another_model_is_bad_input_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "annotated.onnx"
    code = export(GPT_PLAN, MODELS / "mlp-tiny.onnx", output)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exit_codes.BAD_INPUT
    assert len(err) == 1 and "mlp-tiny.onnx" in err[0] and "fingerprint" in err[0], err
    assert not output.exists()


def test_export_needs_an_output_path(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(GPT_PLAN), str(GPT_MODEL), "--to", "onnx"])
    assert code == exit_codes.BAD_INPUT
    assert "--output" in capsys.readouterr().err
