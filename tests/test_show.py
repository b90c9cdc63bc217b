"""`alpa-plan show` and the pipeline schedule it draws."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT
from plan_helpers import GPT_PLAN, gpt_plan, interleaved, two_stages, write

from cli import exit_codes
from cli.main import main
from plans.plan import Plan, StageTime, Transfer
from plans.timeline import pipeline_timeline

ANSI_ESCAPE = "\x1b["


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pipelined(tmp_path: Path) -> Path:
    plan = two_stages(gpt_plan())
    transfer = Transfer("add_137", 0, 1, "RRR", "RRR", 4096, 2e-6)
    return write(replace(plan, transfers=(transfer,)), tmp_path / "pipelined.json")


def _timeline_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"stage \d+ ", line)]


def show(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["show", *args]) == exit_codes.OK
    return capsys.readouterr().out


def test_the_header_has_model_cluster_settings_and_estimate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = show(capsys, str(GPT_PLAN))
    for text in (
        "gpt-tiny", "119 K parameters", "two-by-four", "2 x 4 V100-SXM2-16GB", "train",
        "batch 64 in 4 x 16", "schedule 1f1b", "per iteration", "samples/s", "TFLOP/s",
        "MFU", "of 125.0 TFLOP/s",
    ):  # fmt: skip
        assert text in out, text
    assert "stages" in out and "memory/GPU" in out


def test_a_two_stage_plan_shows_its_stages_transfers_and_timeline(
    capsys: pytest.CaptureFixture[str], pipelined: Path
) -> None:
    out = show(capsys, str(pipelined))
    assert "cross-stage transfers" in out and "add_137" in out and "RRR → RRR" in out
    assert "pipeline: 2 stages x 4 microbatches" in out
    rows = {line.split()[1]: line for line in _timeline_rows(out)}
    assert set(rows) == {"0", "1"}
    assert all(">" in row and "<" in row for row in rows.values())
    # 1F1B: stage 0 runs forwards 0 and 1 before its first backward.
    assert rows["0"].index("1>") < rows["0"].index("0<")


def test_an_interleaved_plan_draws_one_row_per_device_group(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(interleaved(gpt_plan()), tmp_path / "interleaved.json")
    assert main(["show", str(path)]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "schedule 1f1b, interleaved: 2 stages per device group" in out
    rows = [line for line in out.splitlines() if re.match(r"stages \d", line)]
    assert [row.split()[1] for row in rows] == ["0,2", "1,3"]


def test_many_microbatches_draw_the_start_and_the_end_within_the_width(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = two_stages(gpt_plan())
    path = write(replace(plan, settings=replace(plan.settings, microbatches=512)), tmp_path / "p")
    out = show(capsys, str(path))
    assert "pipeline: 2 stages x 512 microbatches" in out
    timeline = _timeline_rows(out)
    assert len(timeline) == 2 and all("⋯" in line and len(line) <= 120 for line in timeline)
    assert "511" in timeline[1]


def test_ops_lists_strategies_and_specs_matching_a_glob(
    capsys: pytest.CaptureFixture[str], pipelined: Path
) -> None:
    plan = two_stages(gpt_plan())
    second = plan.stages[1]
    out = show(capsys, str(pipelined), "--ops", "part1/*")
    assert f"ops matching 'part1/*': {len(second.ops)}" in out
    assert f" {second.ops[0]} " in out and f" {plan.stages[0].ops[0]} " not in out
    out = show(capsys, str(pipelined), "--ops", "*attn.c_attn.weight")
    assert "tensor specs matching '*attn.c_attn.weight': 4" in out  # 2 blocks x 2 stages


def test_ops_without_a_glob_lists_every_op(capsys: pytest.CaptureFixture[str]) -> None:
    out = show(capsys, str(GPT_PLAN), "--ops")
    assert f"ops matching '*': {sum(len(s.ops) for s in gpt_plan().stages)}" in out


def test_json_is_a_compact_machine_summary(
    capsys: pytest.CaptureFixture[str], pipelined: Path
) -> None:
    out = show(capsys, str(pipelined), "--json")
    assert len(out.strip().splitlines()) == 1
    summary = json.loads(out)
    assert set(summary) >= {
        "model", "parameters", "cluster", "mode", "batch_size", "microbatches", "schedule",
        "iteration_time_s", "samples_per_s", "tflops_per_gpu", "mfu", "peak_memory_bytes",
        "stages", "transfers",
    }  # fmt: skip
    assert [stage["hosts"] for stage in summary["stages"]] == [[0], [1]]
    assert summary["mfu"] == pytest.approx(summary["tflops_per_gpu"] * 1e12 / 125e12, rel=1e-5)
    with_ops = json.loads(show(capsys, str(pipelined), "--json", "--ops", "part0/*"))
    assert {row["stage"] for row in with_ops["ops"]} == {0}


def test_piped_output_has_no_escape_codes() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "show", str(GPT_PLAN)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pipeline:" in result.stdout and ANSI_ESCAPE not in result.stdout


@pytest.mark.parametrize("plain", [["--no-color"], ["NO_COLOR"]])
def test_no_color_even_where_colour_is_forced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, plain: list[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert ANSI_ESCAPE in show(capsys, str(GPT_PLAN))  # the check below can fail
    if plain == ["NO_COLOR"]:
        monkeypatch.setenv("NO_COLOR", "1")
        plain = []
    assert ANSI_ESCAPE not in show(capsys, str(GPT_PLAN), *plain)


def _uniform(plan: Plan, stages: int, microbatches: int, schedule: str) -> Plan:
    """`stages` equal stages of forward 1 s and backward 2 s, no communication."""
    time = StageTime(forward_s=1.0, backward_s=2.0, communication_s=0.0, gradient_sync_s=0.0,
                     optimizer_step_s=0.0, total_s=3.0)  # fmt: skip
    stage = replace(plan.stages[0], time=time)
    return replace(
        plan,
        stages=tuple(replace(stage, index=i) for i in range(stages)),
        transfers=(),
        settings=replace(plan.settings, microbatches=microbatches, schedule=schedule),
    )


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_equal_stages_take_b_plus_s_minus_1_slots(schedule: str) -> None:
    plan = _uniform(gpt_plan(), stages=3, microbatches=5, schedule=schedule)
    timeline = pipeline_timeline(plan)
    assert timeline.makespan_s == pytest.approx((5 + 3 - 1) * (1.0 + 2.0))
    assert len(timeline.blocks) == 3 * 5 * 2


def test_ops_filter_names_a_layer_by_its_last_dotted_components() -> None:
    from plans.summary import matches

    assert matches("h.3/*", "node_add", "transformer.h.3")
    assert not matches("h.3/*", "node_add", "transformer.h.13")
    assert matches("transformer.h.3/*", "node_add", "transformer.h.3")
    assert matches("node_add", "node_add", "transformer.h.3")
