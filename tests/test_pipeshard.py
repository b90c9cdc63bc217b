"""The full search (layers, stage/submesh DP, intra-op per stage) on models with known answers."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import onnx
import pytest
from conftest import CLUSTERS, MODELS, stacked_mlp_model
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cost_models.cluster import Cluster, Gpu, Link
from cost_models.cluster_yaml import load_cluster
from cost_models.mesh import logical_mesh
from planner import interleaving
from planner.graph import split_batch
from planner.intra_op import solve_stage
from planner.layers import cluster_layers
from planner.memory_bound import memory_lower_bound_bytes
from planner.onnx_import import load_onnx
from planner.ops import cast_floats
from planner.options import PlanOptions
from planner.pipeshard import _search_count
from planner.placement import Start, cut_link, fits_at, place_stages
from planner.plan_assembly import build_transfers, stage_from_sharding
from planner.search import plan
from planner.shard_parallel import plan_intra_only
from planner.stage_costs import StageCostTable
from plans.check import check_plan
from plans.errors import InfeasibleError, InputError
from plans.io import plan_from_json, plan_to_json
from plans.plan import Plan
from plans.timeline import pipeline_timeline

GiB = 2**30


def cluster(hosts: int, gpus: int, inter_bandwidth: float, memory: int = 16 * GiB) -> Cluster:
    return Cluster(
        name="test",
        hosts=hosts,
        gpus_per_host=gpus,
        gpu=Gpu("gpu", memory, (("float16", 100e12), ("float32", 20e12)), 1e12),
        intra_host=Link(150e9, 5e-6),
        inter_host=Link(inter_bandwidth, 20e-6),
    )


def stacked(tmp_path: Path, layers: int, hidden: int, batch: int) -> Path:
    path = tmp_path / "stacked.onnx"
    onnx.save(stacked_mlp_model(layers, hidden), str(path))
    return path


def test_layers_follow_the_exporter_name_scopes() -> None:
    graph = load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=1)
    layers = cluster_layers(graph)
    assert [layer.name for layer in layers] == [f"transformer.h.{i}" for i in range(24)]
    assert layers[0].start == 0 and layers[-1].stop == len(graph.ops)
    assert all(a.stop == b.start for a, b in itertools.pairwise(layers))


def test_requested_layer_count_balances_flops() -> None:
    graph = load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=1)
    layers = cluster_layers(graph, 6)
    assert len(layers) == 6
    flops = [sum(op.flops for op in graph.ops[layer.start : layer.stop]) for layer in layers]
    mean = sum(flops) / 6
    assert max(flops) <= 1.5 * mean


def test_slow_inter_host_link_pipelines_across_hosts_and_shards_inside(tmp_path: Path) -> None:
    # Big weights, 8 Gbit/s between hosts: data parallelism across hosts would all-reduce a
    # gigabyte of gradients over the slow link every iteration, tensor parallelism across hosts
    # would all-reduce activations over it in every layer; a pipeline sends one activation per
    # microbatch across it (0.15 ms each way, against 0.5 ms of compute per stage). At 1 Gbit/s
    # that hop costs 2.1 ms each way and one host alone is faster.
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=4096, batch=512), batch_size=512)
    result = plan(graph, cluster(2, 4, 1e9), PlanOptions(microbatches=8))
    assert len(result.stages) >= 2
    hosts_used = set()
    for stage in result.stages:
        hosts = {host for host, _ in stage.devices}
        assert len(hosts) == 1  # no stage spans the slow link
        hosts_used |= hosts
        weights = [spec for name, spec in stage.shardings.items() if ".up" in name]
        assert weights and all(spec != "RR" for spec in weights)  # tensor parallel inside
    assert hosts_used == {0, 1}


def test_fast_link_and_small_model_choose_one_data_parallel_stage(tmp_path: Path) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=256, batch=16384), batch_size=16384)
    result = plan(graph, cluster(2, 4, 400e9), PlanOptions(microbatches=1))
    (stage,) = result.stages
    assert len(stage.devices) == 8
    # The batch is split over all eight GPUs; every weight is replicated.
    whole_mesh = {(1, 8): "S1R", (8, 1): "S0R", (2, 4): "S01R", (4, 2): "S01R"}
    assert stage.shardings["x"] == whole_mesh[stage.logical_mesh]
    assert all(spec == "RR" for name, spec in stage.shardings.items() if name.startswith("layers"))
    assert result.transfers == ()


def test_too_big_for_data_parallel_still_plans_within_budget(tmp_path: Path) -> None:
    # 4 layers x 2 x 4096 x 16384 float16 weights = 1 GiB of weights, 8 GiB of Adam state:
    # more than a 4 GiB GPU holds unless the model is sharded or pipelined.
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=4096, batch=64), batch_size=64)
    small = cluster(2, 4, 100e9, memory=4 * GiB)
    result = plan(graph, small, PlanOptions(microbatches=4))
    budget = 0.9 * 4 * GiB
    assert all(stage.memory.peak_bytes <= budget for stage in result.stages)
    assert result.estimate.peak_memory_bytes <= budget


def test_gpipe_keeps_every_microbatch(tmp_path: Path) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=64), batch_size=64)
    one_f_one_b = plan(graph, cluster(2, 4, 1e9), PlanOptions(microbatches=8))
    gpipe = plan(graph, cluster(2, 4, 1e9), PlanOptions(microbatches=8, schedule="gpipe"))
    assert gpipe.settings.schedule == "gpipe"
    if len(gpipe.stages) > 1 and len(one_f_one_b.stages) == len(gpipe.stages):
        assert (
            gpipe.stages[0].memory.activations_bytes
            >= one_f_one_b.stages[0].memory.activations_bytes
        )


def test_interleaving_wins_where_the_bubble_dominates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 equal layers, 4 GPUs, B = 4: 1F1B on whole stages idles (G - 1)(f + b) of a stage's
    # block, interleaving v chunks per GPU v times less (tests/test_timeline.py), for v times
    # the transfers, which the 50 GB/s link carries behind compute.
    graph = load_onnx(stacked(tmp_path, layers=8, hidden=1024, batch=2048), batch_size=2048)
    one_host = Cluster(
        name="test",
        hosts=1,
        gpus_per_host=4,
        gpu=Gpu("gpu", 16 * GiB, (("float16", 100e12), ("float32", 20e12)), 1e12),
        intra_host=Link(50e9, 5e-6),
        inter_host=Link(50e9, 20e-6),
    )
    found = plan(graph, one_host, PlanOptions(microbatches=4))
    v = found.settings.virtual_stages
    assert v > 1 and found.settings.schedule == "1f1b"
    groups = len(found.stages) // v
    assert groups * v == len(found.stages)
    for stage in found.stages:
        assert stage.devices == found.stages[stage.index % groups].devices
    assert check_plan(found) == ()
    text = plan_to_json(found)
    assert plan_to_json(plan_from_json(text, "plan.json")) == text
    assert found.estimate.iteration_time_s == pytest.approx(pipeline_timeline(found).makespan_s)
    for g in range(groups):  # each stage reports the peak of the devices it shares
        shared = found.stages[g::groups]
        state = sum(s.memory.parameters_bytes + s.memory.gradients_bytes for s in shared)
        assert all(s.memory.peak_bytes == shared[0].memory.peak_bytes for s in shared)
        assert shared[0].memory.peak_bytes >= state + sum(s.memory.optimizer_bytes for s in shared)
    monkeypatch.setattr(interleaving, "VIRTUAL_STAGES", ())
    plain = plan(graph, one_host, PlanOptions(microbatches=4))
    assert plain.settings.virtual_stages == 1
    assert found.estimate.iteration_time_s < plain.estimate.iteration_time_s


def test_transfers_list_boundary_tensors(tmp_path: Path) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=4096, batch=512), batch_size=512)
    result = plan(graph, cluster(2, 4, 1e9 / 8), PlanOptions(microbatches=8))
    assert len(result.transfers) == len(result.stages) - 1
    for transfer, stage in zip(result.transfers, result.stages[1:], strict=True):
        # The residual stream enters each later stage: one microbatch of 64 samples, float16.
        assert transfer.destination_stage == stage.index
        assert transfer.source_stage == stage.index - 1
        assert transfer.tensor == f"x{int(stage.layers[0].split('.')[1]) - 1}"
        assert transfer.size_bytes == 64 * 4096 * 2
        assert transfer.time_s > 0


def test_stages_are_placed_in_order_where_they_fit() -> None:
    devices = place_stages([(1, 2), (1, 2), (2, 4), (1, 4)], hosts=4, gpus_per_host=4)
    assert devices == (
        ((0, 0), (0, 1)),
        ((0, 2), (0, 3)),
        tuple((h, g) for h in (1, 2) for g in range(4)),
        tuple((3, g) for g in range(4)),
    )
    with pytest.raises(InfeasibleError):  # a whole host may not start inside one
        place_stages([(1, 2), (1, 4), (1, 2)], hosts=2, gpus_per_host=4)
    assert [fits_at(o, (1, 2), 4) for o in range(8)] == [True, True, True, False] * 2
    assert [fits_at(o, (1, 4), 4) for o in range(8)] == [True, False, False, False] * 2


def test_the_dp_and_the_plan_price_a_cut_over_the_same_link(tmp_path: Path) -> None:
    # 2 hosts x 4 GPUs, four stages of 2 GPUs (one layer each): the cuts after stages 0 and 2
    # stay inside a host (NVLink), the cut after stage 1 crosses hosts. The DP's candidates and
    # the plan's transfers price each cut over the same link.
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=64), batch_size=64)
    slow = cluster(2, 4, 1e9)
    typed = cast_floats(graph, "float16")
    layers = cluster_layers(typed)
    tensors = split_batch(typed.tensors, 4)
    settings = PlanOptions(microbatches=4).intra_op_settings(slow)
    table = StageCostTable(typed.subgraph(tensors=tensors), layers, slow, settings)
    table.solve_layers([(1, 2)])
    assert table.starts(0, (1, 2)) == (Start.ANYWHERE,)  # receives nothing
    assert table.starts(1, (1, 2)) == (Start.HOST_START, Start.INSIDE_HOST)
    assert table.starts(2, (2, 4)) == (Start.HOST_START,)
    x = 16 * 1024 * 2  # a layer's output, one microbatch of 16 samples in float16

    def hop(link: Link) -> float:  # over 2 receiving GPUs, and the gradient back
        return 2 * (x / 2 / link.bandwidth_bytes_per_s + link.latency_s)

    inside = table.range_plans(1, 1, (1, 2), Start.INSIDE_HOST)[0]
    across = table.range_plans(1, 1, (1, 2), Start.HOST_START)[0]
    assert inside.transfer_s == pytest.approx(hop(slow.intra_host))
    assert across.transfer_s == pytest.approx(hop(slow.inter_host))
    assert [cut_link(slow, offset) for offset in (2, 4, 6)] == [
        slow.intra_host, slow.inter_host, slow.intra_host,
    ]  # fmt: skip

    devices = place_stages([(1, 2)] * 4, 2, 4)
    mesh = logical_mesh(slow, (1, 2), (1, 2))
    stages = []
    for k, layer in enumerate(layers):
        ops = typed.subgraph(layer.start, layer.stop, tensors)
        sharding = solve_stage(ops, mesh, slow.gpu, settings)
        names = tuple(op.name for op in ops.ops)
        stages.append(
            stage_from_sharding(k, typed, sharding, slow, names, (layer.name,), devices[k])
        )
    transfers = build_transfers(typed, stages, slow, tensors, training=True)
    assert [t.destination_stage for t in transfers] == [1, 2, 3]
    assert [t.time_s for t in transfers] == pytest.approx(
        [hop(slow.intra_host), hop(slow.inter_host), hop(slow.intra_host)]
    )


def test_a_tensor_read_two_stages_later_is_relayed_by_the_stage_between(tmp_path: Path) -> None:
    result = plan(
        load_onnx(MODELS / "gpt-tiny.onnx", batch_size=16),
        cluster(1, 4, 100e9),
        PlanOptions(microbatches=2, layers=2),
    )
    for transfer in result.transfers:
        assert transfer.destination_stage == transfer.source_stage + 1


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_inference_plans(tmp_path: Path, objective: str) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=64), batch_size=64)
    result = plan(
        graph, cluster(2, 4, 1e9), PlanOptions(mode="infer", microbatches=4, objective=objective)
    )
    assert result.settings.mode == "infer"
    assert all(stage.time.backward_s == 0 for stage in result.stages)


@pytest.mark.parametrize("name", ["gpt-tiny", "gshard-moe-tiny", "wide-resnet-tiny", "mlp-tiny"])
def test_every_small_example_pipelines_on_16_gpus(name: str) -> None:
    graph = load_onnx(MODELS / f"{name}.onnx", batch_size=128)
    result = plan(graph, cluster(2, 8, 25e9 / 8), PlanOptions(microbatches=4))
    ops = [op for stage in result.stages for op in stage.ops]
    assert sorted(ops) == sorted(op.name for op in graph.ops)  # every op in exactly one stage
    devices = [d for stage in result.stages for d in stage.devices]
    assert sorted(devices) == [(h, g) for h in range(2) for g in range(8)]
    assert [layer.name for layer in result.layers] == [
        name for stage in result.stages for name in stage.layers
    ]


def test_remat_keeps_layer_inputs_only_and_pays_a_forward(tmp_path: Path) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=512), batch_size=512)
    small = cluster(1, 4, 100e9)
    typed = cast_floats(graph, "float16")
    layers = cluster_layers(typed)
    tensors = split_batch(typed.tensors, 4)
    ranges = {}
    for remat in (False, True):
        settings = PlanOptions(
            microbatches=4, recompute="full" if remat else "none"
        ).intra_op_settings(small)
        table = StageCostTable(typed.subgraph(tensors=tensors), layers, small, settings)
        ranges[remat] = table.range_plans(0, 3, (1, 4))[0]  # the whole model, unlimited memory
    plain, remat = ranges[False], ranges[True]
    # Kept per microbatch: the four layer inputs (64 x 1024 float16 each on each of 4 GPUs,
    # replicated or split) instead of every saved tensor; plus one layer rebuilt at a time.
    assert remat.kept_bytes < plain.kept_bytes
    assert remat.transient_bytes == max(
        s.activation_bytes
        for s in [table.layer_plans(k, (1, 4), plain.mesh.shape)[0].sharding for k in range(4)]
    )
    assert remat.activation_bytes(4) < plain.activation_bytes(4)
    assert remat.time_s > plain.time_s  # the forward runs again in the backward


def test_recomputation_is_chosen_per_stage_where_memory_needs_it(tmp_path: Path) -> None:
    # 8 layers, a 16384 batch, 192 MiB GPUs, 5 GB/s between the two hosts (a stage per host):
    # without recomputation the microbatches' activations force a slow pipeline, with it
    # everywhere every stage pays a second forward. In 1F1B the first stage holds more
    # microbatches than the last: the search recomputes there only, and beats both.
    # (At 256 MiB ZeRO-1's sharded optimizer state leaves room to recompute nowhere.)
    graph = load_onnx(stacked(tmp_path, layers=8, hidden=1024, batch=16384), batch_size=16384)
    tiny = cluster(2, 4, 5e9, memory=3 * GiB // 16)
    found = {
        mode: plan(graph, tiny, PlanOptions(microbatches=4, recompute=mode))
        for mode in ("auto", "none", "full")
    }
    auto = found["auto"]
    assert auto.estimate.iteration_time_s < found["none"].estimate.iteration_time_s
    assert auto.estimate.iteration_time_s < found["full"].estimate.iteration_time_s
    assert auto.stages[0].recompute == "full" and auto.stages[-1].recompute == "none"
    assert {s.recompute for s in found["none"].stages} == {"none"}
    assert {s.recompute for s in found["full"].stages} == {"full"}
    assert all(s.memory.peak_bytes <= 0.9 * tiny.gpu.memory_bytes for s in auto.stages)
    assert auto.estimate.iteration_time_s == pytest.approx(pipeline_timeline(auto).makespan_s)
    assert check_plan(auto) == ()


@settings(max_examples=6, deadline=None, derandomize=True)
# Once failed: the whole model as one stage, whose sync hides, was cut off in ILP terms.
@example(layers=4, batch=8192, memory_mib=192)
@given(
    layers=st.sampled_from([2, 4]),
    batch=st.sampled_from([2048, 8192, 16384]),
    memory_mib=st.sampled_from([192, 256, 512, 1024]),
)
def test_searching_recomputation_is_never_slower_than_either_choice_everywhere(
    layers: int, batch: int, memory_mib: int
) -> None:
    # auto's candidates hold every candidate of none and every useful one of selective and full,
    # so where the searches are exact its plan is at least as fast as each (and fits where any
    # does).
    with tempfile.TemporaryDirectory() as folder:
        graph = load_onnx(stacked(Path(folder), layers, 1024, batch), batch_size=batch)
    small = cluster(2, 2, 25e9, memory=memory_mib * 2**20)
    found: dict[str, Plan | None] = {}
    for mode in ("auto", "none", "selective", "full"):
        try:
            found[mode] = plan(graph, small, PlanOptions(microbatches=4, recompute=mode))
        except InfeasibleError:
            found[mode] = None
    auto = found["auto"]
    others = [p for p in (found["none"], found["selective"], found["full"]) if p is not None]
    assert (auto is None) == (not others)
    if auto is None:
        return
    proven = all(
        r.proven_optimal is not False for p in (auto, *others) for r in p.search.microbatches
    )
    if proven:
        best = min(p.estimate.iteration_time_s for p in others)
        assert auto.estimate.iteration_time_s <= best * (1 + 1e-9)


def test_where_memory_never_binds_the_search_recomputes_nothing(tmp_path: Path) -> None:
    # Every stage candidate holds every microbatch: recomputation would only add a forward, so
    # it is not even priced (the same layer ILPs as without it).
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=256, batch=64), batch_size=64)
    auto = plan(graph, cluster(2, 4, 25e9), PlanOptions(microbatches=4))
    none = plan(graph, cluster(2, 4, 25e9), PlanOptions(microbatches=4, recompute="none"))
    assert {s.recompute for s in auto.stages} == {"none"}
    assert auto.search.layer_ilps == none.search.layer_ilps
    same = plan_to_json(auto).replace('"recompute": "auto"', '"recompute": "none"')
    assert same == plan_to_json(none)


def test_remat_needs_the_full_search() -> None:
    graph = load_onnx(MODELS / "mlp-tiny.onnx", batch_size=8)
    with pytest.raises(InputError, match="--recompute"):
        plan(graph, cluster(1, 4, 100e9), PlanOptions(search="intra-only", recompute="full"))


def test_a_tied_embedding_is_held_once_per_stage() -> None:
    # gpt-tiny ties its token embedding (read by the Gather of layer 0) to the LM head (the
    # last MatMul of layer 1): each layer's own ILP pays for it; a stage of both pays once.
    graph = cast_floats(load_onnx(MODELS / "gpt-tiny.onnx", batch_size=16), "float16")
    layers = cluster_layers(graph)
    small = cluster(1, 4, 100e9)
    settings = PlanOptions(microbatches=1).intra_op_settings(small)
    table = StageCostTable(graph.subgraph(), layers, small, settings)
    whole = table.range_plans(0, 1, (1, 4))[0]
    each = [table.range_plans(k, k, (1, 4))[0] for k in (0, 1)]
    tied = 256 * 64  # vocabulary x hidden
    params, grads, optimizer = whole.repeated_state
    assert params == 2 * tied  # float16 weights, replicated on the 1x4 mesh
    assert whole.state_bytes == sum(p.state_bytes for p in each) - (params + grads + optimizer)
    assert whole.iteration_s < sum(p.iteration_s for p in each)


def _example_models() -> list[str]:
    import json

    return sorted(json.loads((MODELS / "models.json").read_text()))


@pytest.mark.parametrize("name", _example_models())
@pytest.mark.parametrize("hosts", [1, 8])
def test_every_example_model_plans_on_8_and_64_gpus_with_the_full_search(
    name: str, hosts: int
) -> None:
    graph = load_onnx(MODELS / f"{name}.onnx", batch_size=64)
    result = plan(graph, cluster(hosts, 8, 25e9 / 8, memory=80 * GiB), PlanOptions(microbatches=4))
    assert sorted(op for stage in result.stages for op in stage.ops) == sorted(
        op.name for op in graph.ops
    )
    assert len({device for stage in result.stages for device in stage.devices}) == 8 * hosts
    assert all(stage.memory.peak_bytes <= 0.9 * 80 * GiB for stage in result.stages)
    # The estimate is the simulated makespan of the plan as written (plans/timeline.py).
    makespan_s = pipeline_timeline(result).makespan_s
    assert result.estimate.iteration_time_s == pytest.approx(makespan_s, rel=1e-3)


@pytest.mark.parametrize(
    ("name", "microbatches"),
    [("wide-resnet-tiny", 2), ("bert-base", 1), ("gshard-moe-tiny", 2), ("gpt-tiny", 4)],
)
def test_full_search_is_never_slower_than_one_stage_on_the_whole_cluster(
    name: str, microbatches: int
) -> None:
    # The table composes single-layer ILPs and charges the resharding between them; for these
    # models on one DGX H100 that made the DP prefer pipelines 1.07x (bert-base, B=1) to 2.4x
    # (wide-resnet-tiny, B=2) slower than ShardParallel, which the search also covers. The
    # whole-model ILP (planner/polish.py: exact_one_stage) restores the guarantee.
    cluster = load_cluster(CLUSTERS / "dgx-h100.yaml", hosts=1)
    graph = load_onnx(MODELS / f"{name}.onnx", batch_size=16)
    options = PlanOptions(microbatches=microbatches)
    searched = plan(graph, cluster, options)
    shard_parallel = plan_intra_only(graph, cluster, options)
    assert searched.estimate.iteration_time_s <= shard_parallel.estimate.iteration_time_s * (
        1 + 1e-9
    )
    (record,) = searched.search.microbatches
    if name == "wide-resnet-tiny":
        assert record.one_stage_solved_whole and len(searched.stages) == 1


def test_memory_lower_bound_known_answer(tmp_path: Path) -> None:
    # 2 layers, hidden 64, float16 Adam: 2 x (64 x 256 + 256 x 64) weights at 16 bytes each;
    # one microbatch of 8 keeps layer 0's input x (8 x 64) and each layer's Relu output
    # (8 x 256) at 2 bytes (the MatMuls' saved inputs are those buffers; Add keeps nothing,
    # and layer 1's input x0 is saved by no op of layer 0, as the layer ILPs charge it).
    graph = load_onnx(stacked(tmp_path, layers=2, hidden=64, batch=32), batch_size=32)
    typed = cast_floats(graph, "float16")
    settings = PlanOptions(microbatches=4).intra_op_settings(cluster(1, 2, 1e9))
    bound = memory_lower_bound_bytes(
        typed.subgraph(tensors=split_batch(typed.tensors, 4)), cluster_layers(typed), settings
    )
    assert bound == 16 * 2 * 2 * 64 * 256 + 2 * (8 * 64 + 2 * 8 * 256)
    inference = PlanOptions(mode="infer", microbatches=4).intra_op_settings(cluster(1, 2, 1e9))
    assert (
        memory_lower_bound_bytes(
            typed.subgraph(tensors=split_batch(typed.tensors, 4)), cluster_layers(typed), inference
        )
        == 2 * 2 * 64 * 256 * 2
    )


def test_counts_the_memory_bound_skips_fit_no_pipeline(tmp_path: Path) -> None:
    # Oracle: at every count, when the bound exceeds what the GPUs hold together, the full
    # search at that count (cost table, DP, whole-model ILP) finds nothing either.
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=65536), batch_size=65536)
    typed = cast_floats(graph, "float16")
    small = cluster(1, 2, 100e9, memory=GiB)
    layers = cluster_layers(typed)
    skipped, found = [], []
    for count in (1, 2, 4, 8, 16):
        options = PlanOptions(microbatches=count, recompute="none")
        settings = options.intra_op_settings(small)
        model = typed.subgraph(tensors=split_batch(typed.tensors, count))
        bound = memory_lower_bound_bytes(model, layers, settings)
        choice, _ = _search_count(
            model, small, options, layers, settings, ((1, 1), (1, 2)), {}, None, None, 1
        )
        if bound > small.num_devices * settings.memory_budget_bytes:
            skipped.append(count)
            assert choice is None, count
        elif choice is not None:
            found.append(count)
    assert skipped and found  # both sides of the bound occur


def test_search_records_counts_skipped_by_the_memory_bound(tmp_path: Path) -> None:
    graph = load_onnx(stacked(tmp_path, layers=4, hidden=1024, batch=65536), batch_size=65536)
    result = plan(graph, cluster(1, 2, 100e9, memory=GiB), PlanOptions(recompute="none"))
    skipped = [r for r in result.search.microbatches if r.memory_lower_bound_bytes is not None]
    assert skipped and all(r.status == "infeasible" for r in skipped)
    assert result.estimate.peak_memory_bytes <= 0.9 * GiB
