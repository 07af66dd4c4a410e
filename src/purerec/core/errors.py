"""purerec's error types: every error a user can cause derives from ``PurerecError``, and the
command line turns any of them into one line ``error: ...`` naming the field, file or line and
the fix, exit code 2 (``--debug`` shows the traceback). Each message names what is wrong and what
to do; nothing is written before the check that raises it.
"""

from __future__ import annotations


class PurerecError(Exception):
    """Base of the errors the CLI reports as one line."""


class ConfigError(PurerecError, ValueError):
    """A config value is out of range; the message names the field and the fix."""

    def __init__(self, field_name, value, allowed: str):
        self.field = field_name
        super().__init__(f"config field '{field_name}' = {value!r} is invalid: {allowed}")


class UsageError(PurerecError, ValueError):
    """The command line does not parse (an unknown sub-command option, a value of the wrong type, a
    missing argument); the message names the option and the sub-command's ``--help``."""


class RunDirError(PurerecError, ValueError):
    """A run directory cannot be used as asked (it holds another run, is a file, is read-only)."""


class CheckpointError(PurerecError, RuntimeError):
    """No checkpoint of a run can be restored under its config."""


class SweepSpecError(PurerecError, ValueError):
    """A sweep spec is malformed; the message names the spec file and the key."""


class TrainingError(PurerecError, RuntimeError):
    """Training produced a non-finite loss or metric."""


class WriteError(PurerecError, OSError):
    """A file could not be written (disk full, permissions): names the file."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command at a safe point (``purerec.core.interrupts``). A
    ``KeyboardInterrupt``, not an ``Exception``: no ``except Exception`` catches it. ``run_dir``
    (set by the run) says what ``--resume`` continues."""

    def __init__(self, signum: int, run_dir: str | None = None):
        super().__init__(signum)
        self.signum = int(signum)
        self.run_dir = run_dir

    @property
    def name(self) -> str:
        import signal

        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def write_error(path: str, e: OSError) -> WriteError:
    """An OS error while writing ``path`` (disk full, file too large, permissions) as the one-line
    ``WriteError`` naming the file (a failed ``write()`` carries no file name of its own); the
    command line adds what to do next."""
    what = e.strerror or str(e) or type(e).__name__
    err = WriteError(f"file system: {path}: {what}")
    err.path = path
    return err
