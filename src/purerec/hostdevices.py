"""One XLA CPU device per core, so that a run can split its sessions over them.

XLA's CPU backend shows a single device by default, and one device keeps a 2-core machine about
1.5x busy on a training update; splitting the sessions over one device per core
(``train.session_shards``) made an update 1.55x faster there. The device count is fixed when JAX
starts its backend, so entry points (``train.py``, the benchmarks) call ``expose_host_cores``
before any JAX computation. Accelerators are unaffected: the flag only shapes the CPU platform.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_force_host_platform_device_count"
MAX_HOST_DEVICES = 8


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def expose_host_cores() -> None:
    """Ask for one host device per core (at most 8; PUREREC_HOST_DEVICES=N sets another count)
    unless XLA_FLAGS already sets a count. A PUREREC_HOST_DEVICES that is not a whole number >= 1
    exits with a one-line error (code 2)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return
    raw = os.environ.get("PUREREC_HOST_DEVICES", "").strip()
    try:
        n = int(raw) if raw else min(core_count(), MAX_HOST_DEVICES)
    except ValueError:
        n = 0
    if n < 1:  # called before the CLI (and JAX) start: the CLI's one-line error, exit code 2
        print(f"error: PUREREC_HOST_DEVICES = {raw!r} is invalid: a whole number of CPU devices >= 1 "
              f"(or unset it for one device per core, up to {MAX_HOST_DEVICES})", file=sys.stderr)
        raise SystemExit(2)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={n}".strip()
