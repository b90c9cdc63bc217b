"""Collectives: those XLA put in a compiled stage, and the kinds the plan predicts for it.

Compiled: the optimized HLO text of a stage (`jax.jit(...).lower(...).compile().as_text()`)
names each collective instruction: all-reduce, all-gather, reduce-scatter, all-to-all,
collective-permute (or their asynchronous `-start` halves).

Predicted, for a stage's forward pass, from its strategies and specs (docs/DESIGN.md sections 4-5):

- an op whose inputs are split over a mesh axis that none of its outputs is split over
  (a contracted label split: MatMul's k, a reduced axis, an embedding's vocabulary) leaves
  partial sums: all-reduce;
- Softmax and LayerNormalization whose normalised axis is split: all-reduce of statistics;
- a tensor that its consumer wants in another spec than its producer made it (resharding):
  a dimension that stops being split is an all-gather, a mesh axis that moves to another
  dimension is an all-to-all, a split that appears is a local slice (nothing);
- axes of size 1 cost nothing;
- training with ZeRO-3: parameters stored sharded are all-gathered where the stage reads them.

A strategy name is 'OUT... = IN0 x IN1 ...' over the op's labelled tensors (`-` is a scalar);
labelled inputs come first in ONNX's input order (shape operands, unlabelled, come last).
XLA is free to realise a resharding another way (an all-gather as an all-reduce of a padded
buffer, an all-reduce plus slice as a reduce-scatter), so the check is on kinds, and is exact
for the cases the tests pin down: pure data parallelism (none) and Megatron splits (all-reduce).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping

from executor.stages import StageProgram
from plans.specs import ShardingSpec, parse_strategy_name

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_INSTRUCTION = re.compile(
    r"=\s*[^=]*?\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\("
)
_STATISTICS_OPS = {"Softmax": "axis", "LogSoftmax": "axis", "LayerNormalization": "axis"}


def compiled_collectives(hlo_text: str) -> Counter[str]:
    """How many collectives of each kind the compiled HLO holds."""
    return Counter(match.group(1) for match in _INSTRUCTION.finditer(hlo_text))


def predicted_collectives(
    program: StageProgram,
    strategies: Mapping[str, str],
    gathered: Collection[str] = (),
) -> set[str]:
    """The kinds of collectives the plan implies for the stage's forward pass; `gathered`:
    parameters stored sharded beyond their spec (ZeRO-3), which the forward all-gathers."""
    live = {axis for axis, size in enumerate(program.logical_mesh) if size > 1}
    kinds: set[str] = {"all-gather"} if gathered else set()
    made: dict[str, ShardingSpec] = {}
    for node in program.nodes:
        name = strategies.get(node.name)
        if name is None:
            continue
        out_specs, in_specs = parse_strategy_name(name)
        in_axes = {axis for spec in in_specs for axis in spec.axes}
        out_axes = {axis for spec in out_specs for axis in spec.axes}
        if (in_axes - out_axes) & live:
            kinds.add("all-reduce")
        attribute = _STATISTICS_OPS.get(node.op_type)
        if attribute and in_specs:
            rank = in_specs[0].rank
            axis = node.attributes.get(attribute, -1) % max(rank, 1)
            reduced = range(axis, rank) if node.op_type == "LayerNormalization" else [axis]
            if any(set(in_specs[0].dims[d]) & live for d in reduced):
                kinds.add("all-reduce")
        labelled = [name for name in node.inputs if name]
        for tensor, wanted in zip(labelled, in_specs, strict=False):
            source = made.get(tensor)
            if source is not None and source.rank == wanted.rank:
                kinds |= _resharding(source, wanted, live)
        for tensor, spec in zip(node.outputs, out_specs, strict=False):
            if tensor:
                made[tensor] = spec
    return kinds


def _resharding(source: ShardingSpec, target: ShardingSpec, live: set[int]) -> set[str]:
    kinds: set[str] = set()
    for axis in live:
        before, after = source.dim_of_axis(axis), target.dim_of_axis(axis)
        if before is None or before == after:
            continue
        kinds.add("all-gather" if after is None else "all-to-all")
    return kinds
