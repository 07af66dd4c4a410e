"""JAX's persistent compilation cache for purerec's entry points (``train.py``, the benchmarks).

A run compiles the same programs as the last run of the same config (Stage I, init, the chunk,
the evaluation's action rules and fidelity probe), so a repeat run, a resumed run, a sweep
re-run or the test suite reads them from disk instead of compiling again (tens of seconds on
a 2-core CPU). The cache lives beside the worlds: ``$PUREREC_JAX_CACHE``, else
``$PUREREC_CACHE/jax``, else ``~/.cache/purerec/jax``; ``PUREREC_JAX_CACHE=off`` turns it off.
Best-effort: a directory that cannot be made or written gives one warning and the run carries
on compiling as usual (JAX itself only warns when an entry cannot be written).
"""

from __future__ import annotations

import os
import sys

OFF = ("", "0", "off", "none", "false")


def cache_path() -> str | None:
    """Where the compilation cache lives, or None when ``PUREREC_JAX_CACHE`` turns it off."""
    explicit = os.environ.get("PUREREC_JAX_CACHE")
    if explicit is not None:
        return None if explicit.strip().lower() in OFF else explicit
    base = os.environ.get("PUREREC_CACHE") or os.path.expanduser("~/.cache/purerec")
    return os.path.join(base, "jax")


def enable(min_compile_secs: float = 1.0) -> str | None:
    """Point JAX's persistent compilation cache at ``cache_path()`` (programs that took at least
    ``min_compile_secs`` to compile are stored); returns the directory, or None when it is off or
    cannot be written (then with a one-line warning)."""
    path = cache_path()
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as e:
        print(f"warning: compilation cache off ({e}); set PUREREC_JAX_CACHE to a writable directory "
              f"or to 'off'", file=sys.stderr)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return path
