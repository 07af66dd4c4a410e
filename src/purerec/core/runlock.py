"""One writer per run or sweep directory: an exclusive lock held for the whole run, resume or sweep.

The lock is ``fcntl.flock`` on ``DIR/.lock``, a file holding the holder's PID. It lives *inside*
the directory (it moves and is deleted with it, and needs no write access beside it), so a
directory that does not exist yet is first created with ``os.mkdir`` (atomic: of two racing
writers one creates it, and both then meet at the lock). The lock is taken before any check of
the directory's contents; a second writer gets a ``RunDirError`` naming the holder's PID at once
(it never waits). The OS releases a flock when its holder dies (kill -9 included), so a lock file
left behind by a dead process is not held: the next writer takes it over and says so. On release
the lock file is removed, and a directory this lock created is removed again when nothing was
written into it (a refused or failed start leaves nothing behind).

Lock files work on local file systems; on NFS, flock is emulated with POSIX locks (Linux >= 2.6.12),
and a lock is only as good as the server's lock manager.
"""

from __future__ import annotations

import errno
import fcntl
import os

from purerec.core.errors import RunDirError

LOCK_NAME = ".lock"


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


class DirLock:
    """``with DirLock(path, flag="--out", create=True, log=print):`` holds ``path/.lock`` exclusively.

    ``flag`` names the option in error messages; ``create`` makes the directory (and its missing
    parents) when it does not exist, else a missing directory is an error; ``made`` says the caller
    has just made it (it is removed again on release if nothing was written into it)."""

    def __init__(self, path: str, flag: str = "--out", create: bool = True, log=print, made: bool = False):
        self.path, self.flag, self.create, self.log = path, flag, create, log
        self.lock_path = os.path.join(path, LOCK_NAME)
        self.fd: int | None = None
        self.created: list[str] = [path] if made else []  # directories this lock made, innermost first

    # -- taking it -----------------------------------------------------------------------------
    def _make_dir(self) -> None:
        p = os.path.abspath(self.path)
        if os.path.exists(p):
            if not os.path.isdir(p):
                raise RunDirError(f"{self.flag} {self.path}: is a file, not a directory; choose another {self.flag}")
            return
        if not self.create:
            raise RunDirError(f"{self.flag} {self.path}: no such run directory")
        missing = []
        q = p
        while not os.path.exists(q):
            missing.append(q)
            q = os.path.dirname(q)
        if not os.path.isdir(q):
            raise RunDirError(f"{self.flag} {self.path}: {q} is a file, not a directory; choose another {self.flag}")
        for d in reversed(missing):
            try:
                os.mkdir(d)  # atomic: fails if another process made it first
                self.created.insert(0, d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise RunDirError(f"{self.flag} {self.path}: {d} is a file, not a directory; choose another "
                                      f"{self.flag}") from None
            except PermissionError:
                raise RunDirError(f"{self.flag} {self.path}: {os.path.dirname(d)} is not writable; choose a "
                                  f"writable {self.flag}") from None

    def acquire(self) -> "DirLock":
        self._make_dir()
        try:
            while True:
                try:
                    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                except (PermissionError, OSError) as e:
                    if isinstance(e, PermissionError) or e.errno in (errno.EROFS, errno.EACCES):
                        raise RunDirError(f"{self.flag} {self.path}: is not writable ({e.strerror}); choose a "
                                          f"writable {self.flag}") from None
                    raise
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = _read_pid(fd)
                    os.close(fd)
                    who = f"process {pid}" if pid else "another process"
                    raise RunDirError(f"{self.flag} {self.path}: in use by {who} (PID {pid or '?'}, lock "
                                      f"{self.lock_path}); wait for it to finish or stop it, then try again") from None
                # The holder we waited on may have removed the file before we locked it: lock the
                # file that is at the path now.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            old = _read_pid(fd)
            if old is not None and old != os.getpid():
                state = "no longer running" if not _alive(old) else "it no longer holds it"
                self.log(f"{self.path}: taking over the stale lock of PID {old} ({state})")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            self._remove_created()
            raise
        self.fd = fd
        return self

    # -- releasing it --------------------------------------------------------------------------
    def _remove_created(self) -> None:
        for d in self.created:  # innermost first; only while empty
            try:
                os.rmdir(d)
            except OSError:
                break
        self.created = []

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.lock_path)  # while still held: a waiter re-checks the path (see acquire)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        self._remove_created()

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def visible(names) -> list[str]:
    """A directory listing without the lock file (what a run or sweep wrote)."""
    return [n for n in names if n != LOCK_NAME]
