"""Start a plugin process as another account, at the price of an ordinary spawn.

Why not `subprocess.Popen(user=..., group=...)`: CPython then forks instead of vforking, because
glibc's `setuid()` changes the credentials of every thread of the process, which a vforked child
shares memory with. On a 70 MB gateway that fork costs about 1.9 ms per job against 0.05 ms for
`posix_spawn`, and it is paid on the event-loop thread.

How instead: Linux keeps credentials per thread; only glibc's wrappers broadcast a change to all
threads. So the spawning thread switches its *own* uid, gid and groups with raw system calls
(Samba's per-thread credentials work the same way), calls `posix_spawn` (vfork + exec: the child
starts with the calling thread's credentials, and exec sets its saved uid to the new effective
uid, so the plugin holds no way back), and switches back at once. The way back for the thread is
its saved uid (0 for a root gateway) or its CAP_SETUID/CAP_SETGID. The window is synchronous: no
other code runs on this thread while it is switched, KeyboardInterrupt is deferred, and other
threads (SQLite's writer, trio's workers) never see a change. If switching back ever failed, the
thread could no longer be trusted, so the process exits at once (status 70) for systemd to
restart it rather than run another job at the wrong identity.

The working directory is set in the child with glibc's `posix_spawn_file_actions_addchdir_np`
(2.29+), which `os.posix_spawn` does not expose; hence `ctypes`, loaded only when an account is
in use. Supported on x86_64 and aarch64 Linux (`unsupported_reason` says why not elsewhere).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ductile.errors import AccountDropError

# Raw system call numbers (setgroups, setresuid, setresgid) per architecture.
_SYSCALLS = {
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149),
}
# glibc's (and musl's) posix_spawn flag values.
_SETPGROUP, _SETSIGDEF, _SETSIGMASK = 0x02, 0x04, 0x08
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_PR_SET_NO_NEW_PRIVS = 38
# Opaque glibc structures, allocated generously (x86_64 uses 80, 336 and 128 bytes).
_OPAQUE = 1024
_NO_CHANGE = -1
EXIT_IDENTITY_LOST = 70


@dataclass(frozen=True)
class Credentials:
    """The identity a plugin process starts with, and its working directory."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    cwd: str
    account: str = ""


def unsupported_reason() -> str | None:
    """Why this host cannot switch a thread's credentials, or None when it can."""
    if sys.platform != "linux":
        return f"privilege separation needs Linux (this is {sys.platform})"
    if platform.machine() not in _SYSCALLS:
        return (f"privilege separation is built for x86_64 and aarch64 (this is "
                f"{platform.machine()})")
    try:
        _libc()
    except (OSError, AttributeError) as exc:
        return f"the C library lacks posix_spawn_file_actions_addchdir_np (glibc 2.29+): {exc}"
    return None


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.posix_spawn_file_actions_addchdir_np  # noqa: B018 -- AttributeError when missing
    char_pp = ctypes.POINTER(ctypes.c_char_p)
    libc.posix_spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                 ctypes.c_void_p, ctypes.c_void_p, char_pp, char_pp]
    libc.syscall.restype = ctypes.c_long
    return libc


def clear_ambient_capabilities() -> None:
    """Empty this thread's ambient capability set, so no plugin it starts inherits CAP_SETUID
    (a gateway given AmbientCapabilities= by systemd would otherwise pass them on through
    exec). The gateway keeps its permitted and effective capabilities."""
    libc = _libc()
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def forbid_new_privileges() -> None:
    """Set no_new_privs on this thread, so every plugin it starts inherits it: a setuid
    program, a file capability or a sudo rule can then never raise a plugin above its account.
    It cannot be undone (by design) and does not limit the thread's own uid switches."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _raw(number: int, *args: Any) -> None:
    import ctypes

    if _libc().syscall(number, *args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _set_groups(groups: Sequence[int]) -> None:
    import ctypes

    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _raw(_SYSCALLS[platform.machine()][0], len(groups), array)


def _set_resuid(r: int, e: int, s: int) -> None:
    _raw(_SYSCALLS[platform.machine()][1], r, e, s)


def _set_resgid(r: int, e: int, s: int) -> None:
    _raw(_SYSCALLS[platform.machine()][2], r, e, s)


@contextmanager
@trio.lowlevel.enable_ki_protection
def acting_as(creds: Credentials) -> Iterator[None]:
    """Run the body with this thread's uid, gid and groups switched to `creds`.

    Raises AccountDropError (nothing left switched) when the kernel refuses the switch.
    """
    ruid, euid, _ = os.getresuid()
    rgid, egid, _ = os.getresgid()
    groups = os.getgroups()
    done: list[str] = []
    try:
        _set_groups(creds.groups)
        done.append("groups")
        _set_resgid(creds.gid, creds.gid, _NO_CHANGE)
        done.append("gid")
        _set_resuid(creds.uid, creds.uid, _NO_CHANGE)
        done.append("uid")
    except OSError as exc:
        _restore(done, ruid, euid, rgid, egid, groups)
        raise AccountDropError(
            f"cannot drop to account {creds.account or creds.uid!r} (uid {creds.uid}, gid "
            f"{creds.gid}): {exc.strerror or exc}; the gateway needs root or "
            "CAP_SETUID and CAP_SETGID") from None
    try:
        yield
    finally:
        _restore(done, ruid, euid, rgid, egid, groups)


def _restore(done: list[str], ruid: int, euid: int, rgid: int, egid: int,
             groups: list[int]) -> None:
    try:
        if "uid" in done:
            _set_resuid(ruid, euid, _NO_CHANGE)
        if "gid" in done:
            _set_resgid(rgid, egid, _NO_CHANGE)
        if "groups" in done:
            _set_groups(groups)
    except OSError as exc:  # cannot happen while the saved ids hold; if it does, stop now
        os.write(2, (f"ductile: FATAL: could not restore the gateway's identity after a "
                     f"plugin spawn ({exc}); exiting\n").encode())
        os._exit(EXIT_IDENTITY_LOST)


def spawn_as(
    creds: Credentials, path: str, env: Mapping[str, str], dup2: Sequence[tuple[int, int]],
    sigdefault: Sequence[int],
) -> int:
    """`posix_spawn` `path` (no arguments) as `creds`, in a new process group, in `creds.cwd`,
    with `dup2` (source, target) descriptors and `sigdefault` reset; returns the pid.

    Raises AccountDropError when the switch is refused, OSError when the spawn fails.
    """
    return _spawn(_libc(), path, env, dup2, sigdefault, creds)


def spawn_released(
    path: str, env: Mapping[str, str], dup2: Sequence[tuple[int, int]],
    sigdefault: Sequence[int],
) -> int | None:
    """`posix_spawn` `path` as the gateway's own identity, with the GIL released for the call.

    `os.posix_spawn` holds the GIL while glibc's vfork+exec runs (a few hundred microseconds
    under load, about 15% of the event-loop thread's time when webhooks and jobs share it);
    a call through ctypes releases it, so the database writer and reader threads run while
    the kernel starts the child. No thread hop: the loop thread makes the call (a hop costs
    more than it saves, and caps the spawn rate). None when this C library cannot (the caller
    uses `os.posix_spawn`). Raises OSError when the spawn fails, ValueError for an
    environment `os.posix_spawn` would refuse.
    """
    try:
        libc = _plain_libc()
    except (OSError, AttributeError):
        return None
    return _spawn(libc, path, env, dup2, sigdefault, None)


@functools.lru_cache(maxsize=1)
def _plain_libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    char_pp = ctypes.POINTER(ctypes.c_char_p)
    libc.posix_spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                 ctypes.c_void_p, ctypes.c_void_p, char_pp, char_pp]
    return libc


def _environ_entries(env: Mapping[str, str]) -> list[bytes]:
    """`NAME=value` entries, refused as `os.posix_spawn` refuses them: a NUL would silently
    cut a C string short, and a `=` in a name would change what the child sees."""
    entries = []
    for key, value in env.items():
        name, text = os.fsencode(key), os.fsencode(value)
        if not name or b"=" in name or b"\0" in name or b"\0" in text:
            raise ValueError(f"illegal environment variable {key!r}")
        entries.append(name + b"=" + text)
    return entries


def _spawn(
    libc: Any, path: str, env: Mapping[str, str], dup2: Sequence[tuple[int, int]],
    sigdefault: Sequence[int], creds: Credentials | None,
) -> int:
    import ctypes

    program = os.fsencode(path)
    if b"\0" in program:
        raise ValueError("embedded null byte in the entrypoint path")
    entries = _environ_entries(env)
    actions = ctypes.create_string_buffer(_OPAQUE)
    attr = ctypes.create_string_buffer(_OPAQUE)
    sigdef = ctypes.create_string_buffer(_OPAQUE)
    empty = ctypes.create_string_buffer(_OPAQUE)
    libc.posix_spawn_file_actions_init(actions)
    libc.posix_spawnattr_init(attr)
    try:
        for source, target in dup2:
            _check(libc.posix_spawn_file_actions_adddup2(actions, source, target))
        if creds is not None:
            _check(libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(creds.cwd)))
        libc.sigemptyset(sigdef)
        for number in sigdefault:
            libc.sigaddset(sigdef, int(number))
        libc.sigemptyset(empty)
        _check(libc.posix_spawnattr_setflags(attr, ctypes.c_short(
            _SETPGROUP | _SETSIGDEF | _SETSIGMASK)))
        _check(libc.posix_spawnattr_setpgroup(attr, 0))
        _check(libc.posix_spawnattr_setsigdefault(attr, sigdef))
        _check(libc.posix_spawnattr_setsigmask(attr, empty))
        argv = (ctypes.c_char_p * 2)(program, None)
        envp = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
        pid = ctypes.c_int()
        if creds is None:
            rc = libc.posix_spawn(ctypes.byref(pid), program, actions, attr, argv, envp)
        else:
            with acting_as(creds):
                rc = libc.posix_spawn(ctypes.byref(pid), program, actions, attr, argv, envp)
        _check(rc)
        return pid.value
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attr)


def signal_as(creds: Credentials, pgid: int, sig: int) -> None:
    """Signal a process group that runs as `creds` from a gateway that is not root (which may
    change uid but not signal other users' processes): kill(2) is allowed when our effective
    uid matches their real uid, so only the effective uid is switched, for the one call."""
    ruid, euid, _ = os.getresuid()
    if euid == 0:
        os.killpg(pgid, sig)
        return
    try:
        _set_resuid(_NO_CHANGE, creds.uid, _NO_CHANGE)
    except OSError:
        raise PermissionError(f"cannot signal account {creds.account!r}") from None
    try:
        os.killpg(pgid, sig)
    finally:
        _restore(["uid"], ruid, euid, 0, 0, [])


def _check(rc: int) -> None:
    if rc != 0:
        raise OSError(rc, os.strerror(rc))
