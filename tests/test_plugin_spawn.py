"""spawn_plugin against real processes: capture, caps, timeouts, process groups, env, hygiene."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import trio

from ductile.errors import PluginSpawnError, ProtocolError
from ductile.plugin import spawn as spawn_module
from ductile.plugin.protocol import decode_response
from ductile.plugin.spawn import ENV_ALLOWLIST, SpawnResult, child_env, spawn_plugin

OK_JSON = '{"status":"ok","result":"fine"}'
REQUEST = b'{"protocol":2,"job_id":"j","command":"poll"}\n'


@pytest.fixture(autouse=True, params=["pidfd", "polling"])
def exit_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with pidfd exit notification and with the waitid-polling fallback."""
    if request.param == "polling":
        monkeypatch.setattr(spawn_module, "_open_pidfd", lambda pid: None)
    return str(request.param)


def script(tmp_path: Path, body: str, *, name: str = "run", shebang: str = "#!/bin/sh") -> str:
    path = tmp_path / name
    path.write_text(f"{shebang}\n{body}\n" if shebang else f"{body}\n")
    path.chmod(0o755)
    return str(path)


async def run(entry: str, request: bytes = REQUEST, **kw: object) -> SpawnResult:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("env", child_env())
    kw.setdefault("grace", 0.5)
    return await spawn_plugin(entry, request, **kw)  # type: ignore[arg-type]


def process_gone(pid: int) -> bool:
    """Dead or a zombie (an orphan may wait for a reaper that never comes in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def wait_gone(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        await trio.sleep(0.02)
    return process_gone(pid)


def our_children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this test process."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append((int(entry), fields[0]))
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- basic capture --------------------------------------------------------------------------------


async def test_ok_response_and_exit_code(tmp_path: Path) -> None:
    r = await run(script(tmp_path, f"cat >/dev/null; printf '%s' '{OK_JSON}'"))
    assert (r.exit_code, r.signal, r.timed_out, r.stdout_overflow) == (0, None, False, False)
    assert r.stdout == OK_JSON.encode() and r.stderr == b""
    assert r.pid is not None and r.duration > 0
    assert decode_response(r.stdout).result == "fine"


async def test_nonzero_exit_with_status_ok_is_reported(tmp_path: Path) -> None:
    r = await run(script(tmp_path, f"cat >/dev/null; printf '%s' '{OK_JSON}'; exit 3"))
    assert r.exit_code == 3
    assert decode_response(r.stdout).ok


async def test_request_is_delivered_on_stdin_then_closed_without_arguments(tmp_path: Path) -> None:
    big = b'{"pad":"' + b"x" * 300_000 + b'"}\n'  # larger than a pipe buffer: writer task path
    r = await run(script(tmp_path, 'echo "$#" >&2; cat'), big)
    assert r.stdout == big
    assert r.stderr == b"0\n"


async def test_plugin_that_ignores_stdin_is_fine(tmp_path: Path) -> None:
    r = await run(script(tmp_path, f"printf '%s' '{OK_JSON}'"), b"y" * 1_000_000)
    assert r.exit_code == 0 and decode_response(r.stdout).ok


async def test_nothing_on_stdout(tmp_path: Path) -> None:
    r = await run(script(tmp_path, "cat >/dev/null; echo oops >&2"))
    assert r.stdout == b"" and r.stderr == b"oops\n"
    with pytest.raises(ProtocolError, match="^plugin produced no output on stdout$"):
        decode_response(r.stdout)


async def test_garbage_and_two_objects(tmp_path: Path) -> None:
    r = await run(script(tmp_path, "cat >/dev/null; echo 'not json at all'", name="garbage"))
    with pytest.raises(ProtocolError, match="^plugin output is not valid JSON: "):
        decode_response(r.stdout)
    two = f"cat >/dev/null; echo '{OK_JSON}'; echo '{OK_JSON}'"
    r = await run(script(tmp_path, two, name="two"))
    with pytest.raises(ProtocolError, match="a second JSON value"):
        decode_response(r.stdout)


async def test_own_process_group(tmp_path: Path) -> None:
    body = "cat >/dev/null; read -r _ _ _ _ pgid _ < /proc/$$/stat; echo \"$$ $pgid\""
    r = await run(script(tmp_path, body))
    pid, pgid = map(int, r.stdout.split())
    assert pid == pgid == r.pid
    assert pgid != os.getpgrp()


async def test_sigpipe_is_default_in_the_child(tmp_path: Path) -> None:
    # Python ignores SIGPIPE; if that leaked, `yes` would report a write error on stderr.
    r = await run(script(tmp_path, "cat >/dev/null; yes | head -c 5 >/dev/null; echo done"))
    assert r.stdout == b"done\n" and r.stderr == b""


# --- caps ----------------------------------------------------------------------------------------


async def test_stdout_overflow_keeps_prefix_and_kills(tmp_path: Path) -> None:
    body = "cat >/dev/null; trap '' PIPE; yes 0123456789abcdef | head -c 20971520; sleep 30"
    started = time.monotonic()
    r = await run(script(tmp_path, body), grace=0.5)
    assert time.monotonic() - started < 5
    assert r.stdout_overflow and not r.timed_out
    assert len(r.stdout) == 10 * 1024 * 1024
    assert r.stdout == (b"0123456789abcdef\n" * 700_000)[: 10 * 1024 * 1024]
    assert r.signal in (signal.SIGTERM, signal.SIGKILL)
    assert r.pid is not None and await wait_gone(r.pid)


async def test_small_stdout_cap(tmp_path: Path) -> None:
    r = await run(script(tmp_path, "cat >/dev/null; printf 'abcdefghij'"), stdout_cap=4)
    assert r.stdout_overflow and r.stdout == b"abcd"
    r = await run(script(tmp_path, "cat >/dev/null; printf 'abcd'", name="exact"), stdout_cap=4)
    assert not r.stdout_overflow and r.stdout == b"abcd"


async def test_stderr_truncated_at_64k_without_failing(tmp_path: Path) -> None:
    body = f"cat >/dev/null; head -c 300000 /dev/zero | tr '\\0' e >&2; printf '%s' '{OK_JSON}'"
    r = await run(script(tmp_path, body))
    assert r.stderr_truncated and r.stderr == b"e" * 65536
    assert r.exit_code == 0 and decode_response(r.stdout).ok


# --- timeouts and process groups -----------------------------------------------------------------


async def test_timeout_terms_the_group(tmp_path: Path) -> None:
    entry = script(tmp_path, "cat >/dev/null; printf partial; sleep 30")
    r = await run(entry, timeout=0.3, grace=1)
    assert r.timed_out and r.signal == signal.SIGTERM and r.exit_code is None
    assert r.stdout == b"partial"
    assert 0.3 <= r.duration < 1.5


async def test_timeout_kills_after_grace_when_term_is_ignored(tmp_path: Path) -> None:
    body = "trap '' TERM; cat >/dev/null; while :; do sleep 0.05; done"
    r = await run(script(tmp_path, body), timeout=0.2, grace=0.3)
    assert r.timed_out and r.signal == signal.SIGKILL
    assert 0.5 <= r.duration < 2.0


async def test_output_after_the_deadline_is_discarded(tmp_path: Path) -> None:
    body = (
        "trap 'printf after; exit 0' TERM; cat >/dev/null; printf before; "
        "sleep 30 & wait"
    )
    r = await run(script(tmp_path, body), timeout=0.3, grace=2)
    assert r.timed_out and r.exit_code == 0
    assert r.stdout == b"before"


async def test_grandchild_ignoring_term_and_holding_stdout_dies_on_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    body = (
        "cat >/dev/null\n"
        f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done' &\n"
        "while :; do sleep 0.05; done"
    )
    timeout, grace = 0.3, 0.5
    started = time.monotonic()
    r = await run(script(tmp_path, body), timeout=timeout, grace=grace)
    assert time.monotonic() - started < timeout + grace + 1.0
    assert r.timed_out
    grandchild = int(pidfile.read_text())
    assert await wait_gone(grandchild)


async def test_grandchild_left_behind_after_normal_exit_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    body = (
        "cat >/dev/null\n"
        f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done' &\n"
        f"while [ ! -s {pidfile} ]; do sleep 0.01; done\n"
        f"printf '%s' '{OK_JSON}'"
    )
    started = time.monotonic()
    r = await run(script(tmp_path, body), timeout=10)
    assert time.monotonic() - started < 2
    assert not r.timed_out and r.exit_code == 0 and decode_response(r.stdout).ok
    assert await wait_gone(int(pidfile.read_text()))


async def test_descendant_escaping_the_group_cannot_hang_us(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    body = (
        "cat >/dev/null\n"
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' &\n"
        f"while [ ! -s {pidfile} ]; do sleep 0.01; done\n"
        f"printf '%s' '{OK_JSON}'"
    )
    started = time.monotonic()
    try:
        r = await run(script(tmp_path, body), timeout=10)
        assert time.monotonic() - started < 2
        assert decode_response(r.stdout).ok
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_cancelled_spawn_leaves_no_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    entry = script(tmp_path, f"echo $$ > {pidfile}; cat >/dev/null; sleep 30")
    children_before = set(our_children())
    fds_before = open_fds()
    with trio.move_on_after(0.3):
        await run(entry, timeout=10)
    assert await wait_gone(int(pidfile.read_text()))
    assert set(our_children()) <= children_before  # killed and reaped, not a zombie
    assert open_fds() == fds_before


# --- start failures ------------------------------------------------------------------------------


async def test_start_failures(tmp_path: Path) -> None:
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    noexec.chmod(0o644)
    before = open_fds()
    cases = {
        str(noexec): "Permission denied",
        str(tmp_path / "missing"): "No such file or directory",
        script(tmp_path, "echo hi", name="noshebang", shebang=""): "Exec format error",
    }
    for entry, reason in cases.items():
        with pytest.raises(PluginSpawnError) as info:
            await run(entry)
        assert str(info.value) == f"start process: {entry}: {reason}"
    assert open_fds() == before


# --- environment ---------------------------------------------------------------------------------


def test_child_env_allowlist() -> None:
    environ = {
        "PATH": "/bin", "HOME": "/h", "LC_TIME": "C", "LC_FAKE": "x", "AWS_SECRET_ACCESS_KEY": "k",
        "DUCTILE_TOKEN": "t", "KEEP_ME": "1", "TZ": "UTC",
    }
    assert child_env(["KEEP_ME", "ABSENT", "", "A=B"], environ) == {
        "PATH": "/bin", "HOME": "/h", "TZ": "UTC", "LC_TIME": "C", "KEEP_ME": "1",
    }
    assert len(ENV_ALLOWLIST) == 19


async def test_env_reaches_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_SECRET", "hunter2")
    monkeypatch.setenv("PASS_ME", "yes")
    r = await run(script(tmp_path, "cat >/dev/null; env"), env=child_env(["PASS_ME"]))
    seen = dict(line.split("=", 1) for line in r.stdout.decode().splitlines() if "=" in line)
    assert "MY_API_SECRET" not in seen
    assert seen["PASS_ME"] == "yes"
    assert seen["PATH"] == os.environ["PATH"]


# --- hygiene -------------------------------------------------------------------------------------


async def test_no_leaked_fds_or_zombies_after_many_spawns(tmp_path: Path) -> None:
    entry = script(tmp_path, f"cat >/dev/null; echo x >&2; printf '%s' '{OK_JSON}'")
    hang = script(tmp_path, "cat >/dev/null; sleep 30", name="hang")
    await run(entry)  # warm up anything lazily opened (epoll, etc.)
    before = open_fds()
    children_before = set(our_children())
    results: list[SpawnResult] = []

    async def one(i: int) -> None:
        if i % 10 == 9:
            results.append(await run(hang, timeout=0.05, grace=0.2))
        else:
            results.append(await run(entry))

    limit = trio.CapacityLimiter(4)

    async def limited(i: int) -> None:
        async with limit:
            await one(i)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(limited, i)
    assert len(results) == 50
    assert sum(r.timed_out for r in results) == 5
    assert all(decode_response(r.stdout).ok for r in results if not r.timed_out)
    assert open_fds() == before
    assert set(our_children()) <= children_before


async def test_stdout_is_read_while_stdin_is_written(tmp_path: Path) -> None:
    # cat echoes as it reads: with 2 MB each way, a writer-then-reader design would deadlock.
    payload = b"z" * 2_000_000
    r = await run(script(tmp_path, "cat"), payload)
    assert r.stdout == payload


async def test_json_output_with_big_payload(tmp_path: Path) -> None:
    blob = "q" * 3_000_000
    body = (
        "cat >/dev/null; printf '{\"status\":\"ok\",\"result\":\"%s\"}' "
        "\"$(head -c 3000000 /dev/zero | tr '\\0' q)\""
    )
    r = await run(script(tmp_path, body))
    assert json.loads(r.stdout)["result"] == blob


def test_released_spawn_matches_os_posix_spawn(tmp_path: Path) -> None:
    """The GIL-releasing spawn (ctypes) gives the child exactly the environment, descriptors
    and process group os.posix_spawn would, and refuses what it refuses."""
    import os

    from ductile.plugin.credentials import spawn_released

    script = tmp_path / "show"
    script.write_text("#!/bin/sh\nprintf '%s|%s|%s' \"$ONE\" \"$TWO\" \"$(ps -o pgid= -p $$)\"\n")
    script.chmod(0o755)
    r, w = os.pipe()
    pid = spawn_released(str(script), {"ONE": "a b", "TWO": "é", "PATH": "/usr/bin:/bin"},
                         [(w, 1)], ())
    assert pid is not None
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    assert os.waitpid(pid, 0)[1] == 0
    one, two, pgid = out.decode().split("|")
    assert (one, two, int(pgid)) == ("a b", "é", pid)  # its own process group
    for env in ({"A": "x\0y"}, {"A=B": "c"}, {"": "c"}):
        with pytest.raises(ValueError):
            spawn_released(str(script), env, [], ())
        with pytest.raises(ValueError):
            os.posix_spawn(str(script), [str(script)], env)
    with pytest.raises(FileNotFoundError):
        spawn_released(str(tmp_path / "missing"), {}, [], ())
