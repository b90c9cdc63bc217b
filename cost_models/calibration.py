"""Measured op costs: curves fitted to what `alpa-plan profile` timed on a device.

A `Calibration` replaces the datasheet roofline (`cost_models.compute.Roofline`) with curves
measured on the hardware, and may replace the cluster's link figures with measured ones. Pure:
no I/O; `cost_models.cluster_yaml` reads and writes the file, `executor.profile` measures.

Curves. Each is the time of ONE op as a function of its work, fitted to timings:

- ``matmul[dtype]``: seconds versus FLOPs of a contraction (`CostClass.CONTRACTION`: MatMul,
  Gemm, Einsum, Conv, ConvTranspose), one curve per measured dtype;
- ``elementwise``: seconds versus bytes moved of a memory-bound op (measured with Add);
- ``reduction``: seconds versus bytes moved of a row reduction (measured with a softmax over the
  last axis), used for softmax, normalisations, Reduce* and friends;
- optional class curves, seconds versus bytes moved, for memory-bound ops whose time per byte
  differs from an Add's on the device (on a CPU, a transpose streams 2-3x faster than an Add of
  the same bytes and a tanh is compute-bound): ``copy`` (measured with a transpose; used for
  `CostClass.COPY`) and ``transcendental`` (measured with tanh; `CostClass.TRANSCENDENTAL`).
  Which op types are in which class the op registry says (`planner/ops/`).
  A calibration without them prices those ops by ``elementwise``.

A curve is a list of points (work, seconds) with work strictly increasing and seconds not
decreasing. Between points it is linear in log-log space (a power law per segment); below the
first point the time is the first point's (the per-op floor: launch and dispatch overhead); above
the last point the time grows linearly at the last point's rate (work per second). The fit
(`fit_curve`) groups samples of equal work by their geometric mean and makes the times
non-decreasing by isotonic regression in log time (pool adjacent violators, scipy's), so a
curve fitted to monotone measurements passes through every one of them.

Pricing an op (`Calibration.op_time_s`):

- a contraction: ``max(matmul[dtype](flops), elementwise(bytes))`` (a skinny product is
  memory-bound, as in the roofline);
- a reduction: ``reduction(bytes)``; a copy or transcendental op: its class curve when
  measured; any other op: ``elementwise(bytes)``;
- an op that moves nothing and computes nothing (a view) costs 0, as in the roofline.

A dtype without a measured matmul curve borrows one that was measured (float32 if it was, else
the first in name order) at an "equivalent work": ``flops * peak(measured) / peak(dtype)`` with
the datasheet peaks of the cluster's GPU (`with_reference_gpu`, which the CLI applies), so the
measured per-op floor is kept and the large-op rate scales by the datasheet ratio. Without a GPU
that knows both peaks the borrowed curve is used as is.

Timings include the dispatch of one jitted op (on a GPU: the kernel launch). Inside one jitted
stage XLA fuses many memory-bound ops, so calibrated estimates of tiny ops are pessimistic.

Links. When several devices were visible, the profile timed all-reduce, all-gather and
reduce-scatter and fitted one alpha (latency) and beta (seconds per byte) per link kind with the
formulas of `cost_models.collectives` (`fit_link`); `with_links` puts them in a cluster in place
of its datasheet figures. All-to-all is timed too, but the planner prices it with the same link,
so its own fit is recorded for information only.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import isotonic_regression

from cost_models.cluster import Cluster, Gpu, Link
from cost_models.compute import CostClass

__all__ = [
    "CALIBRATION_FORMAT",
    "COLLECTIVES",
    "LINK_KINDS",
    "OP_CLASSES",
    "Calibration",
    "CollectiveSample",
    "Curve",
    "LinkFit",
    "OpTiming",
    "calibration_from_timings",
    "collective_factor",
    "fit_curve",
    "fit_link",
]

CALIBRATION_FORMAT = "alpa-plan-calibration/1"
LINK_KINDS: tuple[str, ...] = ("intra_host", "inter_host")
COLLECTIVES: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
# The collectives whose fit sets a link's alpha and beta (ring algorithms, one formula family).
_LINK_COLLECTIVES = frozenset({"all_reduce", "all_gather", "reduce_scatter"})

# Optional class curves, by name (the calibration file's keys): the kernel classes a curve of
# its own prices when measured (else the elementwise curve does).
OP_CLASSES: tuple[tuple[str, CostClass], ...] = (
    ("copy", CostClass.COPY),
    ("transcendental", CostClass.TRANSCENDENTAL),
)


@dataclass(frozen=True)
class Curve:
    """Seconds of one op versus its work (FLOPs or bytes): see the module docstring."""

    points: tuple[tuple[float, float], ...]  # (work, seconds), work strictly increasing

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a curve needs at least one point")
        for work, seconds in self.points:
            if not (_positive_finite(work) and _positive_finite(seconds)):
                raise ValueError(f"curve points must be positive and finite, got {work, seconds}")
        for (work_a, time_a), (work_b, time_b) in zip(self.points, self.points[1:], strict=False):
            if work_b <= work_a:
                raise ValueError(f"curve work must increase strictly, got {work_a} then {work_b}")
            if time_b < time_a:
                raise ValueError(f"curve times must not decrease, got {time_a} then {time_b}")

    def time_s(self, work: float) -> float:
        """Seconds for ``work`` (FLOPs or bytes); 0 for no work."""
        if work <= 0:
            return 0.0
        first_work, first_s = self.points[0]
        last_work, last_s = self.points[-1]
        if work <= first_work:
            return first_s
        if work >= last_work:
            return last_s * work / last_work
        works = [point[0] for point in self.points]
        right = bisect.bisect_right(works, work)
        (work_a, time_a), (work_b, time_b) = self.points[right - 1], self.points[right]
        fraction = math.log(work / work_a) / math.log(work_b / work_a)
        return math.exp(math.log(time_a) + fraction * math.log(time_b / time_a))

    @property
    def floor_s(self) -> float:
        """The time of the smallest measured op: the per-op overhead."""
        return self.points[0][1]

    @property
    def best_rate(self) -> float:
        """The highest measured work per second (FLOP/s or bytes/s)."""
        return max(work / seconds for work, seconds in self.points)


@dataclass(frozen=True)
class CollectiveSample:
    """One timed collective: ``num_bytes`` as `cost_models.collectives` counts it."""

    collective: str  # one of COLLECTIVES
    group_size: int
    num_bytes: float
    seconds: float


@dataclass(frozen=True)
class LinkFit:
    """Alpha-beta of one link kind fitted to collective timings, with the timings."""

    link: Link
    samples: tuple[CollectiveSample, ...]
    all_to_all: Link | None = None  # all-to-all's own fit, for information


@dataclass(frozen=True)
class Calibration:
    """Measured costs of one device type; a `ComputeModel` (see the module docstring)."""

    device: str  # what measured it, e.g. "NVIDIA H100 80GB HBM3 (gpu)"
    date: str  # ISO date of the measurement
    software: tuple[tuple[str, str], ...]  # (package, version), sorted
    matmul: tuple[tuple[str, Curve], ...]  # (dtype, curve), sorted by dtype
    elementwise: Curve
    reduction: Curve
    links: tuple[tuple[str, LinkFit], ...] = ()  # (link kind, fit), sorted
    op_classes: tuple[tuple[str, Curve], ...] = ()  # (class of OP_CLASSES, curve), sorted
    source: str = ""  # the file it came from (its name), for `describe`
    digest: str = ""  # sha256 of the file's text, for `describe`
    reference_gpu: Gpu | None = None  # datasheet peaks for dtypes without a matmul curve

    def __post_init__(self) -> None:
        object.__setattr__(self, "software", tuple(sorted(self.software)))
        object.__setattr__(self, "matmul", tuple(sorted(self.matmul)))
        object.__setattr__(self, "links", tuple(sorted(self.links)))
        object.__setattr__(
            self, "op_classes", tuple(sorted(self.op_classes, key=lambda item: item[0]))
        )
        known = {name for name, _ in OP_CLASSES}
        for name, _ in self.op_classes:
            if name not in known:
                raise ValueError(f"unknown op class {name!r}; known: {', '.join(sorted(known))}")
        if not self.matmul:
            raise ValueError("a calibration needs at least one matmul curve")
        for kind, _ in self.links:
            if kind not in LINK_KINDS:
                raise ValueError(f"unknown link kind {kind!r}; known: {', '.join(LINK_KINDS)}")

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes with a measured matmul curve."""
        return tuple(dtype for dtype, _ in self.matmul)

    def matmul_curve(self, dtype: str) -> Curve:
        for known, curve in self.matmul:
            if known == dtype:
                return curve
        raise KeyError(dtype)

    def with_reference_gpu(self, gpu: Gpu) -> Calibration:
        """This calibration, borrowing curves for unmeasured dtypes by ``gpu``'s peak ratios."""
        return dataclasses.replace(self, reference_gpu=gpu)

    def with_links(self, cluster: Cluster) -> Cluster:
        """``cluster`` with every measured link kind replaced by its fitted alpha-beta."""
        replaced = {kind: fit.link for kind, fit in self.links}
        return dataclasses.replace(
            cluster,
            intra_host=replaced.get("intra_host", cluster.intra_host),
            inter_host=replaced.get("inter_host", cluster.inter_host),
        )

    def contraction_time_s(self, flops: float, dtype: str) -> float:
        """Seconds of a contraction of ``flops`` with math in ``dtype``, by the matmul curves."""
        if dtype in self.dtypes:
            return self.matmul_curve(dtype).time_s(flops)
        borrowed = "float32" if "float32" in self.dtypes else self.dtypes[0]
        gpu = self.reference_gpu
        if gpu is not None and dtype in gpu.dtypes and borrowed in gpu.dtypes:
            flops = flops * gpu.peak_flops(borrowed) / gpu.peak_flops(dtype)
        return self.matmul_curve(borrowed).time_s(flops)

    def op_time_s(self, cost: CostClass, flops: float, bytes_moved: float, dtype: str) -> float:
        if flops <= 0 and bytes_moved <= 0:
            return 0.0
        if cost is CostClass.CONTRACTION:
            return max(self.contraction_time_s(flops, dtype), self.elementwise.time_s(bytes_moved))
        return self.memory_curve(cost).time_s(bytes_moved if bytes_moved > 0 else flops)

    def memory_curve(self, cost: CostClass) -> Curve:
        """The curve pricing a memory-bound op of class `cost`: the reduction curve, a measured
        class curve, else the elementwise curve."""
        if cost is CostClass.REDUCTION:
            return self.reduction
        measured = dict(self.op_classes)
        for name, kind in OP_CLASSES:
            if kind is cost and name in measured:
                return measured[name]
        return self.elementwise

    def describe(self) -> str:
        versions = ", ".join(f"{name} {version}" for name, version in self.software)
        where = f"{self.source}, " if self.source else ""
        digest = f", sha256 {self.digest[:12]}" if self.digest else ""
        return f"calibrated on {self.device} ({where}{self.date}; {versions}{digest})"


def fit_curve(samples: Iterable[tuple[float, float]]) -> Curve:
    """The curve through (work, seconds) samples: geometric mean per work, then isotonic."""
    by_work: dict[float, list[float]] = {}
    for work, seconds in samples:
        if not (_positive_finite(work) and _positive_finite(seconds)):
            raise ValueError(f"samples must be positive and finite, got {work, seconds}")
        by_work.setdefault(float(work), []).append(math.log(seconds))
    if not by_work:
        raise ValueError("no samples to fit")
    works = sorted(by_work)
    log_times = [sum(by_work[work]) / len(by_work[work]) for work in works]
    weights = [float(len(by_work[work])) for work in works]
    fitted = _isotonic(log_times, weights)
    points = zip(works, fitted, strict=True)
    return Curve(tuple((work, math.exp(log_time)) for work, log_time in points))


def _isotonic(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence nearest ``values`` in weighted L2 (pool adjacent violators,
    scipy's `isotonic_regression`)."""
    fitted = [float(v) for v in isotonic_regression(values, weights=weights).x]
    # exp(log t) round trips may wobble in the last bit: keep the result non-decreasing exactly.
    for index in range(1, len(fitted)):
        fitted[index] = max(fitted[index], fitted[index - 1])
    return fitted


def collective_factor(collective: str, group_size: int) -> float:
    """The bandwidth-term factor of `cost_models.collectives`: time = alpha + factor V beta."""
    n = group_size
    factors = {
        "all_reduce": 2.0 * (n - 1) / n,
        "all_gather": (n - 1) / n,
        "reduce_scatter": (n - 1) / n,
        "all_to_all": (n - 1) / (n * n),
    }
    if collective not in factors:
        raise ValueError(f"unknown collective {collective!r}; known: {', '.join(COLLECTIVES)}")
    return factors[collective]


def fit_link(samples: Sequence[CollectiveSample]) -> LinkFit:
    """Alpha and beta minimising the relative error of ``alpha + factor V beta`` over the ring
    collectives (all-reduce, all-gather, reduce-scatter); all-to-all fitted on its own."""
    ring = [s for s in samples if s.collective in _LINK_COLLECTIVES and s.group_size > 1]
    if not ring:
        raise ValueError("no all-reduce, all-gather or reduce-scatter timings to fit a link to")
    to_all = [s for s in samples if s.collective == "all_to_all" and s.group_size > 1]
    return LinkFit(
        link=_alpha_beta(ring),
        samples=tuple(samples),
        all_to_all=_alpha_beta(to_all) if to_all else None,
    )


def _alpha_beta(samples: Sequence[CollectiveSample]) -> Link:
    """Weighted least squares of t = alpha + x beta (x = factor V), weights 1/t; alpha >= 0."""
    x = np.array([collective_factor(s.collective, s.group_size) * s.num_bytes for s in samples])
    t = np.array([s.seconds for s in samples])
    design = np.stack([1.0 / t, x / t], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    if alpha < 0:
        alpha = 0.0
        beta = float(np.sum(x / t) / np.sum((x / t) ** 2))
    if not beta > 0:  # no bandwidth term visible (all sizes latency-bound): the fastest rate
        beta = float(np.min(t / x))
    return Link(bandwidth_bytes_per_s=1.0 / float(beta), latency_s=float(alpha))


def _positive_finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


class OpTiming(Protocol):
    """One timed op, as `alpa-plan profile` measures it (`executor/profile.py`)."""

    @property
    def kind(self) -> str: ...  # "matmul", "elementwise", "reduction", or an `OP_CLASSES` name
    @property
    def dtype(self) -> str: ...
    @property
    def work(self) -> float: ...  # FLOPs (matmul) or bytes moved
    @property
    def seconds(self) -> float: ...
    @property
    def bytes_moved(self) -> float: ...


def calibration_from_timings(
    device: str,
    date: str,
    software: tuple[tuple[str, str], ...],
    ops: Sequence[OpTiming],
    collectives: Sequence[CollectiveSample],
) -> Calibration:
    """Fit the curves (and, with collectives timed on several devices, the intra-host link) to
    measured timings.

    A product whose bytes alone take, by the elementwise curve, half its measured time or more
    (and well above the per-op floor) is memory-bound: it is left out of the matmul curve, which
    then describes compute-bound products; a calibrated plan prices a contraction at the larger
    of its matmul time and its bytes' elementwise time.
    """
    elementwise = fit_curve((t.work, t.seconds) for t in ops if t.kind == "elementwise")
    reduction = fit_curve((t.work, t.seconds) for t in ops if t.kind == "reduction")
    op_classes = tuple(
        (name, fit_curve((t.work, t.seconds) for t in ops if t.kind == name))
        for name, _ in OP_CLASSES
        if any(t.kind == name for t in ops)
    )
    by_dtype: dict[str, list[tuple[float, float]]] = {}
    for timing in ops:
        if timing.kind != "matmul":
            continue
        samples = by_dtype.setdefault(timing.dtype, [])
        memory_s = elementwise.time_s(timing.bytes_moved)
        if memory_s < max(timing.seconds / 2, 2 * elementwise.floor_s):
            samples.append((timing.work, timing.seconds))
    matmul = tuple((dtype, fit_curve(samples)) for dtype, samples in sorted(by_dtype.items()))
    # One process sees the devices of one host: the link they share is the intra-host one.
    links = (("intra_host", fit_link(collectives)),) if collectives else ()
    return Calibration(
        device=device,
        date=date,
        software=software,
        matmul=matmul,
        elementwise=elementwise,
        reduction=reduction,
        links=links,
        op_classes=op_classes,
    )
