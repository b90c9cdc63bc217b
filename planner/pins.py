"""User pins: parts of the parallel configuration the user fixes and the search must honour.

People constrain a tool they half-trust (`alpa-plan MODEL CLUSTER --pin tp=8 --pin pp=4`); the
search then looks only among plans with those values and either finds the best of them or says
which pin rules every plan out. Each pin, in the terms of the plan it constrains:

- ``dp=N``, ``tp=N``: every stage's logical mesh is (dp, tp), the batch split over its first
  axis (data parallelism) and the second left to the ILP's model splits (tensor parallelism;
  Megatron-LM's column-then-row splits where it chooses them). A pinned ``tp`` must divide the
  GPUs of a host (the tensor-parallel axis stays inside a host, as in Megatron-LM); a stage's
  GPUs are dp x tp, so a pin leaves only the submeshes of a multiple of it.
- ``pp=N``: N device groups in the pipeline (stages, without interleaving).
- ``vp=N``: N chunks of layers per device group (interleaved 1F1B, Megatron-LM's virtual
  pipeline stages); ``vp=1`` rules interleaving out.
- ``stages=N``: N pipeline stages in all (pp x vp).
- ``microbatch=N``: N samples per microbatch, over all of a stage's data-parallel replicas
  (the plan's microbatches are the batch divided by N; `alpa-plan evaluate --microbatch` counts
  per replica, as Megatron-LM does).
- ``recompute=none|selective|full|auto``: as ``--recompute``, for every stage.

Pins are checked against the model and cluster before any search (`pin_problem`,
`one_stage_problem`, naming the pin); a pinned search that finds no plan that fits says so with
the pins in force (`planner/pipeshard.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from plans.errors import InputError

# The pins that take a count, and the one that takes a recompute mode.
COUNT_PINS = ("dp", "tp", "pp", "vp", "stages", "microbatch")
PIN_NAMES = (*COUNT_PINS, "recompute")


@dataclass(frozen=True)
class Pins:
    dp: int | None = None
    tp: int | None = None
    pp: int | None = None
    vp: int | None = None
    stages: int | None = None
    microbatch: int | None = None
    recompute: str | None = None

    def __post_init__(self) -> None:
        for name in COUNT_PINS:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--pin {name}={value}", "", "a positive count", str(value))

    @property
    def given(self) -> dict[str, int | str]:
        """The pins set, by name, in `PIN_NAMES` order."""
        found = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in found.items() if value is not None}

    def describe(self) -> str:
        """The pins as the command line spells them (`--pin tp=8 --pin pp=4`)."""
        return " ".join(f"--pin {name}={value}" for name, value in self.given.items())

    @property
    def pins_mesh(self) -> bool:
        return self.dp is not None or self.tp is not None

    def logical_shapes(
        self, submesh: tuple[int, int], gpus_per_host: int
    ) -> tuple[tuple[int, int], ...]:
        """The logical meshes (dp, tp) of `submesh` the mesh pins allow: every factorisation of
        its GPUs whose second axis divides a host's GPUs, with the pinned values (empty when the
        submesh has none). Only called when `pins_mesh`."""
        devices = submesh[0] * submesh[1]
        return tuple(
            (dp, devices // dp)
            for dp in range(1, devices + 1)
            if devices % dp == 0
            and gpus_per_host % (devices // dp) == 0
            and self.dp in (None, dp)
            and self.tp in (None, devices // dp)
        )

    @property
    def plain_stages(self) -> int | None:
        """The stage count a pipeline without interleaving must have (None: any)."""
        return self.stages if self.stages is not None else self.pp

    def allows_interleaved(self, groups: int, virtual_stages: int) -> bool:
        """Whether `groups` device groups of `virtual_stages` chunks each honour the pins."""
        return (
            self.vp in (None, virtual_stages)
            and self.pp in (None, groups)
            and self.stages in (None, groups * virtual_stages)
        )

    @property
    def allows_one_stage(self) -> bool:
        """Whether the whole model as one stage honours the pins."""
        return self.vp in (None, 1) and self.stages in (None, 1) and self.pp in (None, 1)


def one_stage_problem(pins: Pins) -> InputError | None:
    """Why `pins` cannot describe a one-stage plan (`--intra-only`), naming the pin."""
    for name in ("pp", "vp", "stages"):
        value = getattr(pins, name)
        if value not in (None, 1):
            return InputError(
                f"--pin {name}={value}", "", "1 with --intra-only (one stage)", str(value)
            )
    return None


def pin_problem(pins: Pins, layers: int, num_devices: int, gpus_per_host: int) -> InputError | None:
    """Why `pins` cannot describe any pipeline of a model of `layers` layers on a cluster of
    `num_devices` GPUs, naming the pin; None if some plan may honour them (the search decides
    whether one fits). The microbatch pin is checked where it is applied
    (`planner/search.py: with_pins`)."""
    if pins.tp is not None and gpus_per_host % pins.tp:
        return InputError(
            f"--pin tp={pins.tp}", "", f"a divisor of the {gpus_per_host} GPUs of a host",
            str(pins.tp),
        )  # fmt: skip
    for name in ("dp", "tp", "pp"):
        value = getattr(pins, name)
        if value is not None and value > num_devices:
            return InputError(
                f"--pin {name}={value}", "", f"at most the cluster's {num_devices} GPUs", str(value)
            )
    if pins.dp is not None and pins.tp is not None and pins.pp is not None:
        gpus = pins.dp * pins.tp * pins.pp
        if gpus != num_devices:
            return InputError(
                "--pin dp x tp x pp", "", f"the cluster's {num_devices} GPUs",
                f"{pins.dp} x {pins.tp} x {pins.pp} = {gpus}",
            )  # fmt: skip
    if pins.stages is not None and pins.vp is not None and pins.stages % pins.vp:
        return InputError(
            f"--pin stages={pins.stages}", "", f"a multiple of --pin vp={pins.vp}", str(pins.stages)
        )
    if pins.stages is not None and pins.pp is not None:
        vp = pins.vp if pins.vp is not None else pins.stages // pins.pp
        if pins.pp * vp != pins.stages:
            return InputError(
                f"--pin stages={pins.stages}", "",
                f"pp x vp = {pins.pp} x {vp}" if pins.vp is not None
                else f"a multiple of --pin pp={pins.pp}",
                str(pins.stages),
            )  # fmt: skip
    stages = pins.stages or (pins.pp or 1) * (pins.vp or 1)
    if stages > layers:
        name = "stages" if pins.stages is not None else ("pp" if pins.vp is None else "pp x vp")
        return InputError(
            f"--pin {name}", "", f"at most the model's {layers} layers as stages", str(stages)
        )
    return None
