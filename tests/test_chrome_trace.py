"""`alpa-plan show PLAN --trace FILE`: the simulated schedule as a Chrome trace event file,
validated against the Trace Event Format (complete and metadata events) and against the
schedule it draws."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from plan_helpers import GPT_PLAN, document, gpt_plan, interleaved, two_stages, write_document

from cli import exit_codes
from cli.main import main
from plans.chrome_trace import chrome_trace
from plans.plan import Plan, Transfer
from plans.timeline import pipeline_timeline

METADATA_NAMES = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def assert_trace_event_format(trace: dict[str, Any]) -> None:
    """The JSON Object Format of Google's Trace Event Format: `traceEvents` a list of events;
    complete events ("X") with a string name and category, numeric ts and dur >= 0 in
    microseconds, integer pid and tid, object args; metadata events ("M") of the known names
    with their argument."""
    assert set(trace) <= {"traceEvents", "displayTimeUnit", "otherData"}
    assert trace["displayTimeUnit"] in ("ms", "ns")
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    for event in trace["traceEvents"]:
        assert event["ph"] in ("X", "M"), event
        assert isinstance(event["pid"], int) and isinstance(event["name"], str)
        assert isinstance(event["args"], dict)
        if event["ph"] == "X":
            assert isinstance(event["cat"], str) and isinstance(event["tid"], int)
            assert isinstance(event["ts"], float | int) and event["ts"] >= 0
            assert isinstance(event["dur"], float | int) and event["dur"] >= 0
        else:
            assert event["name"] in METADATA_NAMES
            key = "sort_index" if event["name"].endswith("sort_index") else "name"
            assert set(event["args"]) == {key}
            assert ("tid" in event) == event["name"].startswith("thread")


def pipelined() -> Plan:
    """Two stages on two hosts (`two_stages`) that send one activation across the cut (20 us
    each way) and reduce their gradients (30 us each), by hand."""
    plan = two_stages(gpt_plan())
    stages = tuple(
        replace(stage, time=replace(stage.time, gradient_sync_s=30e-6)) for stage in plan.stages
    )
    cut = Transfer("x", 0, 1, "RRR", "RRR", 1 << 20, 40e-6)
    return replace(plan, stages=stages, transfers=(cut,))


def trace_of(plan: Any) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads(json.dumps(chrome_trace(plan)))
    assert_trace_event_format(trace)
    return trace


def slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [event for event in trace["traceEvents"] if event["ph"] == "X"]


def names(trace: dict[str, Any], kind: str) -> dict[tuple[int, int | None], str]:
    return {
        (event["pid"], event.get("tid")): event["args"]["name"]
        for event in trace["traceEvents"]
        if event["name"] == kind
    }


def test_two_stages_four_microbatches_each_block_once_with_its_microbatch() -> None:
    plan = pipelined()  # 4 microbatches, 1F1B
    trace = trace_of(plan)
    blocks = Counter(
        (e["pid"], e["cat"], e["args"].get("microbatch")) for e in slices(trace) if e["tid"] == 0
    )
    for stage in (0, 1):
        for microbatch in range(4):
            assert blocks[(stage, "forward", microbatch)] == 1
            assert blocks[(stage, "backward", microbatch)] == 1
        assert blocks[(stage, "sync", None)] == 1
        assert blocks[(stage, "step", None)] == 1
    assert names(trace, "process_name") == {
        (0, None): "stage 0 (1x4 mesh, 4 GPUs on host 0)",
        (1, None): "stage 1 (1x4 mesh, 4 GPUs on host 1)",
    }
    threads = names(trace, "thread_name")
    assert threads[(0, 0)] == "device group 0" and threads[(1, 0)] == "device group 1"


def test_slices_are_the_simulated_schedule_in_microseconds() -> None:
    plan = pipelined()
    timeline = pipeline_timeline(plan)
    trace = trace_of(plan)
    pieces = [*timeline.blocks, *timeline.transfers]
    assert len(slices(trace)) == len(pieces)
    for event, piece in zip(slices(trace), pieces, strict=True):
        assert event["ts"] == pytest.approx(piece.start_s * 1e6)
        assert event["dur"] == pytest.approx((piece.end_s - piece.start_s) * 1e6)
        assert (event["pid"], event["cat"]) == (piece.stage, piece.kind)
    end_us = max(event["ts"] + event["dur"] for event in slices(trace))
    assert end_us == pytest.approx(timeline.makespan_s * 1e6)
    assert trace["otherData"]["iteration_time_s"] == timeline.makespan_s


def test_a_device_group_runs_one_slice_at_a_time() -> None:
    for plan in (pipelined(), interleaved(gpt_plan())):
        busy: dict[int, list[tuple[float, float]]] = {}
        for event in slices(trace_of(plan)):
            if event["tid"] == 0 and event["cat"] in ("forward", "backward"):
                group = event["pid"] % (len(plan.stages) // plan.settings.virtual_stages)
                busy.setdefault(group, []).append((event["ts"], event["ts"] + event["dur"]))
        for spans in busy.values():
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start >= end - 1e-6


def test_transfers_are_on_link_threads_of_the_sending_stage() -> None:
    trace = trace_of(pipelined())
    transfers = [e for e in slices(trace) if e["cat"] == "transfer"]
    assert transfers, "two stages on two hosts send activations and gradients"
    threads = names(trace, "thread_name")
    for event in transfers:
        assert event["tid"] >= 1
        assert "link" in threads[(event["pid"], event["tid"])]
        assert "microbatch" in event["args"]
    sent = Counter(e["pid"] for e in transfers)
    assert sent == {0: 4, 1: 4}  # activations forward, gradients back, per microbatch


def test_interleaved_stages_share_their_group_thread_name() -> None:
    trace = trace_of(interleaved(gpt_plan()))  # 4 stages on 2 groups
    threads = names(trace, "thread_name")
    assert [threads[(stage, 0)] for stage in range(4)] == [
        "device group 0",
        "device group 1",
        "device group 0",
        "device group 1",
    ]


def test_show_writes_the_trace_byte_identically(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = write_document(document(pipelined()), tmp_path / "plan.json")
    first, second = tmp_path / "a.trace.json", tmp_path / "b.trace.json"
    assert main(["show", str(plan), "--trace", str(first)]) == exit_codes.OK
    assert main(["show", str(plan), "--trace", str(second), "--json"]) == exit_codes.OK
    assert first.read_bytes() == second.read_bytes()
    assert_trace_event_format(json.loads(first.read_text()))
    assert f"wrote {first}" in capsys.readouterr().err


def test_a_trace_path_that_is_a_folder_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["show", str(GPT_PLAN), "--trace", str(tmp_path)]) == exit_codes.BAD_INPUT
    assert str(tmp_path) in capsys.readouterr().err
