"""Calibrated costs: the fit reproduces its measurements, plans follow the calibration, and a
malformed calibration file is one clear error."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from conftest import CLUSTERS, MODELS, P3

from cli.main import main
from cost_models.calibration import (
    Calibration,
    CollectiveSample,
    Curve,
    collective_factor,
    fit_curve,
    fit_link,
)
from cost_models.cluster import Gpu
from cost_models.cluster_yaml import (
    calibration_to_yaml,
    load_calibration,
    load_cluster,
    parse_calibration,
)
from cost_models.compute import CostClass
from planner.onnx_import import load_onnx
from planner.ops import registered
from planner.options import PlanOptions
from planner.search import plan
from plans.errors import InputError

SHIPPED = sorted(
    (Path(__file__).resolve().parent.parent / "examples" / "calibrations").glob("*.yaml")
)


def saturating(work: float, floor_s: float = 10e-6, rate: float = 1e11) -> float:
    """A textbook per-op cost: fixed overhead plus work at a constant rate."""
    return floor_s + work / rate


def make_calibration(matmul_rate: float = 1e11, memory_rate: float = 1e10) -> Calibration:
    flops = [2.0 * n**3 for n in (32, 64, 128, 256, 512, 1024, 2048)]
    sizes = [4.0 * 4**k for k in range(5, 14)]
    return Calibration(
        device="test device (gpu)",
        date="2025-01-31",
        software=(("jax", "0.4.30"),),
        matmul=(("float16", fit_curve((w, saturating(w, rate=matmul_rate)) for w in flops)),),
        elementwise=fit_curve((b, saturating(b, rate=memory_rate)) for b in sizes),
        reduction=fit_curve((b, saturating(b, 20e-6, memory_rate / 2)) for b in sizes),
    )


# --- the fit ---------------------------------------------------------------------------------


def test_fitted_curve_passes_through_every_monotone_measurement() -> None:
    samples = [(2.0 * n**3, saturating(2.0 * n**3)) for n in (16, 64, 256, 1024, 4096)]
    curve = fit_curve(samples)
    for work, seconds in samples:
        assert curve.time_s(work) == pytest.approx(seconds, rel=1e-12)


def test_curve_holds_the_floor_below_and_the_last_rate_above() -> None:
    curve = Curve(((1e6, 1e-5), (1e9, 1e-2)))
    assert curve.time_s(10.0) == 1e-5  # launch overhead, however small the op
    assert curve.time_s(4e9) == pytest.approx(4e-2)  # the largest op's rate, 1e11 per second
    assert curve.time_s(1e7) == pytest.approx(1e-5 * (1e-2 / 1e-5) ** (1 / 3))  # log-log line
    assert curve.time_s(0.0) == 0.0


def test_repeated_work_averages_geometrically_and_dips_are_pooled() -> None:
    curve = fit_curve([(100.0, 5e-7), (100.0, 2e-6), (200.0, 3e-6), (300.0, 1e-6), (400.0, 9e-6)])
    assert curve.points[0] == (100.0, pytest.approx(1e-6))
    # 3 us then 1 us is a dip: both become their geometric mean, sqrt(3) us.
    assert curve.points[1][1] == pytest.approx(math.sqrt(3) * 1e-6)
    assert curve.points[2][1] == pytest.approx(math.sqrt(3) * 1e-6)
    assert curve.points[3] == (400.0, pytest.approx(9e-6))


def test_link_fit_recovers_alpha_and_beta_of_its_measurements() -> None:
    alpha_s, bandwidth = 8e-6, 150e9
    samples = [
        CollectiveSample(
            name,
            n,
            float(size),
            alpha_s + collective_factor(name, n) * size / bandwidth,
        )
        for name in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
        for n in (2, 4, 8)
        for size in (2**12, 2**16, 2**20, 2**24)
    ]
    fit = fit_link(samples)
    assert fit.link.latency_s == pytest.approx(alpha_s, rel=1e-6)
    assert fit.link.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-6)
    assert fit.all_to_all is not None
    assert fit.all_to_all.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-6)
    for sample in samples:  # the fitted line reproduces every measurement
        predicted = (
            fit.link.latency_s
            + collective_factor(sample.collective, sample.group_size)
            * sample.num_bytes
            / fit.link.bandwidth_bytes_per_s
        )
        assert predicted == pytest.approx(sample.seconds, rel=1e-6)


# --- pricing ---------------------------------------------------------------------------------


def kind(op_type: str) -> CostClass:
    """The kernel class the op registry gives an op type."""
    return registered()[op_type].cost


def test_ops_are_priced_by_their_curve() -> None:
    calibration = make_calibration()
    flops, num_bytes = 2.0 * 512**3, 3 * 4.0 * 512**2
    matmul_s = calibration.op_time_s(kind("MatMul"), flops, num_bytes, "float16")
    assert matmul_s == pytest.approx(saturating(flops))
    assert calibration.op_time_s(kind("Add"), 1e3, 4.0 * 4**9, "float16") == pytest.approx(
        saturating(4.0 * 4**9, rate=1e10)
    )
    assert calibration.op_time_s(kind("Softmax"), 1e3, 4.0 * 4**9, "float16") == pytest.approx(
        saturating(4.0 * 4**9, 20e-6, 5e9)
    )
    assert calibration.op_time_s(kind("Reshape"), 0.0, 0.0, "float16") == 0.0  # views are free
    # A skinny product moving much data for few FLOPs is memory-bound, as in the roofline.
    assert calibration.op_time_s(kind("MatMul"), 1e3, 4e8, "float16") == pytest.approx(
        saturating(4e8, rate=1e10), rel=1e-3
    )


def with_op_classes(calibration: Calibration) -> Calibration:
    """Copies stream at 3x an Add's rate, tanh at a third of it, with their own floors."""
    sizes = [4.0 * 4**k for k in range(5, 14)]
    copy = fit_curve((b, saturating(b, 5e-6, 3e10)) for b in sizes)
    transcendental = fit_curve((b, saturating(b, 15e-6, 3e9)) for b in sizes)
    return dataclasses.replace(
        calibration, op_classes=(("transcendental", transcendental), ("copy", copy))
    )


def test_copies_and_transcendental_ops_are_priced_by_their_class_curve_when_measured() -> None:
    num_bytes = 4.0 * 4**9
    plain, classed = make_calibration(), with_op_classes(make_calibration())
    add_s = saturating(num_bytes, rate=1e10)
    for op_type in ("Transpose", "Tanh", "Add"):  # no class curves: all like an Add
        assert plain.op_time_s(kind(op_type), 1e3, num_bytes, "float16") == pytest.approx(add_s)
    assert classed.op_time_s(kind("Transpose"), 0.0, num_bytes, "float16") == pytest.approx(
        saturating(num_bytes, 5e-6, 3e10)
    )
    assert classed.op_time_s(kind("Tanh"), 1e3, num_bytes, "float16") == pytest.approx(
        saturating(num_bytes, 15e-6, 3e9)
    )
    assert classed.op_time_s(kind("Add"), 1e3, num_bytes, "float16") == pytest.approx(add_s)
    assert [name for name, _ in classed.op_classes] == ["copy", "transcendental"]  # sorted


def test_an_unknown_op_class_is_refused() -> None:
    curve = make_calibration().elementwise
    with pytest.raises(ValueError, match="unknown op class 'gather'"):
        dataclasses.replace(make_calibration(), op_classes=(("gather", curve),))


def test_an_unmeasured_dtype_borrows_a_curve_at_the_datasheet_ratio() -> None:
    calibration = make_calibration()
    gpu = Gpu("test", 2**34, (("float16", 100e12), ("float32", 25e12)), 1e12)
    flops = 2.0 * 2048**3
    unscaled = calibration.op_time_s(kind("MatMul"), flops, 0.0, "float32")
    assert unscaled == calibration.op_time_s(kind("MatMul"), flops, 0.0, "float16")
    scaled = calibration.with_reference_gpu(gpu).op_time_s(kind("MatMul"), flops, 0.0, "float32")
    assert scaled == pytest.approx(saturating(4 * flops), rel=1e-3)  # float32 is 4x slower on paper


def test_measured_links_replace_the_cluster_links() -> None:
    cluster = load_cluster(P3)
    samples = (  # all-reduce over 2 devices: alpha + V beta, 100 us and 1 GB/s
        CollectiveSample("all_reduce", 2, 1e6, 1e-4 + 1e-3),
        CollectiveSample("all_reduce", 2, 1e7, 1e-4 + 1e-2),
    )
    calibration = dataclasses.replace(
        make_calibration(), links=(("intra_host", fit_link(samples)),)
    )
    replaced = calibration.with_links(cluster)
    assert replaced.inter_host == cluster.inter_host
    assert replaced.intra_host.bandwidth_bytes_per_s == pytest.approx(1e9)
    assert replaced.intra_host.latency_s == pytest.approx(1e-4)


# --- the file ----------------------------------------------------------------------------------


def test_calibration_round_trips_through_its_file() -> None:
    samples = [
        CollectiveSample("all_reduce", n, 4.0**k, 1e-5 + 4.0**k / 1e10)
        for n in (2, 4)
        for k in range(6, 12)
    ]
    calibration = dataclasses.replace(
        with_op_classes(make_calibration()), links=(("intra_host", fit_link(samples)),)
    )
    text = calibration_to_yaml(calibration, "made by a test\non no machine")
    assert "\ncopy:  # floor 5.1 us" in text and "\ntranscendental:  # floor 16.4 us" in text
    assert text.startswith("# made by a test\n# on no machine\nformat: alpa-plan-calibration/1\n")
    parsed = parse_calibration(text, "dir/cal.yaml")
    assert dataclasses.replace(parsed, source="", digest="") == calibration
    assert parsed.source == "cal.yaml"
    assert "cal.yaml" in parsed.describe() and "test device (gpu)" in parsed.describe()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_calibrations_load_and_say_what_measured_them(path: Path) -> None:
    calibration = load_calibration(path)
    assert "float32" in calibration.dtypes
    header = path.read_text().split("format:")[0]
    assert "CPU" in header or "GPU" in header


GOOD = calibration_to_yaml(make_calibration())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "matmul: [unclosed\n",
            "cal.yaml: expected valid YAML, found expected ',' or ']', but got '<stream end>' "
            "(line 2, column 1)",
        ),
        ("- 1\n- 2\n", "cal.yaml: expected a YAML mapping at the top level, found a list"),
        (
            GOOD.replace('device: "test device (gpu)"\n', ""),
            "cal.yaml: device: expected a value, found nothing",
        ),
        (
            GOOD.replace("format: alpa-plan-calibration/1", "format: alpa-plan-calibration/9"),
            "cal.yaml: format: expected 'alpa-plan-calibration/1', found 'alpa-plan-calibration/9'",
        ),
        (
            GOOD.replace("  float16:", "  float64:"),
            "cal.yaml: matmul.float64: expected one of the dtypes bfloat16, float16, float32, "
            "float8, tfloat32, found unknown dtype 'float64' (did you mean 'float16'?)",
        ),
        (
            GOOD.replace("- [4096.0, 1.04096e-05]", "- [4096.0, fast]"),
            "cal.yaml: elementwise[0]: expected two positive numbers, found [4096.0, 'fast']",
        ),
        (
            GOOD.replace("- [4096.0, 1.04096e-05]", "- 4096.0"),
            "cal.yaml: elementwise[0]: expected a [work, seconds] pair, found 4096.0",
        ),
        (
            GOOD.replace("- [4096.0, 1.04096e-05]", "- [4096.0, 1.0]"),
            "cal.yaml: elementwise[1]: expected seconds no less than the previous point's 1.0, "
            "found 1.1638400000000009e-05",
        ),
        (
            GOOD.replace("elementwise:", "elementwise: 3\nunused:"),
            "cal.yaml: unused: expected one of the keys format, device, date, software, matmul, "
            "elementwise, reduction, copy, transcendental, links, found unknown key 'unused'",
        ),
    ],
    ids=[
        "not-yaml",
        "not-a-mapping",
        "missing-field",
        "other-format",
        "unknown-dtype",
        "wrong-type",
        "not-a-pair",
        "decreasing-times",
        "unknown-key",
    ],
)
def test_a_malformed_calibration_is_one_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "cal.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        load_calibration(path)
    assert str(raised.value) == message.replace("cal.yaml", str(path), 1)


def test_the_cli_reports_a_malformed_calibration_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cal.yaml"
    path.write_text(GOOD.replace("  float16:", "  float16: 7\n  float32:"))
    args = [str(MODELS / "mlp-tiny.onnx"), str(P3), "--batch-size", "8"]
    code = main([*args, "--calibration", str(path), "-o", "-"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {path}: matmul.float16: expected a list of [work, seconds] pairs of positive "
        "numbers, found 7"
    ]


# --- planning with a calibration ---------------------------------------------------------------


def _estimate_s(calibration: Calibration | None) -> float:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=8, dims={})
    cluster = load_cluster(P3).with_hosts(1)
    options = PlanOptions(compute=calibration, search="intra-only", microbatches=1)
    return plan(graph, cluster, options).estimate.iteration_time_s


def test_a_slower_measured_matmul_gives_a_longer_estimate() -> None:
    fast = _estimate_s(make_calibration(matmul_rate=1e12))
    slow = _estimate_s(make_calibration(matmul_rate=1e10))
    assert slow > fast


def test_the_plan_records_the_calibration_and_is_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration_path = tmp_path / "measured.yaml"
    calibration_path.write_text(GOOD)
    cluster_text = (CLUSTERS / "aws-p3.16xlarge.yaml").read_text()
    cluster_path = tmp_path / "cluster.yaml"
    cluster_path.write_text(cluster_text + "calibration: measured.yaml\n")
    outputs = []
    for index, extra in enumerate(
        [["--calibration", str(calibration_path)], ["--calibration", str(calibration_path)], []]
    ):
        out = tmp_path / f"plan{index}.json"
        cluster = str(P3) if extra else str(cluster_path)
        args = [str(MODELS / "mlp-tiny.onnx"), cluster, "--batch-size", "8", "--intra-only"]
        args += ["-o", str(out), *extra]
        assert main(args) == 0, capsys.readouterr().err
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]  # same calibration file -> byte-identical plan
    assert (
        '"compute_model": "calibrated on test device (gpu) (measured.yaml, 2025-01-31' in outputs[0]
    )
    assert '"compute_model": "calibrated on test device (gpu) (measured.yaml' in outputs[2]
    # The roofline's plan differs in its record (and its estimate).
    roofline_args = [str(MODELS / "mlp-tiny.onnx"), str(P3), "--batch-size", "8", "--intra-only"]
    assert main([*roofline_args, "-o", "-"]) == 0
    roofline = capsys.readouterr().out
    assert '"compute_model": "roofline"' in roofline
