"""A lower bound on the memory a model needs at one microbatch size, whatever the plan.

All devices together hold at least every parameter's state once (sharding spreads it,
replication adds to it) and, when training without rematerialisation, one microbatch of the
activations each layer keeps for the backward (every stage holds at least one microbatch in
flight), charged as the strategies charge them (`planner/strategies.py`: an op's saved outputs
and saved data inputs, saved as `planner/saved_tensors.py` says within its layer).

A microbatch count whose bound exceeds the devices' budgets together fits no pipeline, so the
search skips it without building its cost table.
"""

from __future__ import annotations

from collections.abc import Sequence

from cost_models.memory import parameter_state
from planner.graph import Subgraph
from planner.intra_op import IntraOpSettings
from planner.layers import LayerSlice
from planner.saved_tensors import charged_to, saved_for_backward


def memory_lower_bound_bytes(
    model: Subgraph, layers: Sequence[LayerSlice], settings: IntraOpSettings
) -> int:
    """The bound of the module docstring for `model` (tensors at microbatch size)."""
    state = parameter_state(settings.dtype, settings.optimizer, settings.training)
    total = state.total * sum(model.tensors[name].num_elements for name in model.parameters)
    if not settings.training or settings.remat:
        return total
    for layer in layers:
        ops = model.slice(layer.start, layer.stop)
        saved = saved_for_backward(ops)
        kept = {name for op in ops.ops for name in charged_to(op, saved, model.tensors)}
        total += sum(model.tensors[name].size_bytes for name in kept)
    return total
