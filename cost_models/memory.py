"""Bytes a GPU holds for training state: weights, gradients, optimizer state.

Per parameter, for training in `dtype` (size s bytes):

    weights    s
    gradients  s
    optimizer  adam: 8 (float32 m and v); sgd: 4 (float32 momentum)
               + 4 for a float32 master copy of the weights when s < 4 (mixed precision)

Adam in float16 thus costs 2 + 2 + 12 = 16 bytes per parameter. Source: Rajbhandari et al.,
"ZeRO: Memory Optimizations Toward Training Trillion Parameter Models" (SC'20), section 3.1.
Inference keeps the weights only.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("adam", "sgd")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_FLOAT32_BYTES = 4
_STATE_BYTES_PER_PARAMETER = {"adam": 8, "sgd": 4}  # float32 moments (m, v) / momentum


@dataclass(frozen=True)
class ParameterState:
    """Bytes per parameter of each kind of training state."""

    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def parameter_state(dtype: str, optimizer: str, training: bool) -> ParameterState:
    """Bytes per parameter held for `dtype` weights under `optimizer`."""
    size = DTYPE_BYTES[dtype]
    if not training:
        return ParameterState(size, 0, 0)
    master = _FLOAT32_BYTES if size < _FLOAT32_BYTES else 0
    return ParameterState(size, size, _STATE_BYTES_PER_PARAMETER[optimizer] + master)
