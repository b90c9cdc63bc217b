"""How a plan names the ops of an ONNX model: the rule the planner writes and the executor reads.

An op is named by its node's name, or `{op_type}_{index}` (its position among the graph's
nodes) when the node has none; a name already taken gets `_1`, `_2`, ... appended.
"""

from __future__ import annotations


def unique_op_name(node_name: str, op_type: str, index: int, used: set[str]) -> str:
    """The op's name under the rule above; adds it to `used`."""
    base = node_name or f"{op_type}_{index}"
    name = base
    suffix = 1
    while name in used:
        name = f"{base}_{suffix}"
        suffix += 1
    used.add(name)
    return name
