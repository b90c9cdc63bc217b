"""The onnx wheel's backend test data as a conformance sweep (issue 13, part 5).

    python benchmarks/onnx_conformance.py [--output benchmarks/CONFORMANCE.md]

Plans every model of `onnx/backend/test/data/{light,simple,pytorch-converted,pytorch-operator}`
(149) in train and in infer on one host of 8 GPUs; runs each planned model that stores inputs
on 8 CPU virtual devices under its inference plan and under its training plan (the forward
pass), comparing with the stored outputs (rtol 1e-3, atol 1e-5); writes the table. How models
are planned and run, and how the batch is chosen: `tests/conformance.py`, shared with
`tests/test_onnx_conformance.py`, which asserts the same outcomes (its `REFUSED` list) on all
but the four largest CNNs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import conformance  # noqa: E402
import onnx  # noqa: E402
from conformance import Case, Executed, Planned  # noqa: E402

from plans.io import read_plan  # noqa: E402


@dataclass(frozen=True)
class Row:
    case: Case
    planned: dict[str, Planned]
    executed: dict[str, Executed]  # by the mode of the plan run
    seconds: float


def sweep(folder: Path) -> list[Row]:
    rows = []
    for case in conformance.cases():
        started = time.perf_counter()
        planned = {mode: conformance.plan(case, mode, folder) for mode in conformance.MODES}
        executed = {}
        if case.data is not None:
            for mode, result in planned.items():
                if result.plan is not None:
                    executed[mode] = conformance.execute(case, result.plan)
        rows.append(Row(case, planned, executed, time.perf_counter() - started))
        status = " ".join(f"{m}={r.exit_code}" for m, r in planned.items())
        matches = " ".join(
            f"{m}:{'match' if e.matched else 'MISMATCH'}" for m, e in executed.items()
        )
        print(f"{case.name}: {status} {matches}", file=sys.stderr, flush=True)
    return rows


def _plan_cell(result: Planned) -> str:
    if result.plan is None:
        return f"refused (exit {result.exit_code})"
    plan = read_plan(result.plan)
    meshes = ", ".join(f"{s.logical_mesh[0]}x{s.logical_mesh[1]}" for s in plan.stages)
    return (
        f"{len(plan.stages)} stage(s) [{meshes}], batch {plan.settings.batch_size} in "
        f"{plan.settings.microbatches} microbatch(es)"
    )


def _executed_cell(row: Row) -> str:
    if row.case.data is None:
        return "no stored inputs" if row.case.directory == "light" else "no test_data_set_0"
    if not row.executed:
        return "-"
    cells = []
    for mode, result in row.executed.items():
        cells.append(f"{mode} plan: {'match' if result.matched else 'MISMATCH ' + result.detail}")
    return "; ".join(cells)


def _note(row: Row) -> str:
    reasons = {r.reason for r in row.planned.values() if r.plan is None}
    return " / ".join(sorted(reasons)).replace("|", "\\|")


def table(rows: list[Row]) -> str:
    planned_both = [r for r in rows if all(p.plan is not None for p in r.planned.values())]
    refused = [r for r in rows if all(p.plan is None for p in r.planned.values())]
    mixed = len(rows) - len(planned_both) - len(refused)
    runs = [e for r in rows for e in r.executed.values()]
    run_models = [r for r in rows if r.executed]
    matched_models = [r for r in run_models if all(e.matched for e in r.executed.values())]
    reasons = Counter(_reason_class(r) for r in refused)
    intro = (
        f"Measured with `python benchmarks/onnx_conformance.py` (onnx {onnx.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores). The models of "
        "`onnx/backend/test/data/{light,simple,pytorch-converted,pytorch-operator}`, each planned "
        "with `alpa-plan MODEL examples/clusters/aws-p3.16xlarge.yaml --hosts 1 --mode M "
        "--dtype float32` (8 GPUs) and, where it stores inputs, run by the executor on 8 CPU "
        "virtual devices under its inference plan and under its training plan (forward pass), "
        "against the stored outputs (rtol 1e-3, atol 1e-5; NaN where the stored output is NaN).",
        "The batch: these graphs have static shapes, and a model with a fixed batch plans at "
        "that batch, dimension 0 of its first data input; no `--batch-size` is passed. Inputs "
        "whose dimension 0 is not that batch (a [3, 4] matrix beside [2, 3] data) keep their "
        "shape; a model whose graph fixes the batch in a constant (PoissonNLLLoss' [10, 10] "
        "target) plans in one microbatch. A symbolic dimension (only test_sequence_model8 has "
        "one, refused first for its sequences) would be bound from the stored inputs. Setup, "
        "tolerances and batch rule: `tests/conformance.py`; the refusals expected: "
        "`tests/test_onnx_conformance.py` (`REFUSED`). Timings are this machine's, not asserted.",
    )
    lines = [
        "# Conformance: the onnx wheel's backend test data",
        "",
        *(textwrap.fill(paragraph, width=100) + "\n" for paragraph in intro),
        "## Summary",
        "",
        f"- {len(rows)} models: {len(planned_both)} planned in train and infer, "
        f"{len(refused)} refused in both, {mixed} planned in one mode only.",
        f"- Executed: {len(run_models)} models with stored inputs ({len(runs)} plan runs); "
        f"{len(matched_models)} match the stored outputs under every plan.",
        "- Refused, by reason: "
        + "; ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))
        + ".",
        f"- Sweep time: {sum(r.seconds for r in rows):.0f} s.",
        "",
        "## Models",
        "",
        "| model | directory | train | infer | executed | refused because | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.case.name} | {row.case.directory} | {_plan_cell(row.planned['train'])} | "
            f"{_plan_cell(row.planned['infer'])} | {_executed_cell(row)} | {_note(row)} | "
            f"{row.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _reason_class(row: Row) -> str:
    reason = next(iter(row.planned.values())).reason
    for key, label in (
        ("sequence or optional", "sequence values"),
        ("training graph", "training-graph ops"),
        ("string tensor", "string tensors"),
        ("depends on data", "data-dependent shapes"),
    ):
        if key in reason:
            return label
    return reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "CONFORMANCE.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = sweep(Path(tmp))
        text = table(rows)
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
