"""A lower bound on the memory a model needs at one microbatch size, whatever the plan.

All devices together hold at least every parameter's state once (sharding spreads it,
replication adds to it) and, when training without full recomputation, one microbatch of the
activations each layer keeps for the backward (every stage holds at least one microbatch in
flight), charged as the strategies charge them (`planner/strategies.py`: an op's saved outputs
and saved data inputs, kept as `planner/saved_tensors.py` says within its layer, under
selective recomputation without what the backward rebuilds).

A microbatch count whose bound exceeds the devices' budgets together fits no pipeline, so the
search skips it without building its cost table.
"""

from __future__ import annotations

from collections.abc import Sequence

from cost_models.memory import parameter_state
from planner.graph import Subgraph
from planner.intra_op import IntraOpSettings
from planner.layers import LayerSlice
from planner.recompute import recomputed_ops
from planner.saved_tensors import charged_to, kept_and_rebuilt
from plans.plan import RECOMPUTE_FULL


def memory_lower_bound_bytes(
    model: Subgraph, layers: Sequence[LayerSlice], settings: IntraOpSettings
) -> int:
    """The bound of the module docstring for `model` (tensors at microbatch size)."""
    state = parameter_state(settings.dtype, settings.optimizer, settings.training)
    total = state.total * sum(model.tensors[name].num_elements for name in model.parameters)
    if not settings.training or settings.recompute == RECOMPUTE_FULL:
        return total
    for layer in layers:
        ops = model.slice(layer.start, layer.stop)
        saved, _ = kept_and_rebuilt(ops, recomputed_ops(ops, settings.recompute))
        kept = {name for op in ops.ops for name in charged_to(op, saved, model.tensors)}
        total += sum(model.tensors[name].size_bytes for name in kept)
    return total
