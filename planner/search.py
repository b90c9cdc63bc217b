"""The planner's entry point: `plan(graph, cluster, options) -> Plan`.

Pure: reads no file, prints nothing (progress goes through an optional callback). The CLI
loads the inputs and writes the result. Two searches:

- "pipeshard" (the default, Alpa's PipeshardParallel, `planner/pipeshard.py`): layers cut into
  pipeline stages on submeshes by the inter-op DP, each stage sharded by the intra-op ILP;
- "intra-only" (Alpa's ShardParallel, `planner/shard_parallel.py`): the whole model as one
  stage on the whole cluster, the best logical mesh by the intra-op ILP.
"""

from __future__ import annotations

from dataclasses import replace

from cost_models.cluster import Cluster
from planner.graph import Graph
from planner.options import PlanOptions, Recompute, Schedule, Search
from planner.pins import one_stage_problem
from planner.pipeshard import plan_pipeshard
from planner.progress import Progress
from planner.shard_parallel import plan_intra_only
from plans.errors import InputError
from plans.plan import Plan


def plan(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    progress: Progress | None = None,
    jobs: int = 1,
) -> Plan:
    """The best plan the chosen search finds for `graph` on `cluster`.

    `progress(what, done, total)` hears of the work as it goes; `jobs` processes solve layer
    ILPs at once (the plan does not depend on it; `planner/workers.py`)."""
    options = with_pins(options, graph.batch_size)
    # A count that cannot split the batch is a flag that cannot mean anything (bad input, exit
    # 2), not a model that does not fit (exit 3).
    if options.microbatches is not None and graph.batch_size % options.microbatches:
        raise InputError(
            "--microbatches", "",
            f"a divisor of the batch size {graph.batch_size} (equal microbatches)",
            str(options.microbatches),
        )  # fmt: skip
    if not _batch_splits(graph):
        # Nothing follows the batch (the graph fixes it, e.g. in a constant of that size):
        # microbatches would each recompute the whole batch.
        if (options.microbatches or 1) > 1:
            raise InputError(
                "--microbatches", "",
                "1: no input of the model follows the batch (the graph fixes its size, e.g. "
                "in a constant)",
                str(options.microbatches),
            )  # fmt: skip
        options = replace(options, microbatches=1)
    if options.search is Search.INTRA_ONLY:
        problem = one_stage_problem(options.pins)
        if problem is not None:
            raise problem
        if options.recompute in (Recompute.FULL, Recompute.SELECTIVE):
            raise InputError(
                "--recompute", "", "the full search (recomputation works per layer)",
                "--intra-only",
            )  # fmt: skip
        return plan_intra_only(
            graph, cluster, replace(options, microbatches=options.microbatches or 1)
        )
    return plan_pipeshard(graph, cluster, options, progress, jobs)


def with_pins(options: PlanOptions, batch_size: int) -> PlanOptions:
    """`options` with the pins that set one of its fields applied (`planner/pins.py`): the
    microbatch size fixes the microbatch count, the recompute pin the recompute mode, and a
    pinned logical mesh puts the batch on its first axis. `InputError` naming the pin where it
    contradicts a flag or cannot hold."""
    pins = options.pins
    if pins.microbatch is not None:
        if batch_size % pins.microbatch:
            raise InputError(
                f"--pin microbatch={pins.microbatch}", "",
                f"a divisor of the batch size {batch_size}", str(pins.microbatch),
            )  # fmt: skip
        count = batch_size // pins.microbatch
        if options.microbatches not in (None, count):
            raise InputError(
                f"--pin microbatch={pins.microbatch}", "",
                f"{batch_size} / --microbatches {options.microbatches} samples per microbatch",
                str(pins.microbatch),
            )  # fmt: skip
        options = replace(options, microbatches=count)
    if pins.recompute is not None:
        wanted = Recompute(pins.recompute)
        if options.recompute not in (Recompute.AUTO, wanted):
            raise InputError(
                f"--pin recompute={pins.recompute}", "", f"--recompute {pins.recompute} or auto",
                f"--recompute {options.recompute}",
            )  # fmt: skip
        options = replace(options, recompute=wanted)
    if pins.pins_mesh:
        strategy = options.strategy
        if strategy.force_batch_dim_to_mesh_dim == 1 or strategy.force_data_parallel:
            flag = "--force-data-parallel" if strategy.force_data_parallel else (
                "--force-batch-dim-to-mesh-dim 1")  # fmt: skip
            raise InputError(
                "--pin dp / tp", "", "the batch on the first axis of the pinned mesh", flag
            )
        options = replace(options, strategy=replace(strategy, force_batch_dim_to_mesh_dim=0))
    if pins.vp not in (None, 1) and (
        not options.training or options.schedule is not Schedule.ONE_F_ONE_B
    ):
        raise InputError(
            f"--pin vp={pins.vp}", "", "1f1b training (interleaving is a 1F1B schedule)",
            f"{options.mode} with {options.schedule}",
        )  # fmt: skip
    return options


def _batch_splits(graph: Graph) -> bool:
    """Whether some data input scales with the batch (`Tensor.batch_dim`)."""
    return any(graph.tensors[name].batch_dim is not None for name in graph.inputs)
