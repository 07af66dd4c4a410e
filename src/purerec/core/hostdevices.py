"""Host (CPU) devices for the session shards: one per core, and at least the default shard count.

XLA's CPU backend shows a single device by default, and one device keeps a 2-core machine about
1.5x busy on a training update; splitting the sessions over one device per core
(``train.session_shards``) made an update 1.55x faster there. The shard count is the config's
(``purerec.config.DEFAULT_SESSION_SHARDS`` = 2 by default), never the machine's; so that a run
computes the very same program on any CPU, there are at least that many host devices even on one
core (XLA's host device count is not bounded by the cores: two devices on one core take turns).
The device count is fixed when JAX starts its backend, so entry points (``train.py``, the
benchmarks) call ``expose_host_cores`` before any JAX computation. Accelerators are unaffected:
the flag only shapes the CPU platform (there, more shards than devices run vmapped on one device).
"""

from __future__ import annotations

import os
import sys

from purerec.core.errors import PurerecError

FLAG = "--xla_force_host_platform_device_count"
MAX_HOST_DEVICES = 8
MIN_HOST_DEVICES = 2  # = purerec.config.DEFAULT_SESSION_SHARDS (not imported: no config before JAX starts)
ENV = "PUREREC_HOST_DEVICES"


class HostDevicesError(PurerecError, ValueError):
    """``PUREREC_HOST_DEVICES`` is not a device count."""


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_device_count(environ=None, cores: int | None = None) -> int:
    """How many host devices to ask for: ``PUREREC_HOST_DEVICES`` if set, else one per core
    (at most ``MAX_HOST_DEVICES``) and at least ``MIN_HOST_DEVICES``."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV, "").strip()
    if not raw:
        return max(MIN_HOST_DEVICES, min(core_count() if cores is None else cores, MAX_HOST_DEVICES))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise HostDevicesError(f"{ENV} = {raw!r} is invalid: a whole number of CPU devices >= 1 (or unset it for one "
                               f"device per core, at least {MIN_HOST_DEVICES} and up to {MAX_HOST_DEVICES})")
    return n


def expose_host_cores() -> None:
    """Ask for ``host_device_count()`` host devices unless XLA_FLAGS already sets a count. A
    PUREREC_HOST_DEVICES that is not a whole number >= 1 exits with a one-line error (code 2):
    this runs before the CLI (and JAX) start."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return
    try:
        n = host_device_count()
    except HostDevicesError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={n}".strip()
