"""SIGINT and SIGTERM: one handler, a stop at the next safe point, no traceback.

``handling()`` (entered by ``train.py``'s ``main``) installs one handler for both signals. It
records the signal, and then:

* outside a ``deferred()`` block (world build, reference policies, a sweep's groups) it raises
  ``Interrupted`` at once, like Ctrl-C's ``KeyboardInterrupt``;
* inside one (a run's training loop with its background checkpoints, Stage I, the evaluation)
  it only records the signal; the run calls ``check()`` at its safe points (between chunks,
  between phases, between evaluations) which raises ``Interrupted`` there, after the current chunk
  and its checkpoint were handed to the checkpointer, so that the run's ``finally`` waits for the
  checkpoint and nothing is cut in half.

A signal raised in a place Python cannot propagate it from (a garbage-collector callback or a
``__del__``: Python prints "Exception ignored" and goes on) is silenced there and stays recorded:
the next ``check()`` (or ``main`` at the end) raises it, so an interrupt is never swallowed.
While an interrupt is under way, exceptions of background threads (Orbax's) print nothing.
``Interrupted`` derives from ``KeyboardInterrupt``, not ``Exception``: no ``except Exception``
(a checkpoint set aside as damaged, a sweep group recorded as failed) ever catches it.

The state is the process's (signals are): one module-level record, reset by ``handling()``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from purerec.errors import Interrupted

_state = {"signal": None, "deferred": 0}
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def pending() -> int | None:
    """The signal received and not yet raised (or None)."""
    return _state["signal"]


def check() -> None:
    """A safe point: raise ``Interrupted`` if a signal arrived."""
    if _state["signal"] is not None:
        raise Interrupted(_state["signal"])


def _handler(signum, frame) -> None:
    first = _state["signal"] is None
    _state["signal"] = signum if first else _state["signal"]
    if _state["deferred"] == 0 and first:
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred():
    """Signals only recorded inside: the code calls ``check()`` at its safe points."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def _quiet_unraisable(previous):
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) or _state["signal"] is not None:
            return  # the interrupt stays recorded; check() raises it at the next safe point
        previous(unraisable)
    return hook


def _quiet_threads(previous):
    def hook(args):
        if _state["signal"] is not None:
            return  # a background thread stopped by the shutdown of an interrupted run
        previous(args)
    return hook


@contextlib.contextmanager
def handling():
    """Install the handler (main thread only; elsewhere a no-op) and restore what was there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    old_unraisable, old_threads = sys.unraisablehook, threading.excepthook
    _state.update(signal=None, deferred=0)
    for s in SIGNALS:
        signal.signal(s, _handler)
    sys.unraisablehook = _quiet_unraisable(old_unraisable)
    threading.excepthook = _quiet_threads(old_threads)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        sys.unraisablehook, threading.excepthook = old_unraisable, old_threads
        _state.update(signal=None, deferred=0)


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)
