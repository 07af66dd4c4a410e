#!/usr/bin/env python
"""purerec's entry point. See `python train.py --help` and README.md."""

import sys

from purerec.errors import PurerecError
from purerec.hostdevices import expose_host_cores

try:
    expose_host_cores()  # before JAX starts: one CPU device per core, at least 2 (train.session_shards)
except PurerecError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)

from purerec.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
