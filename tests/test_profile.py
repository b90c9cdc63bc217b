"""`alpa-plan profile` on the CPU with the quick grid: it writes a calibration that plans read,
and the curves it fits reproduce what it measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import MODELS, P3, ROOT

from cli.main import main
from cost_models.cluster_yaml import load_calibration

if TYPE_CHECKING:
    from executor.profile import Profile

jax = pytest.importorskip("jax")


def test_profile_on_cpu_writes_a_calibration_with_links(tmp_path: Path) -> None:
    """In a subprocess with 2 virtual devices, so the collectives are timed and fitted."""
    out = tmp_path / "cpu.yaml"
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    command = [sys.executable, "-m", "cli.main", "profile", "--quick", "--dtypes", "float32"]
    command += ["--out", str(out), "--note", "made by the test suite"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("# Calibration measured by `alpa-plan profile --quick` on ")
    assert "# made by the test suite\n" in text
    calibration = load_calibration(out)
    assert calibration.dtypes == ("float32",)
    assert "(cpu)" in calibration.device
    assert [name for name, _ in calibration.software] == [
        "alpa-plan",
        "jax",
        "jaxlib",
        "numpy",
        "python",
    ]
    (kind, fit), *_ = calibration.links
    assert kind == "intra_host"
    assert {sample.collective for sample in fit.samples} == {
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
    }
    assert {sample.group_size for sample in fit.samples} == {2}
    assert "wrote" in result.stderr

    # The plan made with it records it.
    plan_path = tmp_path / "plan.json"
    args = [str(MODELS / "mlp-tiny.onnx"), str(P3), "--batch-size", "8", "--intra-only"]
    assert main([*args, "--calibration", str(out), "-o", str(plan_path)]) == 0
    assert f"calibrated on {calibration.device} (cpu.yaml" in plan_path.read_text()


def _synthetic_profile(ops: list[tuple[str, float, float, float]]) -> Profile:
    """A profile with the given (kind, work, seconds, bytes_moved) timings, as `measure` returns."""
    from executor.profile import OpTiming, Profile

    timings = tuple(
        OpTiming(kind, "float32", (1,), work, seconds, bytes_moved)
        for kind, work, seconds, bytes_moved in ops
    )
    software = (("jax", "0"), ("python", "3.11"))
    return Profile("Test CPU (cpu)", "cpu", 1, software, timings, ())


def test_fitted_curves_reproduce_timings_that_grow_with_work() -> None:
    """Hand-made timings (measurements are noisy, so the fit is checked on known numbers)."""
    from cli.profile_command import calibration_from_profile

    profile = _synthetic_profile(
        [
            ("elementwise", 1e3, 1e-6, 1e3),
            ("elementwise", 1e6, 1e-4, 1e6),
            ("reduction", 1e3, 2e-6, 1e3),
            ("reduction", 1e6, 2e-4, 1e6),
            ("copy", 1e3, 5e-7, 1e3),
            ("copy", 1e6, 3e-5, 1e6),
            ("transcendental", 1e3, 3e-6, 1e3),
            ("transcendental", 1e6, 9e-4, 1e6),
            # Compute-bound products: 1e-4 s of bytes against 1e-2 s or more of FLOPs.
            ("matmul", 1e8, 1e-2, 1e6),
            ("matmul", 1e9, 5e-2, 1e6),
            ("matmul", 1e10, 4e-1, 1e6),
        ]
    )
    calibration = calibration_from_profile(profile, "2025-01-31")
    curves = {
        "matmul": calibration.matmul_curve("float32"),
        "elementwise": calibration.elementwise,
        "reduction": calibration.reduction,
        **dict(calibration.op_classes),
    }
    assert set(curves) == {"matmul", "elementwise", "reduction", "copy", "transcendental"}
    for timing in profile.ops:
        assert curves[timing.kind].time_s(timing.work) == pytest.approx(timing.seconds, rel=1e-12)
    # Between points: log-log interpolation; past the last: the last rate.
    assert calibration.elementwise.time_s(10**4.5) == pytest.approx(10**-5, rel=1e-12)
    assert calibration.matmul_curve("float32").time_s(2e10) == pytest.approx(8e-1, rel=1e-12)


def test_a_noisy_dip_is_pooled_and_a_memory_bound_product_left_out_of_the_matmul_curve() -> None:
    from cli.profile_command import calibration_from_profile

    profile = _synthetic_profile(
        [
            ("elementwise", 1e3, 1e-6, 1e3),
            ("elementwise", 1e6, 1e-4, 1e6),
            ("reduction", 1e6, 1e-4, 1e6),
            ("matmul", 1e8, 4e-2, 1e6),
            ("matmul", 1e9, 1e-2, 1e6),  # faster than a product 10x smaller: noise
            ("matmul", 1e10, 4e-1, 1e6),
            # Its 1e6 bytes alone take 1e-4 s, more than half its 1.5e-4 s: memory-bound.
            ("matmul", 1e7, 1.5e-4, 1e6),
        ]
    )
    curve = calibration_from_profile(profile, "2025-01-31").matmul_curve("float32")
    # The dip and its larger neighbour share their geometric mean, sqrt(4e-2 * 1e-2) = 2e-2.
    assert [work for work, _ in curve.points] == [1e8, 1e9, 1e10]
    assert [seconds for _, seconds in curve.points] == pytest.approx([2e-2, 2e-2, 4e-1])


def test_curves_fitted_to_real_measurements_cover_them_and_never_decrease() -> None:
    """Real timings on a shared machine are noisy: only what holds for any timings is checked."""
    from cli.profile_command import calibration_from_profile
    from executor.profile import measure, quick_grid

    profile = measure(quick_grid(), ["float32"])
    calibration = calibration_from_profile(profile, "2025-01-31")
    curves = {
        "matmul": calibration.matmul_curve("float32"),
        "elementwise": calibration.elementwise,
        "reduction": calibration.reduction,
        **dict(calibration.op_classes),
    }
    assert set(curves) == {"matmul", "elementwise", "reduction", "copy", "transcendental"}
    for kind, curve in curves.items():
        measured = sorted({t.work for t in profile.ops if t.kind == kind})
        works = [work for work, _ in curve.points]
        # The matmul curve leaves out memory-bound products (see the test above).
        assert set(works) <= set(measured) if kind == "matmul" else works == measured
        times = [seconds for _, seconds in curve.points]
        assert times == sorted(times) and all(t > 0 for t in times)


def test_profile_without_the_executor_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import executor

    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "executor.profile", raising=False)
    monkeypatch.delattr(executor, "profile", raising=False)
    assert main(["profile", "--quick", "--out", "-"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: alpa-plan profile: expected the executor extra "
        "(pip install 'alpa-plan[executor]'), found no module named 'jax'"
    )


def test_profile_refuses_an_unknown_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--quick", "--dtypes", "float32,int8"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --dtypes: expected a comma-separated list from float32, float16, bfloat16, "
        "found int8"
    )
