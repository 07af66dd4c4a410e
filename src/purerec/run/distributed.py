"""Several processes (hosts) as one JAX program: the launch, and what the processes agree on.

Launch. ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the environment variables
``PUREREC_COORDINATOR``, ``PUREREC_NUM_PROCESSES``, ``PUREREC_PROCESS_ID``; JAX's own
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` are read as the same three,
because the installed JAX reads only the first of them itself) start process I of N, process 0
serving the coordinator. ``--distributed`` alone lets JAX detect the cluster (SLURM, Open MPI,
Kubernetes). Flags win over variables; the three go together or not at all.

Bounded start. JAX's own start-up, when the coordinator is wrong or a process never comes,
terminates the process with a C++ stack trace after its timeout; purerec instead stops each
process with one line after ``--init-timeout`` seconds (default 120; ``PUREREC_INIT_TIMEOUT``),
naming the coordinator and what to check, and a host name that does not resolve is refused at once.

Agreement. Process 0 alone reads and writes the run directory; what the others need from it (the
config of a resumed run, whether a checkpoint is intact, the final results) goes through
:func:`agree`, which runs a function on process 0 and hands its JSON result, or its error, to every
process. Arrays go through :func:`broadcast` (process 0's host copy) and :func:`place` (host copies
onto a global sharding); :func:`host_copy` is the inverse (every process gets the whole array).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time

import numpy as np

from purerec.core.errors import PurerecError, TrainingError

ENV = {"coordinator": ("PUREREC_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
       "num-processes": ("PUREREC_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
       "process-id": ("PUREREC_PROCESS_ID", "JAX_PROCESS_ID"),
       "init-timeout": ("PUREREC_INIT_TIMEOUT",)}
DEFAULT_TIMEOUT_S = 120.0
WAIT_MS = 7 * 24 * 3600 * 1000  # how long the other processes wait for process 0's answer


class LaunchError(PurerecError, ValueError):
    """A multi-process launch that cannot start (bad arguments, unreachable coordinator)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins the others; ``coordinator`` None = let JAX detect the cluster."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def _int(name: str, value, lo: int, hi: int | None, what: str) -> int:
    try:
        x = float(value)
        if not x.is_integer():
            raise ValueError
        x = int(x)
    except (TypeError, ValueError):
        x = None
    if x is None or x < lo or (hi is not None and x >= hi):
        raise LaunchError(f"--{name} {value!r}: must be {what}")
    return x


def launch_from(opts: dict, environ=None) -> Launch | None:
    """The launch that the options (``purerec.cli.Launching``: coordinator, num-processes, process-id,
    distributed, init-timeout) and environment ask for, checked; None = one process."""
    environ = os.environ if environ is None else environ
    given = {}
    for name, variables in ENV.items():
        if opts.get(name) is not None:
            given[name] = (opts[name], f"--{name}")
        else:
            for var in variables:
                if environ.get(var):
                    given[name] = (environ[var], var)
                    break
    trio = ("coordinator", "num-processes", "process-id")
    named = [n for n in trio if n in given]
    if not named and not opts.get("distributed"):
        return None
    timeout = DEFAULT_TIMEOUT_S
    if "init-timeout" in given:
        try:
            timeout = float(given["init-timeout"][0])
        except ValueError:
            timeout = -1.0
        if not 1 <= timeout <= 86400:
            raise LaunchError(f"{given['init-timeout'][1]} {given['init-timeout'][0]!r}: must be a number of seconds in "
                              f"[1, 86400]")
    if not named:
        return Launch(timeout_s=timeout)  # --distributed alone: JAX detects the cluster
    if len(named) < 3:
        missing = [f"--{n} (or {ENV[n][0]})" for n in trio if n not in given]
        raise LaunchError(f"{', '.join(given[n][1] for n in named)} given without {' and '.join(missing)}: a launch "
                          f"by hand names all three (--coordinator HOST:PORT --num-processes N --process-id I); under "
                          f"SLURM / Open MPI / Kubernetes give none of them and pass --distributed")
    coord, src = given["coordinator"]
    host, sep, port = str(coord).rpartition(":")
    if not sep or not host:
        raise LaunchError(f"{src} {coord!r}: must be HOST:PORT, e.g. host0:12355 (process 0 runs on HOST)")
    _int(src.lstrip("-"), port, 1, 65536, "a port in [1, 65535] after the colon")
    n = _int(given["num-processes"][1].lstrip("-"), given["num-processes"][0], 1, None, "an integer >= 1")
    i = _int(given["process-id"][1].lstrip("-"), given["process-id"][0], 0, n,
             f"an integer in [0, {n}) (--num-processes is {n})")
    return Launch(coordinator=str(coord), num_processes=n, process_id=i, timeout_s=timeout)


_JOINED: list[Launch] = []


def initialize(launch: Launch, log=print) -> None:
    """``jax.distributed.initialize`` for ``launch``, stopped with one line after ``launch.timeout_s``
    (a watchdog thread: JAX's own failure is a C++ abort with a stack trace, after its own timeout,
    which is set later than ours). Call before any JAX computation."""
    import jax

    if _JOINED:
        if _JOINED[0] != launch:
            raise LaunchError(f"this process already joined {_JOINED[0]}; a process joins one launch only")
        return  # joined already (one Python session running several commands)
    if launch.coordinator:
        host = launch.coordinator.rpartition(":")[0].strip("[]")
        try:
            socket.getaddrinfo(host, None)
        except OSError:
            raise LaunchError(f"--coordinator {launch.coordinator}: the host name {host!r} does not resolve; give the "
                              f"address of the machine running process 0") from None
        where = f"process {launch.process_id} of {launch.num_processes}, coordinator {launch.coordinator}"
        hint = ("check that process 0 is running there and reachable (host, port, firewall), and that every process "
                f"got the same --coordinator and --num-processes {launch.num_processes} and a distinct --process-id")
    else:
        where = "cluster auto-detection"
        hint = "check that every process of the job was started"
    done = threading.Event()

    def watchdog():
        if not done.wait(launch.timeout_s):
            print(f"error: distributed start ({where}): the {launch.num_processes or 'expected'} processes did not all "
                  f"meet within --init-timeout {launch.timeout_s:g}s; {hint}", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True, name="purerec-init-watchdog").start()
    t0 = time.perf_counter()
    try:
        jax.distributed.initialize(coordinator_address=launch.coordinator, num_processes=launch.num_processes,
                                   process_id=launch.process_id,
                                   initialization_timeout=int(launch.timeout_s) + 60)
    except (ValueError, RuntimeError) as e:
        done.set()
        if launch.coordinator:
            raise LaunchError(f"distributed start ({where}) failed: {e}") from None
        raise LaunchError(f"--distributed: JAX found no cluster to join ({str(e).splitlines()[0]}); outside SLURM, "
                          f"Open MPI or Kubernetes give --coordinator HOST:PORT --num-processes N --process-id I "
                          f"(or set PUREREC_COORDINATOR, PUREREC_NUM_PROCESSES, PUREREC_PROCESS_ID)") from None
    done.set()
    _JOINED.append(launch)
    if jax.process_index() == 0:
        log(f"distributed: {jax.process_count()} processes, {jax.device_count()} devices "
            f"({jax.local_device_count()} here), joined in {time.perf_counter() - t0:.1f}s; process 0 writes")


def multi() -> bool:
    import jax

    return jax.process_count() > 1


def is_main() -> bool:
    import jax

    return jax.process_index() == 0


_CALLS = [0]


def _client():
    from jax._src import distributed as jd

    return jd.global_state.client


def barrier(name: str = "sync") -> None:
    """Wait until every process is here (no-op for one process). Called before each program that
    communicates: XLA's CPU collectives (Gloo) give up after 30 s, and processes drift apart by
    more than that (compiling, or process 0 writing and evaluating while the others go on)."""
    if not multi():
        return
    _CALLS[0] += 1
    _client().wait_at_barrier(f"purerec/{name}/{_CALLS[0]}", WAIT_MS)


def agree(fn, what: str = "process 0"):
    """``fn()`` run on process 0, its JSON-able result (or its error, re-raised as the same kind of
    ``PurerecError`` with the same message) handed to every process. One process: just ``fn()``.
    Every process must call ``agree`` in the same order (the calls are numbered)."""
    if not multi():
        return fn()
    client = _client()
    _CALLS[0] += 1
    key = f"purerec/agree/{_CALLS[0]}"
    if is_main():
        try:
            payload = {"ok": fn()}
        except Exception as e:  # the others stop with the same error instead of waiting
            msg = str(e) if isinstance(e, PurerecError) else f"process 0: {type(e).__name__}: {e}"
            client.key_value_set(key, json.dumps({"error": type(e).__name__, "message": msg}))
            raise
        client.key_value_set(key, json.dumps(payload))
        return payload["ok"]
    payload = json.loads(client.blocking_key_value_get(key, WAIT_MS))
    if "error" in payload:
        raise _error_class(payload["error"])(payload["message"])
    return payload["ok"]


def _error_class(name: str):
    from purerec.core.errors import ConfigError
    from purerec.core import errors

    for cls in (ConfigError, TrainingError, LaunchError):
        if cls.__name__ == name:
            return cls
    cls = getattr(errors, name, PurerecError)
    return cls if isinstance(cls, type) and issubclass(cls, PurerecError) else PurerecError


def broadcast(tree):
    """Process 0's host copy of ``tree`` on every process (the others pass arrays of the same
    shapes, e.g. zeros)."""
    import jax

    if not multi():
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    barrier("broadcast")
    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(jax.tree.map(np.asarray, tree)))


def host_copy(tree):
    """The whole of every array of ``tree`` as NumPy on this process (gathered from the other
    processes where it is split over them; every process must call it)."""
    import jax

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    if multi() and any(isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated)
                       for x in jax.tree.leaves(tree)):
        barrier("gather")
    return jax.tree.map(one, tree)


def place(tree, shardings):
    """``tree`` (host or device arrays, the same on every process) onto ``shardings`` (a tree of
    shardings, or one for every leaf), which may span the devices of every process."""
    import jax

    if not multi():
        return jax.device_put(tree, shardings)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def one(x, sh):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)
