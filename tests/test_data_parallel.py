"""The data-parallel plan's costs against numbers computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cost_models.cluster import Cluster, Gpu, Link
from planner.onnx_import import load_onnx
from planner.options import PlanOptions
from planner.search import plan
from plans.errors import InfeasibleError

PEAK_FLOPS = 1e12
MEMORY_BANDWIDTH = 1e11
LINK_BANDWIDTH = 1e10
LINK_LATENCY_S = 1e-6


def toy_cluster(hosts: int = 1, gpus: int = 8, memory_bytes: int = 2**30) -> Cluster:
    return Cluster(
        name="toy",
        hosts=hosts,
        gpus_per_host=gpus,
        gpu=Gpu("toy-gpu", memory_bytes, (("float32", PEAK_FLOPS),), MEMORY_BANDWIDTH),
        intra_host=Link(LINK_BANDWIDTH, LINK_LATENCY_S),
        inter_host=Link(LINK_BANDWIDTH / 10, 10 * LINK_LATENCY_S),
    )


def roofline(flops: float, num_bytes: float) -> float:
    return max(flops / PEAK_FLOPS, num_bytes / MEMORY_BANDWIDTH)


def test_mlp_on_one_host_by_hand(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    result = plan(graph, toy_cluster(), PlanOptions(dtype="float32"))
    b = 64 // 8  # samples per device
    fc1 = roofline(2 * b * 16 * 32, 4 * (b * 16 + 16 * 32 + b * 32))
    relu = roofline(b * 32, 4 * (b * 32 + b * 32))
    fc2 = roofline(2 * b * 32 * 16, 4 * (b * 32 + 32 * 16 + b * 16))
    forward = fc1 + relu + fc2  # the two reshapes are views: free
    backward = 2 * fc1 + relu + 2 * fc2
    gradient_bytes = 4 * (16 * 32 + 32 * 16)
    sync = 2 * 7 / 8 * gradient_bytes / LINK_BANDWIDTH + LINK_LATENCY_S  # ring all-reduce, 8 GPUs
    (stage,) = result.stages
    assert stage.time.forward_s == pytest.approx(forward)
    assert stage.time.backward_s == pytest.approx(backward)
    assert stage.time.gradient_sync_s == pytest.approx(sync)
    assert result.estimate.iteration_time_s == pytest.approx(forward + backward + sync)
    assert result.estimate.samples_per_s == pytest.approx(64 / (forward + backward + sync))
    # float32 Adam: weights 4 + gradients 4 + m and v 8 = 16 bytes per parameter; activations
    # kept for backward: x, h, r, y of 8 samples (the reshapes alias r).
    parameters = 16 * 32 + 32 * 16
    assert stage.memory.parameters_bytes == 4 * parameters
    assert stage.memory.optimizer_bytes == 8 * parameters
    assert stage.memory.activations_bytes == 4 * b * (16 + 32 + 32 + 16)
    assert stage.memory.peak_bytes == 16 * parameters + 4 * b * (16 + 32 + 32 + 16)
    assert stage.logical_mesh == (1, 8)
    assert stage.shardings["x"] == "S1R" and stage.shardings["w1"] == "RR"


def test_two_hosts_sync_hierarchically(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    result = plan(graph, toy_cluster(hosts=2, gpus=4), PlanOptions(dtype="float32"))
    v = 4 * (16 * 32 + 32 * 16)
    fast_beta, slow_beta = 1 / LINK_BANDWIDTH, 10 / LINK_BANDWIDTH
    # reduce-scatter inside the host, all-reduce of a quarter across hosts, all-gather back.
    expected = (
        (3 / 4 * v * fast_beta + LINK_LATENCY_S)
        + (2 * 1 / 2 * v / 4 * slow_beta + 10 * LINK_LATENCY_S)
        + (3 / 4 * v * fast_beta + LINK_LATENCY_S)
    )
    (stage,) = result.stages
    assert stage.logical_mesh == (2, 4)
    assert stage.time.gradient_sync_s == pytest.approx(expected)
    assert stage.shardings["h"] == "S01R"


def test_mixed_precision_adam_costs_sixteen_bytes_per_parameter(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    cluster = toy_cluster()
    cluster = Cluster(
        cluster.name, 1, 8,
        Gpu("toy-gpu", 2**30, (("float16", 8 * PEAK_FLOPS), ("float32", PEAK_FLOPS)), MEMORY_BANDWIDTH),
        cluster.intra_host, cluster.inter_host,
    )  # fmt: skip
    (stage,) = plan(graph, cluster, PlanOptions(dtype="float16")).stages
    parameters = 16 * 32 + 32 * 16
    assert stage.memory.parameters_bytes + stage.memory.gradients_bytes == 4 * parameters
    assert stage.memory.optimizer_bytes == 12 * parameters
    assert stage.memory.activations_bytes == 2 * 8 * (16 + 32 + 32 + 16)


def test_inference_keeps_weights_and_the_live_activations_only(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    (stage,) = plan(graph, toy_cluster(), PlanOptions(mode="infer", dtype="float32")).stages
    assert stage.time.backward_s == 0 and stage.time.gradient_sync_s == 0
    assert stage.memory.optimizer_bytes == 0 and stage.memory.gradients_bytes == 0
    # Live at once: x and h at fc1 (16 + 32 floats per sample), h and r at relu (32 + 32),
    # r (through its views) and y at fc2 (32 + 16). Peak: 64 floats for each of 8 samples.
    assert stage.memory.activations_bytes == 4 * 8 * (32 + 32)


def test_microbatches_repeat_compute_and_sync_once(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    one = plan(graph, toy_cluster(), PlanOptions(dtype="float32", microbatches=1))
    four = plan(graph, toy_cluster(), PlanOptions(dtype="float32", microbatches=2))
    (stage,) = four.stages
    assert four.estimate.iteration_time_s == pytest.approx(
        2 * stage.time.total_s + stage.time.gradient_sync_s
    )
    assert stage.memory.activations_bytes * 2 == one.stages[0].memory.activations_bytes


def test_does_not_fit_reports_budget(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=64)
    with pytest.raises(InfeasibleError) as error:
        plan(graph, toy_cluster(memory_bytes=4096), PlanOptions(dtype="float32"))
    assert "the budget is 0.00 GiB (90% of 0.00 GiB)" in str(error.value)


def test_batch_must_split_over_devices(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=12)
    with pytest.raises(InfeasibleError, match="divisible by the 8 devices"):
        plan(graph, toy_cluster(), PlanOptions(dtype="float32"))
