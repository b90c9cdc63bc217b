"""Training pieces: the loss, per-stage VJPs, gradient accumulation, the optax optimizer.

Loss (`--loss`), on the model's first graph output `y`, per microbatch:

- `mean`: mean(y), the mean of every element (a model-agnostic smoke-test loss);
- `cross-entropy`: y holds logits over the last axis, labels hold class ids of shape
  y.shape[:-1]; loss = mean over positions of -log softmax(y)[label].

The iteration's loss is the mean of the microbatch losses, so the gradients equal those of the
whole batch at once: each microbatch's backward starts from d(loss)/d(microbatch loss) = 1/B.

Per stage, the forward pass returns its outputs and its VJP (a pytree of residuals, so it can
leave `jax.jit`); the backward pass applies the VJP to the cotangents of the stage's outputs and
gives the gradients of its parameters and of its floating-point inputs (sent back to the stages
that made them). Parameter gradients accumulate on the stage over the microbatches; the
optimizer (optax Adam or SGD, the plan's `settings.optimizer`) updates each parameter once per
iteration, on its owning stage (the first stage that reads it; a parameter read by several
stages, such as a tied embedding, has its gradients summed there and its new value sent back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from executor.mesh import AXIS_NAMES
from executor.replicas import ReplicaLayout, split_replicas

LOSSES = ("mean", "cross-entropy")
LOSS_KEY = "__loss__"  # the loss among a stage's differentiable outputs

Array = Any
Tree = dict[str, Array]
StageForward = Callable[[Tree, Tree], Tree]


def loss_value(kind: str, output: Array, labels: Array | None) -> Array:
    if kind == "mean":
        return jnp.mean(output.astype(jnp.float32))
    if kind == "cross-entropy":
        if labels is None:
            raise ValueError("the cross-entropy loss needs labels")
        logits = output.astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)
        return -jnp.mean(picked)
    raise ValueError(f"expected a loss in {LOSSES}, found {kind!r}")


def optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate)
    raise ValueError(f"expected the optimizer adam or sgd, found {name!r}")


def forward_with_vjp(
    forward: StageForward,
    differentiable_outputs: tuple[str, ...],
    loss: tuple[str, str] | None,
) -> Callable[[Tree, Tree, Tree, Array | None], tuple[Tree, Tree, Any]]:
    """`(params, float_inputs, other_inputs, labels) -> (diff_outputs, other_outputs, vjp)`.

    `loss`: (loss kind, output name) when this stage computes the loss.
    """

    split_outputs = _with_loss(forward, differentiable_outputs, loss)

    def run(params: Tree, float_inputs: Tree, other_inputs: Tree, labels: Array | None) -> Any:
        def stage(p: Tree, x: Tree) -> tuple[Tree, Tree]:
            return split_outputs(p, x, other_inputs, labels)

        diff, vjp, rest = jax.vjp(stage, params, float_inputs, has_aux=True)
        return diff, rest, vjp

    return run


def _with_loss(
    forward: StageForward,
    differentiable_outputs: tuple[str, ...],
    loss: tuple[str, str] | None,
) -> Callable[[Tree, Tree, Tree, Array | None], tuple[Tree, Tree]]:
    """`(params, float_inputs, other_inputs, labels) -> (diff_outputs, other_outputs)`: the
    stage's outputs split into those differentiated (with the loss, on the loss stage) and the
    rest."""

    def run(p: Tree, x: Tree, others: Tree, labels: Array | None) -> tuple[Tree, Tree]:
        outputs = forward(p, {**x, **others})
        diff = {name: outputs[name] for name in differentiable_outputs}
        rest = {name: value for name, value in outputs.items() if name not in diff}
        if loss is not None:
            diff[LOSS_KEY] = loss_value(loss[0], outputs[loss[1]], labels)
        return diff, rest

    return run


def replicated_forward_with_vjp(
    forward: StageForward,
    layout: ReplicaLayout,
    copy_shardings: Mapping[str, NamedSharding],
    differentiable_outputs: tuple[str, ...],
    loss: tuple[str, str] | None,
) -> Callable[[Tree, Tree, Tree, Array | None], tuple[Tree, Tree, Any]]:
    """`forward_with_vjp` for a stage run as data-parallel replicas (`executor/replicas.py`).

    Inputs and outputs are the whole microbatch, as for `forward_with_vjp`; the VJP gives each
    parameter's gradient per replica, shape (replicas, *parameter shape) sharded over the
    replica axes: partial sums, until `sum_replicas` adds them once per iteration. `forward`
    is the stage at one replica's size, constrained to the plan's specs without those axes.
    The loss is the mean of the replicas' losses (equal numbers of samples each).
    """
    spmd_axes = tuple(AXIS_NAMES[axis] for axis in layout.axes)
    replica = _with_loss(forward, differentiable_outputs, loss)  # one replica's samples

    def run(params: Tree, float_inputs: Tree, other_inputs: Tree, labels: Array | None) -> Any:
        copies = {
            name: jax.lax.with_sharding_constraint(
                jnp.broadcast_to(value, (layout.count, *value.shape)), copy_shardings[name]
            )
            for name, value in params.items()
        }
        others = {name: layout.split(value, name) for name, value in other_inputs.items()}
        replica_labels = None if labels is None else split_replicas(labels, 0, layout.count)

        def stage(p: Tree, x: Tree) -> tuple[Tree, Tree]:
            split = {name: layout.split(value, name) for name, value in x.items()}
            diff, rest = jax.vmap(replica, spmd_axis_name=spmd_axes)(
                p, split, others, replica_labels
            )
            joined = {
                name: jnp.mean(value) if name == LOSS_KEY else layout.join(value, name)
                for name, value in diff.items()
            }
            return joined, {name: layout.join(value, name) for name, value in rest.items()}

        diff, vjp, rest = jax.vjp(stage, copies, float_inputs, has_aux=True)
        return diff, rest, vjp

    return run


def sum_replicas(grads: Tree) -> Tree:
    """Per-replica partial gradients -> the gradient: the iteration's one collective."""
    return {name: jnp.sum(value, axis=0) for name, value in grads.items()}


def backward(vjp: Any, cotangents: Tree) -> tuple[Tree, Tree]:
    """Gradients of the stage's parameters and floating-point inputs."""
    grads: tuple[Tree, Tree] = vjp(cotangents)
    return grads


def add_trees(a: Tree, b: Tree) -> Tree:
    return {name: a[name] + b[name] for name in a}


def apply_update(
    transform: optax.GradientTransformation,
) -> Callable[[Tree, Any, Tree], tuple[Tree, Any]]:
    def update(params: Tree, state: Any, grads: Tree) -> tuple[Tree, Any]:
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return update


def is_float(value: Any) -> bool:
    return bool(jnp.issubdtype(value.dtype, jnp.floating))


def zero_cotangents(outputs: Mapping[str, Array]) -> Tree:
    return {name: jnp.zeros_like(value) for name, value in outputs.items()}
