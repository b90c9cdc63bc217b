"""Peak memory of activations alive at once in a forward pass (inference memory)."""

from __future__ import annotations

from collections.abc import Sequence

from planner.graph import Subgraph, TensorKind
from planner.ops import is_view


def live_activation_peak_bytes(stage: Subgraph, keep: Sequence[str] = ()) -> int:
    """Peak bytes of activations alive at once when the stage's ops run in order.

    A buffer lives from the op that writes it to the last use of it or of any view of it
    (reshape and friends alias their input and add nothing); tensors in `keep` (the outputs)
    live to the end. Data inputs count from the start.
    """
    ops, tensors = stage.ops, stage.tensors
    root: dict[str, str] = {}
    for op in ops:
        if is_view(op) and op.present_inputs:
            base = root.get(op.present_inputs[0], op.present_inputs[0])
            for name in op.outputs:
                root[name] = base
    last_use: dict[str, int] = {}
    for index, op in enumerate(ops):
        for name in op.present_inputs:
            last_use[root.get(name, name)] = index
    for name in keep:
        last_use[root.get(name, name)] = len(ops)
    inputs = {
        name for op in ops for name in op.present_inputs if tensors[name].kind is TensorKind.INPUT
    }
    live = sum(tensors[name].size_bytes for name in inputs)
    peak = live
    freed: set[str] = set()
    for index, op in enumerate(ops):
        if not is_view(op):
            live += sum(tensors[name].size_bytes for name in op.outputs if name)
        peak = max(peak, live)
        for name in op.present_inputs:
            owner = root.get(name, name)
            if owner in freed or last_use.get(owner) != index:
                continue
            if tensors[owner].kind in (TensorKind.ACTIVATION, TensorKind.INPUT):
                live -= tensors[owner].size_bytes
                freed.add(owner)
    return peak
