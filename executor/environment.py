"""Process environment the executor needs before jax is first imported. Imports no jax."""

from __future__ import annotations

import os
import re

_FLAG = "--xla_force_host_platform_device_count"


def use_host_devices(count: int) -> None:
    """Ask XLA for at least `count` CPU devices (virtual devices of the host platform).

    XLA reads `XLA_FLAGS` when its CPU backend starts, so this must run before the first jax
    computation. A count already in `XLA_FLAGS` that is large enough is kept; a GPU backend
    ignores the flag.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    match = re.search(rf"{_FLAG}=(\d+)", flags)
    if match and int(match.group(1)) >= count:
        return
    if match:
        flags = flags.replace(match.group(0), f"{_FLAG}={count}")
    else:
        flags = f"{flags} {_FLAG}={count}".strip()
    os.environ["XLA_FLAGS"] = flags
