"""`alpa-plan profile` on the CPU with the quick grid: it writes a calibration that plans read,
and the curves it fits reproduce what it measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS, P3, ROOT

from cli.main import main
from cost_models.cluster_yaml import load_calibration

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


def test_fitted_curves_reproduce_the_measurements_they_were_fitted_on() -> None:
    from cli.profile_command import calibration_from_profile
    from executor.profile import measure, quick_grid

    profile = measure(quick_grid(), ["float32"])
    calibration = calibration_from_profile(profile, "2025-01-31")
    curves = {
        "matmul": calibration.matmul_curve("float32"),
        "elementwise": calibration.elementwise,
        "reduction": calibration.reduction,
    }
    for timing in profile.ops:
        fitted = curves[timing.kind].time_s(timing.work)
        # Exact where timings grow with work; a noisy dip is pooled with its neighbours.
        assert timing.seconds / 2 <= fitted <= timing.seconds * 2, timing
    for kind, curve in curves.items():
        measured = sorted({t.work for t in profile.ops if t.kind == kind})
        assert [work for work, _ in curve.points] == measured


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
