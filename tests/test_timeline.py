"""The simulated schedule (plans/timeline.py): answers worked out by hand."""

from __future__ import annotations

import pytest

from plans.timeline import CutModel, PipelineModel, StageModel, simulate


def _stage(forward_s: float, backward_s: float, sync_s: float = 0.0, step_s: float = 0.0,
           hosts: tuple[int, ...] = (0,), layers: int = 1) -> StageModel:  # fmt: skip
    return StageModel(forward_s, backward_s, sync_s, step_s, layers, hosts)


def _two_stages(f: float, b: float, latency_s: float, microbatches: int, schedule: str) -> float:
    """Two stages on one host (the cut is an NVLink port each way: no sharing between the
    directions), each with forward f and backward b, the cut `latency_s` each way."""
    model = PipelineModel(
        stages=(_stage(f, b), _stage(f, b)),
        cuts=(CutModel(latency_s, latency_s, inter_host=False),),
        microbatches=microbatches,
        schedule=schedule,
        training=True,
    )
    return simulate(model).makespan_s


@pytest.mark.parametrize("microbatches", [2, 4, 8])
def test_1f1b_two_stages_latency_much_shorter_than_a_block(microbatches: int) -> None:
    # f = 1, b = 2, L = 0.25. Stage 0 holds 2 microbatches, so microbatch m + 2 enters one
    # round trip after m: F on both stages, B on both, the cut twice: 2 (f + b) + 2 L per two
    # microbatches, a period of f + b + L. Traced by hand, stage 1 ends B_{2j} at
    # (2j+2) f + (2j+1) (L + b) and B_{2j+1} at (2j+3) f + (2j+1) L + (2j+2) b; the last
    # gradient crosses back (L) and stage 0 runs its backward (b):
    #     makespan = (B + 1)(f + b) + B L.
    f, b, latency = 1.0, 2.0, 0.25
    expected = (microbatches + 1) * (f + b) + microbatches * latency
    assert _two_stages(f, b, latency, microbatches, "1f1b") == pytest.approx(expected)


@pytest.mark.parametrize("microbatches", [2, 4, 8])
def test_1f1b_two_stages_latency_much_longer_than_a_block(microbatches: int) -> None:
    # f = 1, b = 2, L = 10 > f + b. Stage 0's second forward now queues behind the first on
    # the link (each activation occupies it for L), and each stage waits for the cut more than
    # it computes. Traced by hand, stage 1 ends B_{2j} at (2j+2) f + (2j+1) (L + b) and
    # B_{2j+1} at (2j+2)(f + L) + (2j+1) b; stage 0's last backward waits for its gradient
    # (one more L) and takes b:
    #     makespan = B (f + b) + (B + 1) L.
    f, b, latency = 1.0, 2.0, 10.0
    expected = microbatches * (f + b) + (microbatches + 1) * latency
    assert _two_stages(f, b, latency, microbatches, "1f1b") == pytest.approx(expected)


def test_without_latency_1f1b_and_gpipe_take_b_plus_s_minus_1_blocks() -> None:
    # The textbook answer for equal stages: (B + S - 1)(f + b).
    for schedule in ("1f1b", "gpipe"):
        assert _two_stages(1.0, 2.0, 0.0, 6, schedule) == pytest.approx(7 * 3.0)


def test_a_deeper_warm_up_hides_the_round_trip() -> None:
    # With w extra warm-up forwards stage 0 holds 2 + w microbatches (the last stage still
    # one): the period is max(f + b, (2 (f + b) + 2 L) / (2 + w)); with w = 1 and L = 0.25,
    # f + b = 3 wins, and the iteration is shorter than with the plain warm-up.
    f, b, latency, microbatches = 1.0, 2.0, 0.25, 8
    plain = _two_stages(f, b, latency, microbatches, "1f1b")
    deeper = simulate(
        PipelineModel(
            (_stage(f, b), _stage(f, b)),
            (CutModel(latency, latency, inter_host=False),),
            microbatches,
            "1f1b",
            True,
            warmup_extra=1,
        )
    ).makespan_s
    assert deeper < plain
    # Now stage 1 is the bottleneck and never waits after its first forward: it starts at
    # f + L, runs 8 (f + b), and the last gradient crosses back and stage 0 runs it.
    assert deeper == pytest.approx(f + latency + microbatches * (f + b) + latency + b)


def test_a_gradient_sync_hides_behind_the_last_backward_but_its_last_bucket() -> None:
    # One stage, 4 layers, B = 2: F F B B (GPipe order is the same for one stage). The sync
    # (2 s) starts with the last backward (at f + f + b = 4) and lasts 2 s on its own, but its
    # last bucket (one layer's share, 0.5 s) can only go once that backward has ended (at 6):
    # it ends at max(4 + 2, 6 + 0.5) = 6.5; then the step (0.25 s).
    model = PipelineModel(
        stages=(_stage(1.0, 2.0, sync_s=2.0, step_s=0.25, layers=4),),
        cuts=(),
        microbatches=2,
        schedule="1f1b",
        training=True,
    )
    assert simulate(model).makespan_s == pytest.approx(6.75)


def test_syncs_of_stages_that_share_a_host_link_queue() -> None:
    # Two stages, each spanning hosts 0 and 1 (so each sync crosses hosts), B = 1, no cut
    # latency, f = b = 1, sync 3 s each over 3 layers (last bucket 1 s), no step. Stage 1
    # (last) runs F0 [1, 2], B0 [2, 3], its sync [2, max(5, 3 + 1)] holds both hosts' links;
    # stage 0's B0 is [3, 4]; its sync waits for the links until 5 and ends at 8. Apart
    # (different hosts) it would run [3, max(6, 4 + 1)]: 6.
    def makespan(hosts_of_stage_0: tuple[int, ...]) -> float:
        model = PipelineModel(
            stages=(
                _stage(1.0, 1.0, sync_s=3.0, hosts=hosts_of_stage_0, layers=3),
                _stage(1.0, 1.0, sync_s=3.0, hosts=(0, 1), layers=3),
            ),
            cuts=(CutModel(0.0, 0.0, inter_host=False),),
            microbatches=1,
            schedule="1f1b",
            training=True,
        )
        return simulate(model).makespan_s

    assert makespan((0, 1)) == pytest.approx(8.0)
    assert makespan((2, 3)) == pytest.approx(6.0)


def test_inference_runs_forwards_only() -> None:
    # Two stages, forward 1 s each, cut 0.5 s, B = 3: stage 1 finishes microbatch m at
    # 1 + 0.5 + 1 + m (the cut keeps up), so 4.5 s.
    model = PipelineModel(
        stages=(_stage(1.0, 0.0), _stage(1.0, 0.0)),
        cuts=(CutModel(0.5, 0.0, inter_host=False),),
        microbatches=3,
        schedule="1f1b",
        training=False,
    )
    assert simulate(model).makespan_s == pytest.approx(4.5)


@pytest.mark.parametrize(
    "groups, virtual_stages, microbatches", [(2, 2, 4), (2, 2, 8), (4, 2, 8), (3, 2, 6), (4, 4, 16)]
)
def test_interleaving_shrinks_the_bubble_by_the_virtual_stages(
    groups: int, virtual_stages: int, microbatches: int
) -> None:
    # Narayanan et al., SC'21, section 2.2: with equal chunks of forward f and backward b (a
    # whole stage's work split in v) and free transfers, the bubble is (G - 1)(f + b), v times
    # smaller than that of 1F1B with whole stages: makespan = B v (f + b) + (G - 1)(f + b).
    f, b = 1.0, 2.0
    count = groups * virtual_stages
    model = PipelineModel(
        stages=tuple(_stage(f, b) for _ in range(count)),
        cuts=tuple(CutModel(0.0, 0.0, inter_host=False) for _ in range(count - 1)),
        microbatches=microbatches,
        schedule="1f1b",
        training=True,
        virtual_stages=virtual_stages,
    )
    timeline = simulate(model)
    expected = (microbatches * virtual_stages + groups - 1) * (f + b)
    assert timeline.makespan_s == pytest.approx(expected)
    whole = PipelineModel(
        stages=tuple(_stage(virtual_stages * f, virtual_stages * b) for _ in range(groups)),
        cuts=tuple(CutModel(0.0, 0.0, inter_host=False) for _ in range(groups - 1)),
        microbatches=microbatches,
        schedule="1f1b",
        training=True,
    )
    bubble = simulate(whole).makespan_s - microbatches * virtual_stages * (f + b)
    assert bubble == pytest.approx(virtual_stages * (groups - 1) * (f + b))
    assert len(timeline.lanes) == groups
    assert timeline.lanes[0] == "stages " + ",".join(str(c * groups) for c in range(virtual_stages))


def test_an_interleaved_group_steps_after_all_its_syncs() -> None:
    # 2 groups x 2 virtual stages, no transfers, B = 2, f = 1, b = 2, every stage a sync of 10
    # (longer than everything after it) and a step of 1. A group's two syncs share its
    # devices: the second waits for the first; its steps follow the later, one after another.
    model = PipelineModel(
        stages=tuple(_stage(1.0, 2.0, sync_s=10.0, step_s=1.0) for _ in range(4)),
        cuts=tuple(CutModel(0.0, 0.0, inter_host=False) for _ in range(3)),
        microbatches=2,
        schedule="1f1b",
        training=True,
        virtual_stages=2,
    )
    timeline = simulate(model)
    for group in range(2):
        lane = timeline.lanes[group]
        syncs = sorted((s for s in timeline.blocks if s.lane == lane and s.kind == "sync"),
                       key=lambda s: s.start_s)  # fmt: skip
        steps = sorted((s for s in timeline.blocks if s.lane == lane and s.kind == "step"),
                       key=lambda s: s.start_s)  # fmt: skip
        assert len(syncs) == 2 and len(steps) == 2
        assert syncs[1].start_s >= syncs[0].end_s
        assert steps[0].start_s == pytest.approx(syncs[1].end_s)
        assert steps[1].start_s == pytest.approx(steps[0].end_s)
