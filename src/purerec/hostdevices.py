"""One XLA CPU device per core, so that a run can split its sessions over them.

XLA's CPU backend shows a single device by default, and one device keeps a 2-core machine about
1.5x busy on a training update; splitting the sessions over one device per core
(``train.session_shards``) made an update 1.55x faster there. The device count is fixed when JAX
starts its backend, so entry points (``train.py``, the benchmarks) call ``expose_host_cores``
before any JAX computation. Accelerators are unaffected: the flag only shapes the CPU platform.
"""

from __future__ import annotations

import os

FLAG = "--xla_force_host_platform_device_count"
MAX_HOST_DEVICES = 8


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def expose_host_cores() -> None:
    """Ask for one host device per core (at most 8; PUREREC_HOST_DEVICES=N sets another count)
    unless XLA_FLAGS already sets a count."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return
    n = int(os.environ.get("PUREREC_HOST_DEVICES", min(core_count(), MAX_HOST_DEVICES)))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={n}".strip()
