"""Run one plugin process for one command: the only place that starts plugin processes.

Contract (the same as the Go original's): the entrypoint runs with no arguments in its own
process group, with an allowlisted environment; stdin gets the request and is closed; stdout is
captured up to 10 MiB (past that the attempt fails and the group is killed), stderr up to 64 KiB
(the rest is dropped, never a failure). On timeout the group gets SIGTERM, then SIGKILL after the
grace period; the same when the caller sets its `stop` event (an operator's cancel), and the
result then says `stopped`. When the main process has exited, whatever is left of its group is
killed, so no grandchild outlives its job, and a descendant that escaped the group cannot hang
us by holding stdout open.

`on_stderr_line` taps stderr as it is read: each line, decoded, goes to the caller while the
plugin runs (`ductile job logs --follow`). The tap sees every byte read, past the cap too; what
is stored is unchanged.

Why not `trio.run_process`: it starts each child from a worker thread, which caps throughput at
about 1,270 spawns/s on two cores; `os.posix_spawn` (vfork+exec in glibc) straight from the trio
thread, non-blocking pipes read with `wait_readable`, and a pidfd for exit notification do the same
work without a thread hop (and through ctypes, so the GIL is released while the kernel
starts the child: credentials.spawn_released). The process is inspected with `waitid(WNOWAIT)` before it is reaped, so
its pid (and therefore its process-group id) cannot be reused while we still signal the group.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from ductile.errors import AccountDropError, PluginSpawnError
from ductile.plugin.credentials import Credentials, signal_as, spawn_as, spawn_released
from ductile.plugin.lines import LineSplitter

STDOUT_CAP = 10 * 1024 * 1024
STDERR_CAP = 64 * 1024
DEFAULT_GRACE = 5.0
_CHUNK = 64 * 1024
_REAP_WAIT = 1.0  # after SIGKILL, how long we wait before handing reaping to a background task

# The only variables a plugin inherits besides the passthrough list (as the Go original's newer
# releases do): secrets never travel in the environment.
ENV_ALLOWLIST = (
    "PATH", "HOME", "TZ", "LANG", "LANGUAGE", "TMPDIR",
    "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "LC_MONETARY", "LC_MESSAGES",
    "LC_PAPER", "LC_NAME", "LC_ADDRESS", "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION",
)

# Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, so reset them (and any
# other signal the gateway may have set to SIG_IGN) to the default in the child.
_SIGDEF = tuple(
    getattr(signal, name)
    for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP", "SIGUSR1",
                 "SIGUSR2", "SIGCHLD", "SIGALRM")
    if hasattr(signal, name)
)


@dataclass(frozen=True)
class SpawnResult:
    """What one plugin process did. `exit_code` is None when it was killed by a signal (see
    `signal`) or could not be reaped; `stdout` holds at most the cap (the prefix on overflow)."""

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_overflow: bool
    stderr_truncated: bool
    timed_out: bool
    duration: float
    pid: int | None
    # The caller's `stop` ended the run (an operator's cancel): the group got SIGTERM, then
    # SIGKILL after the grace, as on a timeout.
    stopped: bool = False


def child_env(
    passthrough: Sequence[str] = (), environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The plugin's environment: the allowlist plus `service.plugin_env_passthrough` names.

    Secrets never travel in the environment (they go in the request's `secrets`), so nothing
    else of the gateway's environment is passed on.
    """
    names = list(ENV_ALLOWLIST) + [n for n in passthrough if n not in ENV_ALLOWLIST]
    return {n: environ[n] for n in names if n and "=" not in n and n in environ}


async def spawn_plugin(
    entrypoint: str,
    request: bytes,
    *,
    timeout: float,
    env: Mapping[str, str],
    grace: float = DEFAULT_GRACE,
    stdout_cap: int = STDOUT_CAP,
    stderr_cap: int = STDERR_CAP,
    credentials: Credentials | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    stop: trio.Event | None = None,
) -> SpawnResult:
    """Run `entrypoint` once with `request` on stdin and collect its result.

    With `credentials` the process starts as that account, in its working directory
    (`plugin/credentials.py`). Raises PluginSpawnError only when the process cannot be
    started (AccountDropError when the drop itself was refused); everything that happens after
    that (timeout, overflow, garbage, a crash) is reported in the SpawnResult.

    `on_stderr_line` is called (synchronously, so it must not block) with each stderr line as
    it is read, and with an unfinished last line at the end.
    """
    started = time.monotonic()
    child = _Child.start(entrypoint, env, credentials)
    try:
        return await _supervise(child, request, timeout, grace, stdout_cap, stderr_cap, started,
                                on_stderr_line, stop=stop)
    finally:
        await child.dispose()


# --- the child process ---------------------------------------------------------------------------


class _Child:
    """A started plugin process and the parent's ends of its pipes.

    Owns every descriptor it opened and closes each exactly once (a double close could close a
    descriptor some other task has just been given).
    """

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int,
                 credentials: Credentials | None = None) -> None:
        self.pid = pid
        self.credentials = credentials
        self.fds = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        self.pidfd = _open_pidfd(pid)
        self.status: int | None = None  # raw wait status once reaped
        self.reaped = False
        self._waited: set[int] = set()  # fds trio has seen; only these need notify_closing

    @classmethod
    def start(cls, entrypoint: str, env: Mapping[str, str],
              credentials: Credentials | None = None) -> _Child:
        opened: list[int] = []
        try:
            in_r, in_w = _pipe(opened)
            out_r, out_w = _pipe(opened)
            err_r, err_w = _pipe(opened)
            for fd in (in_w, out_r, err_r):
                os.set_blocking(fd, False)
            if credentials is not None:
                pid = spawn_as(credentials, entrypoint, env,
                               [(in_r, 0), (out_w, 1), (err_w, 2)], _SIGDEF)
            else:
                pid = _posix_spawn(entrypoint, env, in_r, out_w, err_w)
        except AccountDropError:
            for fd in opened:
                os.close(fd)
            raise
        except (OSError, ValueError, TypeError) as exc:
            for fd in opened:
                os.close(fd)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PluginSpawnError(f"start process: {entrypoint}: {reason}") from None
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        return cls(pid, in_w, out_r, err_r, credentials)

    def fd(self, name: str) -> int | None:
        return self.fds.get(name)

    async def wait_readable(self, fd: int) -> None:
        self._waited.add(fd)
        await trio.lowlevel.wait_readable(fd)

    async def wait_writable(self, fd: int) -> None:
        self._waited.add(fd)
        await trio.lowlevel.wait_writable(fd)

    def close(self, name: str) -> None:
        """Close one of our pipe ends (once), waking any task waiting on it."""
        fd = self.fds.pop(name, None)
        if fd is not None:
            self._close_fd(fd)

    def _close_fd(self, fd: int) -> None:
        if fd in self._waited:
            self._waited.discard(fd)
            trio.lowlevel.notify_closing(fd)
        os.close(fd)

    def exited(self) -> bool:
        """True once the process has terminated (it may still be an unreaped zombie)."""
        if self.reaped:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True  # reaped behind our back; nothing left to wait for

    async def wait_exited(self) -> None:
        """Sleep until the process terminates, without reaping it."""
        if self.pidfd is not None:
            while not self.exited():
                await self.wait_readable(self.pidfd)
            return
        delay = 0.0005
        while not self.exited():
            await trio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group; before reaping, the zombie leader keeps the group id
        reserved, so this cannot hit an unrelated group."""
        if self.reaped:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # A gateway that is not root may switch uid but not signal another user's
            # processes: signal as the plugin's account. Otherwise a member changed
            # credentials (a setuid program): at least signal the leader.
            if self.credentials is not None:
                try:
                    signal_as(self.credentials, self.pid, sig)
                    return
                except OSError:
                    pass
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass

    def reap(self) -> bool:
        """Collect the exit status if the process has terminated; True when reaped."""
        if self.reaped:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            return False
        self.reaped = True
        self.status = status if status >= 0 else None
        self._close_pidfd()
        return True

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            self._close_fd(self.pidfd)
            self.pidfd = None

    async def dispose(self) -> None:
        """Close every pipe end; if the process still runs (we were cancelled), kill its group
        and reap it, handing the reaping to a background task if it takes too long."""
        for name in list(self.fds):
            self.close(name)
        if self.reaped:
            return
        self.signal_group(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(_REAP_WAIT):
                await self.wait_exited()
            if self.exited():
                self.reap()
                return
        trio.lowlevel.spawn_system_task(self._reap_later, name=f"reap plugin pid {self.pid}")

    async def _reap_later(self) -> None:
        """Background reaper for a process that outlived SIGKILL by a second (D state); a system
        task must never raise, so OS errors are swallowed."""
        try:
            await self.wait_exited()
            self.reap()
        except OSError:
            pass


def _posix_spawn(entrypoint: str, env: Mapping[str, str], stdin: int, stdout: int,
                 stderr: int) -> int:
    pid = spawn_released(entrypoint, env, [(stdin, 0), (stdout, 1), (stderr, 2)], _SIGDEF)
    if pid is not None:
        return pid
    return os.posix_spawn(
        entrypoint,
        [entrypoint],
        dict(env),
        file_actions=[
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ],
        setpgroup=0,
        setsigdef=_SIGDEF,
        setsigmask=(),
    )


def _pipe(opened: list[int]) -> tuple[int, int]:
    """A close-on-exec pipe whose ends are never 0, 1 or 2 (so the dup2 actions cannot clobber
    one another when the gateway itself runs with a standard stream closed)."""
    fds = list(os.pipe2(os.O_CLOEXEC))
    opened.extend(fds)
    for i, fd in enumerate(fds):
        if fd < 3:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            opened.append(high)
            opened.remove(fd)
            os.close(fd)
            fds[i] = high
    return fds[0], fds[1]


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (Linux >= 5.3), else None and we poll waitid instead."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd


# --- capture -------------------------------------------------------------------------------------


class _Capture:
    """Reads one of the child's output pipes into a capped buffer.

    `stop_at_cap` (stdout): past the cap, stop reading and report overflow, keeping the prefix.
    Otherwise (stderr): keep the first `cap` bytes, read and drop the rest so the child never
    blocks on a full pipe.
    """

    def __init__(self, child: _Child, name: str, cap: int, *, stop_at_cap: bool,
                 tap: LineSplitter | None = None) -> None:
        self.child = child
        self.name = name
        self.cap = cap
        self.stop_at_cap = stop_at_cap
        self.tap = tap
        self.data = bytearray()
        self.over = False
        self.done = False

    def read_available(self) -> None:
        """Read what the pipe holds right now, without blocking."""
        fd = self.child.fd(self.name)
        while not self.done and fd is not None:
            try:
                chunk = os.read(fd, _CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.done = True
                self.child.close(self.name)
                return
            if self.tap is not None:
                self.tap.feed(chunk)
            self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) <= room:
            self.data += chunk
            return
        if room > 0:
            self.data += chunk[:room]
        self.over = True
        if self.stop_at_cap:
            self.done = True
            self.child.close(self.name)

    async def run(self, on_overflow: Callable[[], None]) -> None:
        while True:
            self.read_available()
            if self.done:
                if self.over:
                    on_overflow()
                return
            fd = self.child.fd(self.name)
            if fd is None:
                return
            await self.child.wait_readable(fd)


async def _write_stdin(child: _Child, request: bytes) -> None:
    """Feed the request and close stdin. A plugin that exits without reading is not an error."""
    view = memoryview(request)
    try:
        while view:
            fd = child.fd("stdin")
            if fd is None:
                return
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await child.wait_writable(fd)
                continue
            view = view[written:]
    except OSError:
        pass  # EPIPE and friends: the plugin stopped reading; its response decides
    finally:
        child.close("stdin")


def _write_stdin_now(child: _Child, request: bytes) -> bytes:
    """Write what fits without blocking (usually everything); the rest is left for a task."""
    fd = child.fd("stdin")
    if fd is None:
        return b""
    try:
        written = os.write(fd, request) if request else 0
    except BlockingIOError:
        return request
    except OSError:
        child.close("stdin")
        return b""
    rest = request[written:]
    if not rest:
        child.close("stdin")
    return rest


# --- supervision ---------------------------------------------------------------------------------


async def _supervise(
    child: _Child,
    request: bytes,
    timeout: float,
    grace: float,
    stdout_cap: int,
    stderr_cap: int,
    started: float,
    on_stderr_line: Callable[[str], None] | None = None,
    *,
    stop: trio.Event | None = None,
) -> SpawnResult:
    tap = LineSplitter(on_stderr_line) if on_stderr_line is not None else None
    out = _Capture(child, "stdout", stdout_cap, stop_at_cap=True)
    err = _Capture(child, "stderr", stderr_cap, stop_at_cap=False, tap=tap)
    waiting = trio.CancelScope(deadline=trio.current_time() + timeout)
    timed_out = False
    kept_stdout: int | None = None
    rest = _write_stdin_now(child, request)
    async with trio.open_nursery() as nursery:
        if rest:
            nursery.start_soon(_write_stdin, child, rest)
        nursery.start_soon(out.run, waiting.cancel)
        nursery.start_soon(err.run, _ignore)
        if stop is not None:
            nursery.start_soon(_cancel_when_set, stop, waiting)
        with waiting:
            await child.wait_exited()
        stopped = stop is not None and stop.is_set() and not child.exited()
        if not child.exited():  # deadline, overflow or stop; not the exit-at-deadline race
            if not out.over and not stopped:
                timed_out = True
                kept_stdout = len(out.data)  # output after the deadline is discarded
            await _terminate(child, grace)
        child.signal_group(signal.SIGKILL)  # leftovers: no grandchild outlives the job
        await _reap(child)
        nursery.cancel_scope.cancel()
    # The group is dead; take what is already in the pipes but do not wait for a writer that
    # escaped the group and still holds them open.
    out.read_available()
    err.read_available()
    if tap is not None:
        tap.close()
    stdout = bytes(out.data if kept_stdout is None else out.data[:kept_stdout])
    return SpawnResult(
        exit_code=_exit_code(child.status),
        signal=_term_signal(child.status),
        stdout=stdout,
        stderr=bytes(err.data),
        stdout_overflow=out.over,
        stderr_truncated=err.over,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        pid=child.pid,
        stopped=stopped,
    )


def _ignore() -> None:
    return None


async def _cancel_when_set(stop: trio.Event, scope: trio.CancelScope) -> None:
    """End the wait for the plugin once `stop` is set (the caller's cancel)."""
    await stop.wait()
    scope.cancel()


async def _terminate(child: _Child, grace: float) -> None:
    """SIGTERM the group, wait `grace` for the leader, then SIGKILL the group."""
    child.signal_group(signal.SIGTERM)
    with trio.move_on_after(grace):
        await child.wait_exited()
    if not child.exited():
        child.signal_group(signal.SIGKILL)


async def _reap(child: _Child) -> None:
    """Wait (bounded) for the leader to be gone and collect its status."""
    with trio.move_on_after(_REAP_WAIT):
        await child.wait_exited()
    child.reap()


def _exit_code(status: int | None) -> int | None:
    if status is None or not os.WIFEXITED(status):
        return None
    return os.WEXITSTATUS(status)


def _term_signal(status: int | None) -> int | None:
    if status is None or not os.WIFSIGNALED(status):
        return None
    return os.WTERMSIG(status)
