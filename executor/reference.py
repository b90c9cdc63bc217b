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
from plans.errors import InputError


def reference_outputs(
    model: OnnxModel, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The graph outputs by name, computed by onnxruntime on the CPU."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: unused initializers are not worth a warning
    feeds = {value.name: np.asarray(inputs[value.name]) for value in model.inputs}
    if not model.missing_weights:
        return _run(model, model.source, options, feeds)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with_weights(model.source, weights, path)
        return _run(model, str(path), options, feeds)


def _run(
    model: OnnxModel,
    path: str,
    options: onnxruntime.SessionOptions,
    feeds: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return dict(zip(model.outputs, session.run(None, dict(feeds)), strict=True))
    except Exception as error:  # onnxruntime's own errors: no kernel (opsets < 7), bad model
        text = str(error).strip().splitlines()
        raise InputError(
            model.source,
            "--check",
            "a model onnxruntime can run as the reference",
            text[0] if text else type(error).__name__,
        ) from None


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 for two all-zero arrays)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    return error / scale if scale else error
