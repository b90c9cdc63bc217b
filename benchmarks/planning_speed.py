"""Planner speed: ILP size and solve time, and how planning time grows with layers and GPUs.

Timings are measured here and written down (benchmarks/SPEED.md), never asserted in tests.

    python benchmarks/planning_speed.py [--quick] [--out benchmarks/SPEED.md]

Part 1 (issue 2): the intra-op ILP for one GPT-3 1.3B layer and for the whole 24-layer model
as one stage on 8 GPUs (one p3.16xlarge host), per logical mesh: variables, constraints,
status and wall time of build + solve.

Part 2 (issue 4): the full search (layers, stage/submesh DP, intra-op per stage) on GPT
models of growing depth and on growing clusters; GPT models other than the shipped 1.3B are
exported on the fly with examples/export_models.py (needs the `export` extra) and cached in
benchmarks/cache/ (not committed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cost_models.cluster_yaml import load_cluster  # noqa: E402
from cost_models.mesh import logical_mesh  # noqa: E402
from planner.graph import Graph, Subgraph, split_batch  # noqa: E402
from planner.intra_op import IntraOpSettings, solve_stage  # noqa: E402
from planner.onnx_import import load_onnx  # noqa: E402
from planner.ops import cast_floats  # noqa: E402
from planner.options import PlanOptions  # noqa: E402
from planner.search import plan  # noqa: E402
from plans.errors import InfeasibleError  # noqa: E402

P3 = ROOT / "examples" / "clusters" / "aws-p3.16xlarge.yaml"
CACHE = ROOT / "benchmarks" / "cache"


def gpt_model(hidden: int, layers: int, heads: int) -> Path:
    """The GPT-3-style model (seq 1024, vocab 51200), exported once and cached."""
    if (hidden, layers, heads) == (2048, 24, 32):
        return ROOT / "examples" / "models" / "gpt3-1.3b.onnx"
    path = CACHE / f"gpt-h{hidden}-l{layers}-a{heads}.onnx"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "examples"))
        from export_models import export_gpt

        CACHE.mkdir(parents=True, exist_ok=True)
        export_gpt(path, hidden=hidden, layers=layers, heads=heads, seq=1024, vocab=51200)
    return path


def ilp_rows(graph: Graph, ops_label: str, ops: list, microbatch: int) -> list[str]:
    cluster = load_cluster(P3, hosts=1)
    typed = cast_floats(graph, "float16")
    tensors = split_batch(typed.tensors, graph.batch_size // microbatch)
    typed_ops = [typed.op_by_name[op.name] for op in ops]
    rows = []
    for shape in ((1, 8), (2, 4), (4, 2)):
        mesh = logical_mesh(cluster, (1, 8), shape)
        settings = IntraOpSettings(
            "float16", "adam", True, 1, 1, 0.9 * cluster.gpu.memory_bytes, time_limit_s=60
        )
        started = time.perf_counter()
        stage = solve_stage(Subgraph(tuple(typed_ops), tensors), mesh, cluster.gpu, settings)
        seconds = time.perf_counter() - started
        solution = stage.solution
        rows.append(
            f"| {ops_label} | {len(ops)} | {shape[0]}x{shape[1]} | {solution.num_variables} | "
            f"{solution.num_constraints} | {solution.status} | {seconds:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def part_ilp() -> list[str]:
    graph = load_onnx(gpt_model(2048, 24, 32), batch_size=8)
    layer = [op for op in graph.ops if "transformer.h.3" in op.scopes]
    lines = [
        "## Intra-op ILP: GPT-3 1.3B on 8 GPUs (one p3.16xlarge host), microbatch of 8",
        "",
        "| ops | count | logical mesh | variables | constraints | status | build + solve s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ilp_rows(graph, "one layer (transformer.h.3)", layer, 8)
    lines += ilp_rows(graph, "whole model, one stage", list(graph.ops), 8)
    return lines


def time_plan(
    model: Path, hosts: int, microbatches: int | None, remat: bool, jobs: int
) -> tuple[float, str]:
    cluster = load_cluster(P3, hosts=hosts)
    graph = load_onnx(model, batch_size=1024)
    started = time.perf_counter()
    try:
        options = PlanOptions(microbatches=microbatches, recompute="full" if remat else "none")
        result = plan(graph, cluster, options, jobs=jobs)
    except InfeasibleError as error:
        return time.perf_counter() - started, f"does not fit: {error}"
    seconds = time.perf_counter() - started
    stages = ", ".join(
        f"{len(s.layers)}L on {len(s.devices)} GPUs {s.logical_mesh[0]}x{s.logical_mesh[1]}"
        for s in result.stages
    )
    summary = (
        f"B={result.settings.microbatches}, {len(result.stages)} stages ({stages}), "
        f"{result.estimate.tflops_per_gpu:.1f} TFLOP/s per GPU"
    )
    return seconds, summary


def part_search(quick: bool, jobs: int, only_39b: bool = False) -> list[str]:
    lines = [
        "## Full search: planning time (GPT-3 family, seq 1024, batch 1024, p3.16xlarge)",
        "",
        "| model | layers | GPUs | microbatches | remat | planning s | plan |",
        "|---|---|---|---|---|---|---|",
    ]
    cases = [((2048, 24, 32), 1, 256, False), ((2048, 24, 32), 4, 64, False)]
    if not quick:
        cases += [
            ((2048, 12, 32), 1, 256, False),
            ((2048, 48, 32), 1, 256, False),
            ((2048, 24, 32), 2, 64, False),
            ((2048, 24, 32), 8, 64, False),
            ((2048, 24, 32), 4, None, False),
            ((8192, 48, 64), 8, 64, False),
            ((8192, 48, 64), 8, 128, True),
        ]
    if only_39b:
        cases = [case for case in cases if case[0][0] == 8192]
    for (hidden, layers, heads), hosts, microbatches, remat in cases:
        model = gpt_model(hidden, layers, heads)
        seconds, summary = time_plan(model, hosts, microbatches, remat, jobs)
        row = (
            f"| GPT h{hidden} | {layers} | {8 * hosts} | "
            f"{microbatches if microbatches else 'searched'} | {'yes' if remat else 'no'} | "
            f"{seconds:.1f} | {summary} |"
        )
        print(row, flush=True)
        lines.append(row)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the shipped 1.3B model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "SPEED.md")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only-39b", action="store_true", help="only the GPT-3 39B rows")
    args = parser.parse_args()
    header = [
        "# Planner speed",
        "",
        f"Measured with `python benchmarks/planning_speed.py` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, --jobs {args.jobs}.",
        "Wall-clock seconds of this machine; re-run to refresh. Not asserted by any test.",
        "",
    ]
    ilp = [] if args.only_39b else [*part_ilp(), ""]
    lines = [*header, *ilp, *part_search(args.quick, args.jobs, args.only_39b), ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
