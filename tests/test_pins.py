"""User pins (`--pin`, `planner/pins.py`): the search honours each one, finds the best plan
among those that honour it, and says which pin rules every plan out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from conftest import stacked_mlp_model
from test_pipeshard import cluster

from cli.arguments import parse_pins
from cli.main import main
from planner.layers import cluster_layers
from planner.onnx_import import load_onnx
from planner.ops import cast_floats
from planner.options import PlanOptions
from planner.pins import Pins
from planner.pipeshard import search_pipelines
from planner.search import plan, with_pins
from planner.strategies import StrategyOptions
from plans.check import check_plan
from plans.errors import InfeasibleError, InputError
from plans.io import plan_from_json, plan_to_json
from plans.timeline import pipeline_timeline

BATCH = 64


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pins") / "stacked.onnx"
    onnx.save(stacked_mlp_model(8, 512), str(path))
    return path


@pytest.fixture(scope="module")
def graph(model_path: Path):  # type: ignore[no-untyped-def]
    return load_onnx(model_path, batch_size=BATCH)


# Two hosts of four GPUs, a slow link between them: pipelines pay, so pins change plans.
TWO_HOSTS = cluster(2, 4, 5e9)


def _plan(graph, **pins: object):  # type: ignore[no-untyped-def]
    return plan(graph, TWO_HOSTS, PlanOptions(microbatches=8, pins=Pins(**pins)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pins", "stages", "groups", "virtual"),
    [
        ({"pp": 4}, 4, 4, 1),
        ({"stages": 2}, 2, 2, 1),
        ({"pp": 1}, 1, 1, 1),
        ({"vp": 2}, None, None, 2),
        ({"pp": 2, "vp": 2}, 4, 2, 2),
        ({"stages": 8, "vp": 4}, 8, 2, 4),
    ],
)
def test_stage_pins_fix_the_pipeline_shape(graph, pins, stages, groups, virtual) -> None:  # type: ignore[no-untyped-def]
    found = _plan(graph, **pins)
    assert found.settings.virtual_stages == virtual
    if stages is not None:
        assert len(found.stages) == stages
        assert len(found.stages) // found.settings.virtual_stages == groups
    assert dict(found.planner.options["pins"]) == pins  # type: ignore[arg-type]
    assert found.estimate.iteration_time_s == pytest.approx(pipeline_timeline(found).makespan_s)
    assert check_plan(found) == ()


@pytest.mark.parametrize(("dp", "tp"), [(None, 2), (2, None), (2, 2), (1, 4), (4, 1)])
def test_mesh_pins_fix_every_stage_logical_mesh(graph, dp, tp) -> None:  # type: ignore[no-untyped-def]
    found = _plan(graph, dp=dp, tp=tp)
    for stage in found.stages:
        rows, columns = stage.logical_mesh
        assert dp in (None, rows) and tp in (None, columns)
    # The batch goes on the data-parallel axis, as in Megatron-LM.
    assert found.planner.options["force_batch_dim_to_mesh_dim"] == 0


def test_microbatch_and_recompute_pins(graph) -> None:  # type: ignore[no-untyped-def]
    found = plan(graph, TWO_HOSTS, PlanOptions(pins=Pins(microbatch=4, recompute="full")))
    assert found.settings.microbatches == BATCH // 4
    assert {stage.recompute for stage in found.stages} == {"full"}


def test_the_unpinned_search_is_the_best_over_every_pinned_stage_count(graph) -> None:  # type: ignore[no-untyped-def]
    # Oracle: the search over every pipeline equals the least, over pinned group counts, of the
    # searches restricted to that count (before the chosen stages are re-solved whole).
    typed = cast_floats(graph, "float16")
    layers = cluster_layers(typed)
    options = PlanOptions(microbatches=8)

    def best_s(pins: Pins) -> float:
        choice, _ = search_pipelines(typed, TWO_HOSTS, replace(options, pins=pins), layers)
        return choice.objective_s if choice is not None else float("inf")

    free = best_s(Pins())
    pinned = [best_s(Pins(pp=groups)) for groups in range(1, 9)]
    assert free == pytest.approx(min(pinned), rel=1e-12)
    assert all(value >= free * (1 - 1e-12) for value in pinned)


def test_a_pin_that_fits_nothing_is_named(graph) -> None:  # type: ignore[no-untyped-def]
    # 48 MiB GPUs, no ZeRO: the whole model's Adam state (8 layers of 2 x 512 x 2048 weights,
    # 16 bytes each: 128 MiB) fits when split, never replicated on every GPU (tp=1 in one stage).
    small = replace(TWO_HOSTS, gpu=replace(TWO_HOSTS.gpu, memory_bytes=48 * 2**20))
    options = PlanOptions(microbatches=8, strategy=StrategyOptions(zero="off"))
    assert plan(graph, small, options).estimate.peak_memory_bytes <= 0.9 * 48 * 2**20
    with pytest.raises(InfeasibleError, match="under --pin tp=1 --pin pp=1"):
        plan(graph, small, replace(options, pins=Pins(tp=1, pp=1)))


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        (Pins(tp=3), "--pin tp=3: expected a divisor of the 4 GPUs of a host"),
        (Pins(microbatch=5), "--pin microbatch=5: expected a divisor of the batch size 64"),
        (Pins(dp=2, tp=2, pp=4), "--pin dp x tp x pp: expected the cluster's 8 GPUs"),
        (Pins(stages=6, vp=4), "--pin stages=6: expected a multiple of --pin vp=4"),
        (Pins(stages=6, pp=4), "--pin stages=6: expected a multiple of --pin pp=4"),
        (Pins(stages=16), "--pin stages: expected at most the model's 8 layers"),
        (Pins(pp=16), "--pin pp=16: expected at most the cluster's 8 GPUs"),
    ],
)
def test_pins_that_cannot_hold_are_bad_input(graph, pins: Pins, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as raised:
        plan(graph, TWO_HOSTS, PlanOptions(microbatches=8, pins=pins))
    assert str(raised.value).startswith(message)


def test_pins_that_contradict_a_flag_are_bad_input() -> None:
    options = PlanOptions(microbatches=8, pins=Pins(microbatch=4))
    with pytest.raises(InputError, match="--pin microbatch=4"):
        with_pins(options, BATCH)  # 64 / 8 = 8 samples, not 4
    with pytest.raises(InputError, match="--pin recompute=none"):
        with_pins(PlanOptions(recompute="full", pins=Pins(recompute="none")), BATCH)
    with pytest.raises(InputError, match="--pin vp=2"):
        with_pins(PlanOptions(schedule="gpipe", pins=Pins(vp=2)), BATCH)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["tp=8", "tp=4"], "--pin tp: expected one value"),
        (["width=2"], "--pin: expected NAME=VALUE with NAME one of dp, tp, pp, vp"),
        (["tp"], "--pin: expected NAME=VALUE"),
        (["tp=two"], "--pin tp: expected a positive integer"),
        (["tp=0"], "--pin tp: expected a positive integer"),
        (["tp=" + "9" * 5000], "--pin tp: expected at most"),
        (["recompute=some"], "--pin recompute: expected one of auto, none, selective, full"),
    ],
)
def test_pin_flags_are_parsed_strictly(flags: list[str], message: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_pins(flags)
    assert str(raised.value).startswith(message)


def test_pins_on_the_command_line(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(
        "name: two-hosts\nhosts: 2\ngpus_per_host: 4\n"
        "gpu: {name: test, memory: 16 GiB, flops: {float16: 100 TFLOP/s, float32: 20 TFLOP/s},"
        " memory_bandwidth: 1 TB/s}\n"
        "links:\n  intra_host: {bandwidth: 150 GB/s, latency: 5 us}\n"
        "  inter_host: {bandwidth: 5 GB/s, latency: 20 us}\n"
    )
    out = tmp_path / "plan.json"
    base = [str(model_path), str(cluster_file), "--batch-size", str(BATCH), "--jobs", "1"]
    assert main([*base, "--pin", "pp=2", "--pin", "tp=2", "-o", str(out)]) == 0
    text = out.read_text()
    written = json.loads(text)
    assert plan_to_json(plan_from_json(text, str(out))) == text  # the pins survive a round trip
    assert written["planner"]["options"]["pins"] == {"pp": 2, "tp": 2}
    assert [s["logical_mesh"][1] for s in written["stages"]] == [2, 2]
    out.unlink()
    assert main([*base, "--pin", "tp=3", "-o", str(out)]) == 2
    assert "--pin tp=3: expected a divisor of the 4 GPUs of a host" in capsys.readouterr().err
    assert not out.exists()


def test_intra_only_takes_mesh_pins_and_refuses_stage_pins(graph) -> None:  # type: ignore[no-untyped-def]
    options = PlanOptions(search="intra-only", microbatches=8)
    found = plan(graph, TWO_HOSTS, replace(options, pins=Pins(dp=2, tp=4)))
    assert found.stages[0].logical_mesh == (2, 4)
    with pytest.raises(InputError, match="--pin pp=2: expected 1 with --intra-only"):
        plan(graph, TWO_HOSTS, replace(options, pins=Pins(pp=2)))
    with pytest.raises(InputError, match="--pin dp=3 --pin tp=4"):
        plan(graph, TWO_HOSTS, replace(options, pins=Pins(dp=3, tp=4)))
