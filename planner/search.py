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
from planner.options import PlanOptions, Recompute, Search
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
        if options.recompute is Recompute.FULL:
            raise InputError(
                "--recompute", "", "the full search (recomputation works per layer)",
                "--intra-only",
            )  # fmt: skip
        return plan_intra_only(
            graph, cluster, replace(options, microbatches=options.microbatches or 1)
        )
    return plan_pipeshard(graph, cluster, options, progress, jobs)


def _batch_splits(graph: Graph) -> bool:
    """Whether some data input scales with the batch (`Tensor.batch_dim`)."""
    return any(graph.tensors[name].batch_dim is not None for name in graph.inputs)
