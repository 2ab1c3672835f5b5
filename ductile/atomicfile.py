"""Replace a file so that a crash leaves the old version or the new one, never half of either.

One implementation for every file the gateway writes whole (the vault, the `.checksums` seal):
a temp file in the same directory with the final mode from the start, written and fsynced,
renamed over the target, then the directory fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: bytes, *, mode: int = 0o600, prefix: str = ".tmp-") -> None:
    """Replace `path` with `data` (mode `mode`). Raises OSError; the old file is then intact
    and no temp file is left behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
