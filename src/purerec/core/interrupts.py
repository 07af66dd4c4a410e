"""SIGINT and SIGTERM: one handler, a stop at the next safe point, no traceback.

``handling()`` (entered by ``train.py``'s ``main``) installs one handler for both signals. It
records the signal, and then:

* outside a ``deferred()`` block (world build, reference policies, a sweep's groups) it raises
  ``Interrupted`` at once, like Ctrl-C's ``KeyboardInterrupt`` (once; during an import, where an
  exception can crash a C extension's initialisation, it asks again 50 ms later);
* inside one (a run's training loop with its background checkpoints, Stage I, the evaluation)
  it only records the signal; the run calls ``check()`` at its safe points (between chunks,
  between phases, between evaluations) which raises ``Interrupted`` there, after the current chunk
  and its checkpoint were handed to the checkpointer, so that the run's ``finally`` waits for the
  checkpoint and nothing is cut in half.

A signal raised in a place Python cannot propagate it from (a garbage-collector callback or a
``__del__``: Python prints "Exception ignored" and goes on) is silenced there and stays recorded:
the next ``check()`` (or ``main`` at the end) raises it, so an interrupt is never swallowed.

Background threads' errors (Orbax's and TensorStore's writer threads, e.g. on a full disk: a
traceback per thread, "Event loop is closed" ...) are held back while ``handling()`` is active
(``sys.unraisablehook``, ``threading.excepthook``, ERROR records of the ``absl`` logger from other
threads): ``release_held(show)`` prints them at the end when the command succeeded (nothing
explained them) or with ``--debug``, and drops them when the command stops with its one line.
``Interrupted`` derives from ``KeyboardInterrupt``, not ``Exception``: no ``except Exception``
(a checkpoint set aside as damaged, a sweep group recorded as failed) ever catches it.

The state is the process's (signals are): one module-level record, reset by ``handling()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback

from purerec.core.errors import Interrupted

_state = {"signal": None, "deferred": 0, "quiet_after": False, "raised": False}
_held: list[str] = []  # background errors held back (see the module docstring)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def pending() -> int | None:
    """The signal received and not yet raised (or None)."""
    return _state["signal"]


def check() -> None:
    """A safe point: raise ``Interrupted`` if a signal arrived."""
    if _state["signal"] is not None:
        raise Interrupted(_state["signal"])


def _importing(frame) -> bool:
    """Whether the main thread is inside an import (a C extension initialising: an exception
    raised there can crash the interpreter instead of propagating)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame) -> None:
    if _state["signal"] is None:
        _state["signal"] = signum
    if _state["deferred"] or _state["raised"]:
        return
    if _importing(frame):  # ask again once the import is done
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _state["raised"] = True  # once: a second Ctrl-C does not cut the clean-up short
    raise Interrupted(_state["signal"])


@contextlib.contextmanager
def deferred():
    """Signals only recorded inside: the code calls ``check()`` at its safe points."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def _hold_unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return  # the interrupt stays recorded; check() raises it at the next safe point
    head = f"Exception ignored in: {unraisable.object!r}\n" if unraisable.object is not None else ""
    _held.append(head + "".join(traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                                           unraisable.exc_traceback)))


def _hold_thread(args) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _held.append(f"Exception in thread {name}:\n"
                 + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))


class _HoldThreadErrors(logging.Filter):
    """ERROR records logged by threads other than the main one (Orbax's writers) are held back."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and threading.current_thread() is not threading.main_thread():
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            _held.append(f"{record.levelname}:{record.name}:{text}")
            return False
        return True


def _drop_background(previous):
    def hook(unraisable):
        if threading.current_thread() is not threading.main_thread():
            return
        previous(unraisable)
    return hook


def quiet_after() -> None:
    """The process is about to exit behind an error's or an interrupt's one line: leaving
    ``handling()`` keeps background threads' late errors (TensorStore callbacks on a closed event
    loop after a failed checkpoint write) from printing tracebacks under it."""
    _state["quiet_after"] = True


def release_held(show: bool) -> int:
    """Print the held background errors (``show``) or drop them; returns how many there were."""
    n = len(_held)
    if show:
        for text in _held:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
    _held.clear()
    return n


@contextlib.contextmanager
def handling():
    """Install the handler and the holding hooks (main thread only; elsewhere a no-op) and restore
    what was there; the caller calls ``release_held`` before leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    old_unraisable, old_threads = sys.unraisablehook, threading.excepthook
    _state.update(signal=None, deferred=0, raised=False)
    _held.clear()
    for s in SIGNALS:
        signal.signal(s, _handler)
    sys.unraisablehook, threading.excepthook = _hold_unraisable, _hold_thread
    hold = _HoldThreadErrors()
    absl = logging.getLogger("absl")
    absl.addFilter(hold)
    try:
        yield
    finally:
        for s, h in old.items():
            if h is _early or h is None:  # after main: Python's own behaviour again
                h = signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL
            signal.signal(s, h)
        if _state["quiet_after"]:  # the process ends behind its one line: writer threads stay quiet
            sys.unraisablehook = _drop_background(old_unraisable)
            threading.excepthook = lambda args: None
        else:
            sys.unraisablehook, threading.excepthook = old_unraisable, old_threads
            absl.removeFilter(hold)
        _state.update(signal=None, deferred=0, quiet_after=False, raised=False)


def _early(signum, frame) -> None:
    os.write(2, f"interrupted ({signal.Signals(signum).name}) while starting; nothing was written\n".encode())
    os._exit(exit_code(signum))


def install_early() -> None:
    """Before the imports (``train.py``'s first lines): a signal while Python and JAX start up
    exits at once with one line (nothing is written before ``main`` runs), not a traceback from
    inside an import. ``handling()`` replaces it."""
    for s in SIGNALS:
        signal.signal(s, _early)


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)
