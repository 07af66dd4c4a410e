#!/usr/bin/env python
"""purerec's entry point. See `python train.py --help` and README.md."""

from purerec.interrupts import install_early

install_early()  # Ctrl-C while Python and JAX start: one line, no traceback

from purerec.hostdevices import expose_host_cores  # noqa: E402

expose_host_cores()  # before JAX starts: one CPU device per core (train.session_shards)

from purerec.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
