"""Does the search recompute only where memory needs it? OPT models on 4 x p3.8xlarge.

    python benchmarks/recompute_choice.py [--jobs N]

Issue 15's check: OPT-6.7B as transformers builds it (32 layers, hidden 4096, 32 heads,
sequence 2048; stock `OPTForCausalLM`, exported on the meta device by
`examples/export_models.py`, needs the `export` extra) at batch 8 on 4 hosts of 4 V100 16 GB
(`examples/clusters/aws-p3.8xlarge.yaml`) does not fit without recomputation; the default
search (`--recompute auto`) must plan it, recomputing in the stages whose activations need it
and nowhere else; a smaller OPT (1.3B: 24 layers, hidden 2048) on the same cluster must choose
no recomputation at all. Each model is also planned with `--recompute none` (and, with
`--modes`, `selective` and `full`), to say what the choice costs. `--microbatches N` fixes the
count (the default searches it, several times slower on a 2-core machine). Writes
`benchmarks/RECOMPUTE.md`; the exported models are cached in `benchmarks/cache/` (ignored by
git).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from cost_models.cluster_yaml import load_cluster  # noqa: E402
from planner.onnx_import import load_onnx  # noqa: E402
from planner.options import PlanOptions  # noqa: E402
from planner.search import plan  # noqa: E402
from plans.errors import InfeasibleError  # noqa: E402

CACHE = ROOT / "benchmarks" / "cache"
REPORT = ROOT / "benchmarks" / "RECOMPUTE.md"
CLUSTER = ROOT / "examples" / "clusters" / "aws-p3.8xlarge.yaml"
BATCH = 8
SEQ = 2048
# name: (hidden, layers, heads), OPT's published shapes (Zhang et al. 2022, table 1).
MODELS = {"opt-6.7b": (4096, 32, 32), "opt-1.3b": (2048, 24, 32)}


def _model(name: str) -> Path:
    path = CACHE / f"{name}.onnx"
    if not path.exists():
        import export_models as ex

        CACHE.mkdir(parents=True, exist_ok=True)
        hidden, layers, heads = MODELS[name]
        ex.export_opt(path, hidden=hidden, layers=layers, heads=heads, seq=SEQ)
    return path


NOTES = """
## Reading it (at the commit that wrote the table)

- **OPT-6.7B**: without recomputation the pipeline fits only with two of its four stages on
  2 x 2 logical meshes, at 14.36 GiB a GPU against a budget of 14.4. Selective recomputation
  (the attention cores: at sequence 2048 with 32 heads their 5 a s^2 b bytes are most of a
  layer's activations) lets every stage take the 1 x 4 mesh and pays only the cores' forward
  again: the iteration is about 4 % shorter than without, so `auto` recomputes selectively in
  every stage because the makespan says so. Full recomputation leaves the most memory free and
  is the slowest.
- **OPT-1.3B**: every stage holds what it must without recomputation, which would only add
  time: `auto` recomputes nowhere and plans what `none` plans.
- `auto`'s makespan search runs on the candidates without recomputation and on each mode's own
  before their union (docs/DESIGN.md, section 7): here it ends as fast as the best single mode.
- When issue 15 was filed OPT-6.7B did not fit without recomputation; with ZeRO inside
  pipeline stages and reduce-scattered partial sums it now does, barely.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--microbatches", type=int, default=None)
    parser.add_argument("--modes", nargs="+", default=["auto", "none"],
                        choices=["auto", "none", "selective", "full"])  # fmt: skip
    args = parser.parse_args(argv)
    cluster = load_cluster(CLUSTER)
    lines = [
        "# Recomputation chosen where memory needs it",
        "",
        "Written by `python benchmarks/recompute_choice.py` (see its docstring): stock",
        f"`OPTForCausalLM` at batch {BATCH}, sequence {SEQ}, float16 with Adam, on 4 x",
        "p3.8xlarge (4 V100 16 GB per host, 2.5 Gbit/s per GPU between hosts). Estimates of this",
        "planner's cost model. Planning times on this 2-core machine, "
        + (
            f"at {args.microbatches} microbatches."
            if args.microbatches
            else "searching the microbatch count."
        ),
        "",
        "| model | --recompute | plan | stages recomputing | iteration (s) | TFLOP/s per GPU "
        "| peak memory (GiB) | planning (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        graph = load_onnx(_model(name), batch_size=BATCH)
        for mode in args.modes:
            started = time.perf_counter()
            try:
                options = PlanOptions(recompute=mode, microbatches=args.microbatches)
                found = plan(graph, cluster, options, jobs=args.jobs)
            except InfeasibleError as error:
                seconds = time.perf_counter() - started
                lines.append(
                    f"| {name} | {mode} | does not fit ({str(error)[:60]}...) | - | - | - | - "
                    f"| {seconds:.0f} |"
                )
                print(lines[-1], flush=True)
                continue
            seconds = time.perf_counter() - started
            stages = ", ".join(
                f"{len(s.devices)}:{s.logical_mesh[0]}x{s.logical_mesh[1]}" for s in found.stages
            )
            recomputing = [
                f"{k} {s.recompute}" for k, s in enumerate(found.stages) if s.recompute != "none"
            ]
            shape = f"{len(found.stages)} stages [{stages}], B={found.settings.microbatches}"
            if found.settings.virtual_stages > 1:
                shape += f", interleaved x{found.settings.virtual_stages}"
            estimate = found.estimate
            lines.append(
                f"| {name} | {mode} | {shape} | {len(recomputing)} of {len(found.stages)} "
                f"{'(' + ', '.join(recomputing) + ')' if recomputing else ''} | "
                f"{estimate.iteration_time_s:.2f} | "
                f"{estimate.tflops_per_gpu:.1f} | {estimate.peak_memory_bytes / 2**30:.2f} | "
                f"{seconds:.0f} |"
            )
            print(lines[-1], flush=True)
    REPORT.write_text("\n".join(lines) + "\n" + NOTES)


if __name__ == "__main__":
    main()
