"""onnxruntime on the executor's weights: the reference an executed plan must match.

A model with its weights runs as it is; a graph-only model runs from a temporary copy with the
executor's seeded weights embedded (`onnx_model.with_weights`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime

from executor.onnx_model import OnnxModel, with_weights


def reference_outputs(
    model: OnnxModel, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The graph outputs by name, computed by onnxruntime on the CPU."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: unused initializers are not worth a warning
    feeds = {value.name: np.asarray(inputs[value.name]) for value in model.inputs}
    if not model.missing_weights:
        session = onnxruntime.InferenceSession(model.source, options)
        return dict(zip(model.outputs, session.run(None, feeds), strict=True))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with_weights(model.source, weights, path)
        session = onnxruntime.InferenceSession(str(path), options)
        return dict(zip(model.outputs, session.run(None, feeds), strict=True))


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 for two all-zero arrays)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    return error / scale if scale else error
