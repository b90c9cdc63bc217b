"""How well does the cost model predict op times? Roofline and calibrated versus measured.

Runs every op of one layer of an example model on the local device, unsharded, through the
executor's op table (each op jitted alone, median of repeats after warm-up, `block_until_ready`:
the way `alpa-plan profile` times), and prints per op and in total the measured time, the
roofline prediction and the calibrated prediction, with the median absolute relative error
|predicted - measured| / measured. Ops the cost model counts as free (views such as Reshape)
are listed but left out of the median (a jitted call of a view still pays dispatch).

    python benchmarks/fidelity.py --calibration examples/calibrations/cpu-amd-epyc-2core.yaml
    python benchmarks/fidelity.py --model examples/models/bert-base.onnx \\
        --layer bert.encoder.layer.0 --batch 8 --calibration CAL.yaml --cluster CLUSTER.yaml

The roofline needs datasheet peaks: `--cluster` takes them from a cluster YAML (on a GPU, the
cluster the GPU belongs to); without it a nominal CPU roofline is used (see `NOMINAL_CPU`).
Numbers measured here go in benchmarks/FIDELITY.md; they are never asserted by tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cost_models.calibration import Calibration  # noqa: E402
from cost_models.cluster import Gpu  # noqa: E402
from cost_models.cluster_yaml import load_calibration, load_cluster  # noqa: E402
from cost_models.compute import ComputeModel, Roofline  # noqa: E402
from cost_models.units import format_seconds  # noqa: E402
from executor.graph_fn import analyse, input_shapes  # noqa: E402
from executor.onnx_model import load_model, seeded_weights  # noqa: E402
from executor.ops import run_op  # noqa: E402
from executor.profile import Grid, device_summary, time_call  # noqa: E402
from planner.onnx_import import load_onnx  # noqa: E402
from planner.ops import cost_class_of  # noqa: E402

# A nominal roofline for a 2-core AMD EPYC (Zen 4) virtual machine, NOT a datasheet of this VM:
# float32 peak = 2 cores x 2.6 GHz (cpu MHz in /proc/cpuinfo) x 32 FLOP/cycle (two 256-bit FMA
# pipes, AVX-512 double-pumped: 2 x 8 lanes x 2 FLOP); bfloat16/float16 counted the same (no
# wider pipe for them in XLA's CPU matmuls). Memory bandwidth: one DDR5-4800 channel, 38.4 GB/s
# (JEDEC), a VM's share of the socket being unknown.
NOMINAL_CPU = Gpu(
    name="nominal 2-core AMD EPYC (Zen 4)",
    memory_bytes=16 * 2**30,
    peak_flops_by_dtype=(("bfloat16", 166.4e9), ("float16", 166.4e9), ("float32", 166.4e9)),
    memory_bandwidth_bytes_per_s=38.4e9,
)

TIMING = Grid(matmul_shapes=(), memory_elements=(), collective_bytes=(), min_repeats=20,
              max_repeats=400, budget_s=0.3)  # fmt: skip


@dataclass(frozen=True)
class Row:
    name: str
    op_type: str
    flops: float
    bytes_moved: float
    measured_s: float
    roofline_s: float
    calibrated_s: float | None


def measure_layer(
    model_path: Path, layer: str, batch: int, dims: Mapping[str, int], dtype: str,
    roofline: ComputeModel, calibrated: ComputeModel | None,
) -> list[Row]:  # fmt: skip
    graph = load_onnx(model_path, batch_size=batch, dims=dict(dims))
    ops = [op for op in graph.ops if layer in op.scopes]
    if not ops:
        scopes = sorted({scope for op in graph.ops for scope in op.scopes if scope})
        raise SystemExit(f"no op in layer {layer!r}; scopes: {', '.join(scopes[:20])} ...")
    model = load_model(model_path)
    weights = {**model.weights, **seeded_weights(model, seed=0)}
    analysis = analyse(model, weights, input_shapes(model, batch, dims))
    nodes = {node.name: node for node in model.nodes}
    rng = np.random.default_rng(0)
    rows = []
    for op in ops:
        node = nodes[op.name]
        static: dict[int, Any] = {}
        dynamic: list[Any] = []
        positions: list[int] = []
        for position, name in enumerate(node.inputs):
            if not name:
                static[position] = None
            elif name in analysis.static:
                static[position] = analysis.static[name]
            else:
                value = weights.get(name)
                if value is None:
                    shape = analysis.shapes[name]
                    if np.dtype(shape.dtype).kind == "f":
                        value = rng.standard_normal(shape.shape).astype(shape.dtype)
                    else:  # indices, masks: zeros are valid everywhere
                        value = np.zeros(shape.shape, shape.dtype)
                dynamic.append(jax.device_put(value))
                positions.append(position)

        def call(*arrays: Any, node: Any = node, static: Any = static, positions: Any = positions):
            args = dict(static)
            args.update(zip(positions, arrays, strict=True))
            inputs = [args[i] for i in range(len(node.inputs))]
            return run_op(node.op_type, node.attributes, model.opset, inputs, len(node.outputs))

        measured_s = time_call(jax.jit(call), dynamic, TIMING)
        bytes_moved = float(op.bytes_read + op.bytes_written)
        rows.append(
            Row(
                name=op.name,
                op_type=op.op_type,
                flops=op.flops,
                bytes_moved=bytes_moved,
                measured_s=measured_s,
                roofline_s=roofline.op_time_s(cost_class_of(op), op.flops, bytes_moved, dtype),
                calibrated_s=None
                if calibrated is None
                else calibrated.op_time_s(cost_class_of(op), op.flops, bytes_moved, dtype),
            )
        )
    return rows


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured


def report(rows: Sequence[Row], title: str) -> str:
    lines = [title, ""]
    header = "| op | type | FLOPs | bytes | measured | roofline | err | calibrated | err |"
    lines += [header, "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        calibrated = "-" if row.calibrated_s is None else format_seconds(row.calibrated_s)
        calibrated_error = (
            "-"
            if row.calibrated_s is None
            else f"{relative_error(row.calibrated_s, row.measured_s):.0%}"
        )
        lines.append(
            f"| {row.name} | {row.op_type} | {row.flops:.3g} | {row.bytes_moved:.3g} | "
            f"{format_seconds(row.measured_s)} | {format_seconds(row.roofline_s)} | "
            f"{relative_error(row.roofline_s, row.measured_s):.0%} | {calibrated} | "
            f"{calibrated_error} |"
        )
    priced = [row for row in rows if row.roofline_s > 0 or (row.calibrated_s or 0) > 0]
    free = [row for row in rows if row not in priced]
    measured_total = sum(row.measured_s for row in rows)
    priced_measured = sum(row.measured_s for row in priced)
    roofline_total = sum(row.roofline_s for row in rows)
    lines += [
        "",
        f"- ops: {len(rows)}, of which {len(free)} free in the cost model "
        f"({', '.join(sorted({row.op_type for row in free})) or 'none'}; measured "
        f"{format_seconds(sum(row.measured_s for row in free))} in all)",
        f"- total measured: {format_seconds(measured_total)} "
        f"({format_seconds(priced_measured)} without the free ops)",
        f"- roofline: total {format_seconds(roofline_total)} "
        f"(error {relative_error(roofline_total, priced_measured):.0%} against the priced ops), "
        f"median error per op {_median_error(priced, 'roofline_s'):.0%}",
    ]
    if all(row.calibrated_s is not None for row in rows):
        calibrated_total = sum(row.calibrated_s or 0.0 for row in rows)
        lines.append(
            f"- calibrated: total {format_seconds(calibrated_total)} "
            f"(error {relative_error(calibrated_total, priced_measured):.0%} against the priced "
            f"ops), median error per op {_median_error(priced, 'calibrated_s'):.0%}"
        )
    return "\n".join(lines)


def _median_error(rows: Sequence[Row], field: str) -> float:
    errors = [relative_error(getattr(row, field), row.measured_s) for row in rows]
    return statistics.median(errors) if errors else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples/models/gpt-tiny.onnx")
    parser.add_argument("--layer", default="transformer.h.0", help="an exporter name scope")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--dtype", default="float32", help="the dtype the model computes in")
    parser.add_argument("--calibration", type=Path, help="a file from `alpa-plan profile`")
    parser.add_argument("--cluster", type=Path, help="the roofline's GPU (default: nominal CPU)")
    args = parser.parse_args(argv)
    dims = {name: int(value) for name, value in (item.split("=", 1) for item in args.dim)}
    gpu = NOMINAL_CPU if args.cluster is None else load_cluster(args.cluster).gpu
    calibrated: Calibration | None = None
    if args.calibration is not None:
        calibrated = load_calibration(args.calibration).with_reference_gpu(gpu)
    rows = measure_layer(
        args.model, args.layer, args.batch, dims, args.dtype, Roofline(gpu), calibrated
    )
    device, _, _ = device_summary()
    title = (
        f"### {args.model.name}, layer {args.layer}, batch {args.batch}, {args.dtype}, on "
        f"{device}\n\nroofline: {gpu.name}; calibration: "
        f"{calibrated.describe() if calibrated else 'none'}"
    )
    print(report(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
