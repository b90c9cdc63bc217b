"""The command line end to end: outputs, exit codes, one-line errors, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS, P3, make_model
from onnx import TensorProto, helper, numpy_helper

from cli import exit_codes
from cli.main import main

GPT_TINY = MODELS / "gpt-tiny.onnx"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )


def test_plan_writes_a_plan_with_the_documented_fields(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    code = main(
        [str(GPT_TINY), str(P3), "--batch-size", "64", "--microbatches", "2", "-o", str(out)]
    )
    assert code == exit_codes.OK
    plan = json.loads(out.read_text())
    assert plan["schema"] == "alpa-plan/2"
    assert set(plan) >= {
        "planner",
        "model",
        "cluster",
        "settings",
        "stages",
        "transfers",
        "estimate",
    }
    assert set(plan["settings"]) >= {"mode", "batch_size", "microbatches", "schedule", "dtype"}
    (stage,) = plan["stages"]
    assert set(stage) >= {
        "index", "layers", "ops", "devices", "logical_mesh", "strategies", "shardings",
        "time_s", "memory_bytes",
    }  # fmt: skip
    assert len(stage["devices"]) == 32 and stage["logical_mesh"] == [4, 8]
    assert set(stage["time_s"]) >= {"forward", "backward", "communication", "total"}
    assert set(stage["memory_bytes"]) >= {"parameters", "optimizer", "activations", "peak"}
    assert plan["settings"]["batch_size"] == 64
    assert plan["transfers"] == []


def test_dash_writes_the_plan_to_stdout_and_messages_to_stderr() -> None:
    result = run_cli(str(GPT_TINY), str(P3), "--hosts", "1", "--batch-size", "64", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"]["name"]
    assert "estimate:" in result.stderr


def test_the_plan_subcommand_is_the_default(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    args = ["--hosts", "1", "--batch-size", "32", "--microbatches", "1"]
    assert main([str(GPT_TINY), str(P3), *args, "-o", str(first)]) == 0
    assert main(["plan", str(GPT_TINY), str(P3), *args, "-o", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_plans_are_byte_identical_across_runs_and_hash_seeds(tmp_path: Path) -> None:
    texts = []
    for seed in ("0", "1", "12345"):
        result = run_cli(
            str(MODELS / "gshard-moe-tiny.onnx"), str(P3), "--hosts", "1", "--batch-size", "64",
            "--microbatches", "2", "-o", "-",
            env={"PYTHONHASHSEED": seed},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        texts.append(result.stdout)
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.onnx", str(P3), "--batch-size", "8"], "missing.onnx: expected an ONNX model file, found no such file"),
        ([str(GPT_TINY), "missing.yaml", "--batch-size", "8"], "missing.yaml: expected a readable file, found no such file"),
        ([str(GPT_TINY), str(P3)], "expected --batch-size N to bind the symbolic batch dimension"),
        ([str(GPT_TINY), str(P3), "--batch-size", "8", "--hosts", "0"], "--hosts: expected a positive integer, found 0"),
        ([str(GPT_TINY), str(P3), "--batch-size", "8", "--dim", "seq"], "--dim: expected NAME=VALUE"),
        ([str(GPT_TINY), str(P3), "--batch-size", "8", "--dtype", "bfloat16"], "gpu.flops.bfloat16: expected a peak FLOP/s for the training dtype bfloat16"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(*args, "-o", str(tmp_path / "plan.json"))
    assert result.returncode == exit_codes.BAD_INPUT
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "plan.json").exists()


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    cluster = tmp_path / "bad.yaml"
    cluster.write_text(P3.read_text().replace("bandwidth: 150 GB/s", "bandwidth: fast"))
    result = run_cli(str(GPT_TINY), str(cluster), "--batch-size", "8", "-o", str(tmp_path / "p"))
    assert result.returncode == exit_codes.BAD_INPUT
    assert result.stderr.strip() == (
        f"error: {cluster}: links.intra_host.bandwidth: expected a bandwidth such as "
        "'25 Gbit/s', found 'fast'"
    )


def test_does_not_fit_exits_3_and_writes_nothing(tmp_path: Path) -> None:
    # GPT-3 1.3B's Adam state alone (21 GB) exceeds two 4 GiB GPUs however it is split.
    small = tmp_path / "small.yaml"
    small.write_text(
        P3.read_text().replace("gpus_per_host: 8", "gpus_per_host: 2").replace("16 GiB", "4 GiB")
    )
    out = tmp_path / "out" / "plan.json"
    out.parent.mkdir()
    result = run_cli(
        str(MODELS / "gpt3-1.3b.onnx"), str(small), "--hosts", "1", "--batch-size", "8",
        "--microbatches", "1", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == exit_codes.INFEASIBLE, result.stderr
    assert "budget of 3.60 GiB per GPU (90% of 4.00 GiB)" in result.stderr
    assert not list(out.parent.iterdir())  # no plan, no temporary file left behind


def _fixed_batch_model(
    tmp_path: Path, node: onnx.NodeProto, output: list[int], *initializers: onnx.TensorProto
) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, output)
    path = tmp_path / "model.onnx"
    onnx.save(make_model([node], [x], [y], list(initializers)), str(path))
    return path


def test_a_model_of_views_only_plans_with_zero_rates_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _fixed_batch_model(tmp_path, helper.make_node("Flatten", ["x"], ["y"], axis=0), [1, 24])
    out = tmp_path / "plan.json"
    assert main([str(model), str(P3), "--hosts", "1", "-o", str(out)]) == exit_codes.OK
    document = json.loads(out.read_text())
    assert document["estimate"]["iteration_time_s"] == 0
    assert document["estimate"]["samples_per_s"] == 0
    assert any("views only" in warning for warning in document["search"]["warnings"])
    assert "views only" in capsys.readouterr().err


def test_a_model_whose_graph_fixes_the_batch_plans_in_one_microbatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # x [4, 6] times a [4, 6] constant: no tensor follows the batch, so microbatches of x
    # would each need the whole constant's rows.
    target = numpy_helper.from_array(np.ones((4, 6), np.float32), "target")
    mul = helper.make_node("Mul", ["x", "target"], ["y"])
    model = _fixed_batch_model(tmp_path, mul, [4, 6], target)
    out = tmp_path / "plan.json"
    args = [str(model), str(P3), "--hosts", "1", "--mode", "infer", "-o", str(out)]
    assert main(args) == exit_codes.OK
    assert json.loads(out.read_text())["settings"]["microbatches"] == 1
    out.unlink()
    assert main([*args, "--microbatches", "2"]) == exit_codes.BAD_INPUT  # cannot mean anything
    assert "no input of the model follows the batch" in capsys.readouterr().err
    assert not out.exists()


def test_usage_errors_exit_2() -> None:
    assert run_cli("--no-such-flag").returncode == exit_codes.BAD_INPUT


def test_help_documents_exit_codes() -> None:
    result = run_cli("plan", "--help")
    assert result.returncode == 0
    assert "2 bad input" in result.stdout and "3" in result.stdout
