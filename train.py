#!/usr/bin/env python
"""purerec's entry point. See `python train.py --help` and README.md."""

from purerec.core.interrupts import install_early

install_early()  # Ctrl-C while Python and JAX start: one line, no traceback

from purerec.core.hostdevices import expose_host_cores  # noqa: E402

expose_host_cores()  # before JAX starts: one CPU device per core, at least 2 (train.session_shards)

from purerec.core.compile_cache import enable as enable_compile_cache  # noqa: E402

enable_compile_cache()  # repeat runs read their compiled programs from disk (PUREREC_JAX_CACHE=off: no)

from purerec.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
