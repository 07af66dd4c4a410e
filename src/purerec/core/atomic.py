"""Atomic file writes: write a temp file beside the target, then rename over it."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, IO

from purerec.core.errors import write_error, WriteError


def atomic_write(path: str, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call ``write(fh)`` on a temp file and rename it to ``path``; on any error remove the temp file
    (an OS error becomes ``WriteError`` naming ``path``)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from None  # names the file (a failed write() does not)
        raise
