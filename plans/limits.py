"""Upper bounds on everything alpa-plan reads: one place, used by the cluster loader, the plan
reader, the ONNX importer and the command line.

Each bound is checked before anything is allocated from the value it bounds, and a value past it
is an `InputError` in the usual form (``hosts: expected at most 65536, found 100000000``), exit
2. The bounds keep the largest real clusters and models well inside (the largest training
clusters of 2024-25 have 100,000-200,000 GPUs in hosts of 8; an NVL72 rack is one NVLink domain
of 72 GPUs) and keep a hostile file from asking for gigabytes of memory or hours of work.
"""

from __future__ import annotations

from pathlib import Path, PurePath

# --- counts ----------------------------------------------------------------------------------

# Hosts of a cluster (YAML `hosts:`, `--hosts`): 65,536 hosts of 8 GPUs is 524,288 GPUs, several
# times the largest cluster built so far.
MAX_HOSTS = 65_536

# GPUs per host (YAML `gpus_per_host:`): 8 or 16 on today's servers; 1,024 leaves room for a
# rack-scale NVLink domain (NVL72, NVL576) described as one host.
MAX_GPUS_PER_HOST = 1_024

# GPUs in all, hosts x GPUs per host: a plan lists every GPU of every stage, so this bounds a
# plan's size (about 16 bytes of JSON per GPU) and the planner's device lists. 2^20 GPUs is
# five times the largest cluster built so far.
MAX_GPUS = 1_048_576

# The global batch, in samples (`--batch-size`, a model's fixed batch, a plan's `batch_size`):
# the largest batches published are tens of thousands of samples (LAMB trains BERT at 65,536);
# 2^20 keeps shapes, FLOP counts and the divisor search of microbatch counts small.
MAX_BATCH_SIZE = 1_048_576

# Microbatches per iteration (`--microbatches`, a plan's `microbatches`): the pipeline
# timeline `show` draws and the executor runs has stages x microbatches blocks; real pipelines
# use tens to a few thousand.
MAX_MICROBATCHES = 65_536

# Blocks of a pipeline schedule, stages x microbatches (a plan's stages and `microbatches`):
# `show` draws each block and the executor runs each; 64 stages of 1,024 microbatches is 65,536.
MAX_SCHEDULE_BLOCKS = 1_048_576

# Any other dimension of a tensor (`--dim NAME=VALUE`, a model's fixed dimensions): the longest
# context windows are about 10 million tokens; 2^24 is 16,777,216.
MAX_DIMENSION = 16_777_216

# Layers to cluster the ops into (`--layers`): a model has at most a few hundred blocks.
MAX_LAYERS = 65_536

# Worker processes (`--jobs`): more than there are cores only costs memory.
MAX_JOBS = 1_024

# --- files -----------------------------------------------------------------------------------

# A cluster or calibration YAML file, in bytes: the shipped ones are 2-4 KB, a calibration file
# `alpa-plan profile` writes is tens of KB.
MAX_YAML_BYTES = 1 << 20  # 1 MiB

# Nesting of YAML mappings and lists: the deepest valid file (a calibration's links) has 4.
MAX_YAML_DEPTH = 16

# A plan file, in bytes: a plan of a model with 10,000 ops on 2^20 GPUs is about 20 MB.
MAX_PLAN_BYTES = 64 << 20  # 64 MiB

# Nesting of JSON objects and lists in a plan: the format's deepest value has 6 levels
# (search.meshes[i].logical_mesh); 64 leaves room for `planner.options` and stays far below
# Python's recursion limit.
MAX_JSON_DEPTH = 64


def too_many(limit: int, found: object) -> tuple[str, str]:
    """(expected, found) of an `InputError` for a count past `limit`."""
    return f"at most {limit}", str(found)


# --- paths -----------------------------------------------------------------------------------


def outside_folder(location: str, folder: Path) -> bool:
    """Whether an ONNX external-data `location` leaves the model's `folder`: absolute, through
    `..`, or by a symbolic link that resolves elsewhere. Checked before any such file is opened
    (a model from a stranger must not read `../../etc/shadow` into its weights)."""
    path = PurePath(location)
    if path.is_absolute() or path.drive or ".." in path.parts or "\0" in location:
        return True
    root = folder.resolve()
    return not (root / path).resolve().is_relative_to(root)
