"""purerec's error types: every error a user can cause derives from ``PurerecError``, and the
command line turns any of them into one line ``error: ...`` naming the field, file or line and
the fix, exit code 2 (``--debug`` shows the traceback). Each message names what is wrong and what
to do; nothing is written before the check that raises it.
"""

from __future__ import annotations


class PurerecError(Exception):
    """Base of the errors the CLI reports as one line."""


class RunDirError(PurerecError, ValueError):
    """A run directory cannot be used as asked (it holds another run, is a file, is read-only)."""


class CheckpointError(PurerecError, RuntimeError):
    """No checkpoint of a run can be restored under its config."""


class SweepSpecError(PurerecError, ValueError):
    """A sweep spec is malformed; the message names the spec file and the key."""


class WriteError(PurerecError, OSError):
    """A file could not be written (disk full, permissions): names the file."""
