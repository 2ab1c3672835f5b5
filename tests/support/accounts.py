"""Throwaway OS accounts for the privilege-separation tests: real users and groups made with
useradd/groupadd and removed afterwards. Only root can make them; `needs_root` skips otherwise
(CI runs as root, so CI never skips these).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creates real OS accounts: needs root and useradd (CI runs as root)",
)


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def os_user(prefix: str = "dtest", *, groups: tuple[str, ...] = ()) -> Iterator[OsUser]:
    """A new system user with its own primary group, in `groups` as well; removed after."""
    name = f"{prefix}{secrets.token_hex(3)}"[:30]
    argv = ["useradd", "--system", "--no-create-home", "--user-group", "--shell",
            "/usr/sbin/nologin"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    _run(*argv, name)
    try:
        entry = pwd.getpwnam(name)
        yield OsUser(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


@contextmanager
def os_group(name: str) -> Iterator[int]:
    """The group `name`, created for the test when it does not exist (and then removed)."""
    try:
        yield grp.getgrnam(name).gr_gid
        return
    except KeyError:
        pass
    _run("groupadd", "--system", name)
    try:
        yield grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


@contextmanager
def open_dir(prefix: str = "ductile-acct-") -> Iterator[str]:
    """A scratch directory every account can traverse (0755 under /tmp). pytest's tmp_path lives
    under a 0700 directory of root's, which an account could not enter to run a plugin."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
