"""A plan's simulated schedule (`plans/timeline.py`) as a Chrome trace event file, for Perfetto
(ui.perfetto.dev) and chrome://tracing.

The Trace Event Format (Google's "Trace Event Format" document): a JSON object whose
`traceEvents` lists events; a complete event (`"ph": "X"`) has a `name`, a category `cat`, a
start `ts` and a duration `dur` in microseconds, a process `pid` and thread `tid` (integers)
and free-form `args`; metadata events (`"ph": "M"`) name processes and threads
(`process_name`, `thread_name`) and order them (`process_sort_index`, `thread_sort_index`).

How the schedule maps onto it:

- one process per stage, `pid` = the stage index, named with its mesh and devices;
- in it, one thread per device group the stage's work occupies: `tid` 0 is the stage's device
  group (with interleaving a group holds several stages, so the same group's thread appears in
  each of its stages' processes), carrying its forward, backward, gradient-sync and optimizer
  step slices; the links its sends occupy (a host's inter-host link, a group's NVLink port)
  are further threads, `tid` 1, 2, ... in the order of their lane names, carrying its
  transfers (and a sync's occupancy of a link);
- every slice's `args` holds its `stage`, and its `microbatch` when it is per microbatch.

Timestamps are the simulation's, from 0 at the iteration's start; the file is deterministic.
"""

from __future__ import annotations

from plans.plan import JsonValue, Plan
from plans.timeline import Slice, Timeline, pipeline_timeline

_US_PER_S = 1e6


def chrome_trace(plan: Plan) -> dict[str, JsonValue]:
    """The trace event document of `plan`'s schedule (module docstring)."""
    return trace_document(plan, pipeline_timeline(plan))


def trace_document(plan: Plan, timeline: Timeline) -> dict[str, JsonValue]:
    """The trace event document of `timeline`, the schedule of `plan`."""
    groups = max(1, len(plan.stages) // plan.settings.virtual_stages)
    links: dict[int, set[str]] = {}
    for piece in timeline.transfers:
        links.setdefault(piece.stage, set()).add(piece.lane)
    threads = {
        stage: {lane: k + 1 for k, lane in enumerate(sorted(lanes))}
        for stage, lanes in links.items()
    }
    events: list[JsonValue] = []
    for stage in plan.stages:
        group = stage.index % groups
        events.append(_metadata(stage.index, None, "process_name", _stage_name(plan, stage.index)))
        events.append(_metadata(stage.index, None, "process_sort_index", stage.index))
        events.append(_metadata(stage.index, 0, "thread_name", f"device group {group}"))
        for lane, tid in threads.get(stage.index, {}).items():
            events.append(_metadata(stage.index, tid, "thread_name", lane))
    events += [_complete(piece, 0) for piece in timeline.blocks]
    events += [_complete(piece, threads[piece.stage][piece.lane]) for piece in timeline.transfers]
    return {
        "traceEvents": tuple(events),
        "displayTimeUnit": "ms",
        "otherData": {
            "schema": plan.schema,
            "iteration_time_s": timeline.makespan_s,
            "microbatches": timeline.microbatches,
            "schedule": plan.settings.schedule,
        },
    }


def _stage_name(plan: Plan, index: int) -> str:
    stage = plan.stages[index]
    hosts = ",".join(str(host) for host in sorted({host for host, _ in stage.devices}))
    mesh = "x".join(map(str, stage.logical_mesh))
    plural = "s" if "," in hosts else ""
    return f"stage {index} ({mesh} mesh, {len(stage.devices)} GPUs on host{plural} {hosts})"


def _metadata(pid: int, tid: int | None, name: str, value: str | int) -> JsonValue:
    key = "sort_index" if name.endswith("sort_index") else "name"
    event: dict[str, JsonValue] = {"ph": "M", "name": name, "pid": pid, "args": {key: value}}
    if tid is not None:
        event["tid"] = tid
    return event


def _complete(piece: Slice, tid: int) -> JsonValue:
    args: dict[str, JsonValue] = {"stage": piece.stage}
    name = piece.kind
    if piece.microbatch >= 0:
        args["microbatch"] = piece.microbatch
        name = f"{piece.kind} {piece.microbatch}"
    return {
        "ph": "X",
        "name": name,
        "cat": piece.kind,
        "ts": piece.start_s * _US_PER_S,
        "dur": (piece.end_s - piece.start_s) * _US_PER_S,
        "pid": piece.stage,
        "tid": tid,
        "args": args,
    }
