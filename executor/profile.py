"""Time ops and collectives on the local devices: what `alpa-plan profile` measures.

Plain measurements only (frozen dataclasses of numbers); the fitting is pure and lives in
`cost_models.calibration`, which the CLI feeds. Every timing is one jitted op called on device
arrays: after warm-up (compilation), the median of repeats, each ended by `block_until_ready`,
so the time includes the dispatch of one jitted call (on a GPU, the kernel launch).

- matmul: `jnp.matmul` of [b, m, k] x [b, k, n] (b = 1: a plain [m, k] x [k, n] product) per
  dtype; FLOPs = 2 b m k n;
- elementwise: `x + y` on float32 vectors; bytes = 3 x size (two reads, one write);
- reduction: softmax over the last axis (256 wide) of float32 matrices; bytes = 2 x size;
- copy: the transpose of the same matrices; transcendental: `tanh` of the vectors; bytes =
  2 x size each (one read, one write);
- collectives, when more than one device is visible: all-reduce, all-gather, reduce-scatter and
  all-to-all over the first g devices (g = 2, 4, ... and all), with `shard_map`; bytes counted as
  `cost_models.collectives` counts them (all-reduce and all-to-all: each device's buffer;
  all-gather: the gathered size; reduce-scatter: the size before scattering).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Progress = Callable[[str], None]  # called once per timing, with what was timed

_REDUCTION_WIDTH = 256
_DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
PROFILE_DTYPES: tuple[str, ...] = tuple(_DTYPES)


@dataclass(frozen=True)
class Grid:
    """What to time: matmul shapes (b, m, k, n), vector sizes (elements), collective sizes
    (bytes per device) and how long to time each (repeats within a time budget)."""

    matmul_shapes: tuple[tuple[int, int, int, int], ...]
    memory_elements: tuple[int, ...]
    collective_bytes: tuple[int, ...]
    min_repeats: int = 5
    max_repeats: int = 100
    budget_s: float = 0.2  # stop repeating past this much time, once min_repeats are done


def full_grid() -> Grid:
    """Square products 32..4096 and transformer-like shapes; vectors 1 K..64 M elements."""
    squares = tuple((1, n, n, n) for n in (32, 64, 128, 256, 512, 1024, 2048, 4096))
    # Activations x weights of hidden h, and batched attention products [b*heads, s, d] x [d, s].
    rectangles = tuple(
        (1, rows, h, width)
        for rows in (256, 2048, 16384)
        for h in (64, 768, 2048)
        for width in (h, 4 * h)
    )
    # (Longer sequences at b = 128 make 134 MB score tensors whose fresh allocation per call, on a
    # CPU, costs ten times the arithmetic: left out, they would drag the FLOPs curve up.)
    attention = tuple((b, s, d, s) for b in (16, 128) for s in (32, 128) for d in (16, 64))
    return Grid(
        matmul_shapes=squares + rectangles + attention,
        memory_elements=tuple(2**k for k in range(10, 27, 2)),
        collective_bytes=tuple(2**k for k in range(12, 27, 2)),
    )


def quick_grid() -> Grid:
    """A few seconds on a CPU: for tests and a first look."""
    return Grid(
        matmul_shapes=((1, 32, 32, 32), (1, 64, 64, 64), (1, 128, 128, 128), (4, 32, 16, 32)),
        memory_elements=(2**10, 2**14, 2**18),
        collective_bytes=(2**12, 2**16),
        min_repeats=3,
        max_repeats=10,
        budget_s=0.02,
    )


@dataclass(frozen=True)
class OpTiming:
    kind: str  # "matmul", "elementwise", "reduction", "copy" or "transcendental"
    dtype: str
    shape: tuple[int, ...]
    work: float  # FLOPs (matmul) or bytes moved
    seconds: float
    bytes_moved: float  # what it reads and writes (for a matmul: both operands and the result)


@dataclass(frozen=True)
class CollectiveTiming:
    collective: str  # all_reduce, all_gather, reduce_scatter, all_to_all
    group_size: int
    num_bytes: float
    seconds: float


@dataclass(frozen=True)
class Profile:
    device: str  # device kind and platform, e.g. "NVIDIA H100 80GB HBM3 (gpu)"
    platform: str
    device_count: int
    software: tuple[tuple[str, str], ...]
    ops: tuple[OpTiming, ...]
    collectives: tuple[CollectiveTiming, ...]


def device_summary() -> tuple[str, str, int]:
    """(device description, platform, number of devices) of jax's default backend."""
    devices = jax.devices()
    first = devices[0]
    kind = first.device_kind
    if first.platform == "cpu":
        kind = f"{_cpu_model()}, {os.cpu_count()} cores"
    return f"{kind} ({first.platform})", first.platform, len(devices)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_versions() -> tuple[tuple[str, str], ...]:
    import jaxlib

    return (
        ("jax", jax.__version__),
        ("jaxlib", jaxlib.__version__),
        ("numpy", np.__version__),
        ("python", platform.python_version()),
    )


def timing_count(grid: Grid, dtypes: Sequence[str], device_count: int) -> int:
    """How many timings `measure` makes (for a progress bar)."""
    groups = len(group_sizes(device_count))
    return (
        len(grid.matmul_shapes) * len(dtypes)
        + 4 * len(grid.memory_elements)
        + 4 * groups * len(grid.collective_bytes)
    )


def group_sizes(device_count: int) -> list[int]:
    sizes = [2**k for k in range(1, device_count.bit_length()) if 2**k <= device_count]
    if device_count > 1 and device_count not in sizes:
        sizes.append(device_count)
    return sizes


def time_call(fn: Callable[..., Any], args: Sequence[Any], grid: Grid) -> float:
    """Median seconds of ``fn(*args)`` after two warm-up calls (compilation, caches).

    Repeats until ``grid.min_repeats`` calls and ``grid.budget_s`` seconds are both reached (at
    most ``grid.max_repeats``); an op slower than the budget is timed 3 times.
    """
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times: list[float] = []
    spent = 0.0
    while len(times) < grid.max_repeats:
        if len(times) >= grid.min_repeats and spent >= grid.budget_s:
            break
        if len(times) >= 3 and spent >= 3 * grid.budget_s:
            break
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return statistics.median(times)


def measure(grid: Grid, dtypes: Sequence[str], progress: Progress | None = None) -> Profile:
    """Time the grid on jax's default devices; see the module docstring."""
    unknown = [dtype for dtype in dtypes if dtype not in _DTYPES]
    if unknown:
        raise ValueError(f"cannot profile dtype {unknown[0]!r}; known: {', '.join(_DTYPES)}")
    report = progress or (lambda _: None)
    device, platform_name, count = device_summary()
    rng = np.random.default_rng(0)
    ops: list[OpTiming] = []
    matmul = jax.jit(jnp.matmul)
    for dtype in dtypes:
        jdtype = _DTYPES[dtype]
        for b, m, k, n in grid.matmul_shapes:
            a = jnp.asarray(rng.standard_normal((b, m, k) if b > 1 else (m, k)), jdtype)
            w = jnp.asarray(rng.standard_normal((b, k, n) if b > 1 else (k, n)), jdtype)
            report(f"matmul {dtype} {b}x{m}x{k}x{n}")
            seconds = time_call(matmul, (a, w), grid)
            moved = float(a.nbytes + w.nbytes + b * m * n * a.dtype.itemsize)
            ops.append(OpTiming("matmul", dtype, (b, m, k, n), 2.0 * b * m * k * n, seconds, moved))
    add = jax.jit(jnp.add)
    softmax = jax.jit(lambda x: jax.nn.softmax(x, axis=-1))
    transpose = jax.jit(jnp.transpose)
    tanh = jax.jit(jnp.tanh)
    for elements in grid.memory_elements:
        x = jnp.asarray(rng.standard_normal(elements), jnp.float32)
        y = jnp.asarray(rng.standard_normal(elements), jnp.float32)
        report(f"elementwise {elements}")
        seconds = time_call(add, (x, y), grid)
        moved = 12.0 * elements
        ops.append(OpTiming("elementwise", "float32", (elements,), moved, seconds, moved))
        rows = max(1, elements // _REDUCTION_WIDTH)
        matrix = x.reshape(rows, -1)
        report(f"reduction {elements}")
        seconds = time_call(softmax, (matrix,), grid)
        moved = 8.0 * elements
        ops.append(OpTiming("reduction", "float32", matrix.shape, moved, seconds, moved))
        report(f"copy {elements}")
        seconds = time_call(transpose, (matrix,), grid)
        ops.append(OpTiming("copy", "float32", matrix.shape, moved, seconds, moved))
        report(f"transcendental {elements}")
        seconds = time_call(tanh, (x,), grid)
        ops.append(OpTiming("transcendental", "float32", (elements,), moved, seconds, moved))
    collectives: list[CollectiveTiming] = []
    for group in group_sizes(count):
        mesh = Mesh(np.array(jax.devices()[:group]), ("x",))
        for num_bytes in grid.collective_bytes:
            for name in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all"):
                report(f"{name} {group} devices {num_bytes} B")
                fn = _collective(name, mesh)
                local = _local_elements(name, num_bytes, group)
                data = jax.device_put(
                    np.ones(local * group, np.float32), NamedSharding(mesh, PartitionSpec("x"))
                )
                seconds = time_call(fn, (data,), grid)
                counted = 4.0 * (local * group if name == "all_gather" else local)
                collectives.append(CollectiveTiming(name, group, counted, seconds))
    return Profile(
        device=device,
        platform=platform_name,
        device_count=count,
        software=software_versions(),
        ops=tuple(ops),
        collectives=tuple(collectives),
    )


def _local_elements(name: str, num_bytes: int, group: int) -> int:
    """float32 elements per device so that the counted bytes are about ``num_bytes``."""
    elements = max(1, num_bytes // 4)
    if name == "all_gather":  # counted: the gathered size
        return max(1, elements // group)
    if name in ("reduce_scatter", "all_to_all"):  # the local buffer splits into `group` pieces
        return max(group, elements // group * group)
    return elements


def _collective(name: str, mesh: Mesh) -> Callable[..., Any]:
    """The jitted collective over the mesh's axis "x"."""
    spec = PartitionSpec("x")
    bodies: dict[str, tuple[Callable[[Any], Any], PartitionSpec]] = {
        "all_reduce": (lambda x: lax.psum(x, "x"), PartitionSpec()),
        "all_gather": (lambda x: lax.all_gather(x, "x", tiled=True), PartitionSpec()),
        "reduce_scatter": (lambda x: lax.psum_scatter(x, "x", tiled=True), spec),
        "all_to_all": (lambda x: lax.all_to_all(x, "x", 0, 0, tiled=True), spec),
    }
    body, out = bodies[name]
    # check_vma off: all_gather's result is replicated, which the checker cannot infer.
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=out, check_vma=False))
