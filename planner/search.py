"""The planner's entry point: `plan(graph, cluster, options) -> Plan`.

Pure: reads no file, prints nothing. The CLI loads the inputs and writes the result.
"""

from __future__ import annotations

from cost_models.cluster import Cluster
from planner import __version__
from planner.data_parallel import check_memory, data_parallel_stage
from planner.graph import Graph
from planner.options import PlanOptions
from plans.plan import (
    ClusterInfo,
    Estimate,
    GpuInfo,
    ModelInfo,
    Plan,
    PlannerInfo,
    Settings,
    Stage,
    frozen_map,
)

# Training FLOPs per forward FLOP: forward + backward (twice the forward for contractions).
# The usual convention for model FLOP utilisation (Narayanan et al., SC'21, "Efficient
# Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", appendix).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3.0


def plan(graph: Graph, cluster: Cluster, options: PlanOptions) -> Plan:
    """The best plan the planner knows for `graph` on `cluster` (today: data parallel)."""
    stage = data_parallel_stage(graph, cluster, options)
    check_memory(stage, cluster, options)
    return assemble_plan(graph, cluster, options, (stage,))


def assemble_plan(
    graph: Graph, cluster: Cluster, options: PlanOptions, stages: tuple[Stage, ...]
) -> Plan:
    """A `Plan` around `stages`, with the iteration estimate.

    Iteration time: microbatches x the slowest stage's per-microbatch time, plus every other
    stage's once (pipeline fill and drain), plus the slowest once-per-iteration gradient sync.
    """
    per_microbatch = [stage.time.total_s for stage in stages]
    iteration_s = (
        sum(per_microbatch)
        + (options.microbatches - 1) * max(per_microbatch)
        + max(stage.time.gradient_sync_s for stage in stages)
    )
    flops_per_iteration = graph.flops * (
        TRAINING_FLOPS_PER_FORWARD_FLOP if options.training else 1.0
    )
    return Plan(
        planner=PlannerInfo(
            version=__version__,
            options=frozen_map(
                {
                    "memory_fraction": options.memory_fraction,
                    "optimizer": options.optimizer,
                }
            ),  # type: ignore[arg-type]
        ),
        model=ModelInfo(
            name=graph.name,
            fingerprint=graph.fingerprint,
            parameters=graph.parameter_count,
            flops_per_sample=graph.flops / graph.batch_size,
        ),
        cluster=ClusterInfo(
            name=cluster.name,
            hosts=cluster.hosts,
            gpus_per_host=cluster.gpus_per_host,
            gpu=GpuInfo(
                name=cluster.gpu.name,
                memory_bytes=cluster.gpu.memory_bytes,
                peak_flops=frozen_map(dict(cluster.gpu.peak_flops_by_dtype)),  # type: ignore[arg-type]
                memory_bandwidth_bytes_per_s=cluster.gpu.memory_bandwidth_bytes_per_s,
            ),
        ),
        settings=Settings(
            mode=options.mode,
            batch_size=graph.batch_size,
            microbatches=options.microbatches,
            schedule=options.schedule,
            dtype=options.dtype,
            optimizer=options.optimizer,
        ),
        stages=stages,
        transfers=(),
        estimate=Estimate(
            iteration_time_s=iteration_s,
            samples_per_s=graph.batch_size / iteration_s,
            tflops_per_gpu=flops_per_iteration / iteration_s / cluster.num_devices / 1e12,
            peak_memory_bytes=max(stage.memory.peak_bytes for stage in stages),
        ),
    )
