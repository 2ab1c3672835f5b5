"""The PID lock: one gateway per state database.

The lock file sits beside the database (`data/state.db` -> `data/state.pid`) and is held with
`flock` for the life of the process, across reloads. The file is never deleted: a stale file
with a dead pid is normal and harmless, because the kernel drops the flock when the holder dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from ductile.errors import LockError


def lock_path_for(state_path: str) -> str:
    """`<dir of state.path>/<basename without extension>.pid`."""
    path = Path(state_path)
    return str(path.with_name(path.stem + ".pid"))


@dataclass
class PidLock:
    path: str
    fd: int

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1


def acquire(path: str) -> PidLock:
    """Take the lock or raise LockError naming the path and the holder's pid."""
    if not path:
        raise LockError("lock path is empty")
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    except OSError as exc:
        raise LockError(f"create lock directory: {exc}") from exc
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockError(f"open lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = read_pid(path)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            who = f" by pid {holder}" if holder else ""
            raise LockError(f"acquire lock: {path} is held{who}") from exc
        raise LockError(f"acquire lock: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    return PidLock(path=path, fd=fd)


def read_pid(path: str) -> int | None:
    """The pid written in the lock file, or None when absent, empty or garbled."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """`kill(pid, 0)`; EPERM counts as alive (someone else's live process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
