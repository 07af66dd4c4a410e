#!/usr/bin/env python
"""purerec's entry point. See `python train.py --help` and README.md."""

from purerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
