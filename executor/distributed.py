"""Multi-host start-up: one process per host under `jax.distributed`, as JAX runs on clusters.

The coordinator address, process count and process id come from flags, else from the
environment (`ALPA_PLAN_COORDINATOR`, `ALPA_PLAN_NUM_PROCESSES`, `ALPA_PLAN_PROCESS_ID`). With
none of them, a SLURM job step of several tasks lets JAX read them from SLURM's variables
(`jax.distributed.initialize()` without arguments); a plain single process needs no start-up.
Process `h` owns the GPUs of the plan's host `h` (`executor/mesh.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax

from plans.errors import InputError

ENV_COORDINATOR = "ALPA_PLAN_COORDINATOR"
ENV_NUM_PROCESSES = "ALPA_PLAN_NUM_PROCESSES"
ENV_PROCESS_ID = "ALPA_PLAN_PROCESS_ID"


@dataclass(frozen=True)
class Cluster:
    coordinator: str | None = None  # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None


def from_environment(given: Cluster) -> Cluster:
    """Flags first, then the ALPA_PLAN_* variables."""

    def number(value: int | None, variable: str) -> int | None:
        if value is not None:
            return value
        text = os.environ.get(variable)
        if text is None:
            return None
        if not text.strip().isdigit():
            raise InputError(variable, "", "a non-negative integer", repr(text))
        return int(text)

    return Cluster(
        coordinator=given.coordinator or os.environ.get(ENV_COORDINATOR),
        num_processes=number(given.num_processes, ENV_NUM_PROCESSES),
        process_id=number(given.process_id, ENV_PROCESS_ID),
    )


def _under_slurm() -> bool:
    tasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_STEP_NUM_TASKS") or "1"
    return "SLURM_JOB_ID" in os.environ and tasks.isdigit() and int(tasks) > 1


def start(cluster: Cluster) -> bool:
    """Join the job when it has several processes; return whether it does."""
    if cluster.coordinator or cluster.num_processes or cluster.process_id is not None:
        if (
            cluster.coordinator is None
            or cluster.num_processes is None
            or cluster.process_id is None
        ):
            raise InputError(
                "--coordinator/--num-processes/--process-id",
                "",
                "all three (or the ALPA_PLAN_* variables), or none",
                f"coordinator={cluster.coordinator}, processes={cluster.num_processes}, "
                f"id={cluster.process_id}",
            )
        if cluster.num_processes == 1:
            return False
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
        )
        return True
    if _under_slurm():
        jax.distributed.initialize()
        return True
    return False
