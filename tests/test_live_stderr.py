"""The live stderr path below HTTP: the spawn's tap (real plugin processes) and the per-attempt
ring followers read (dispatch/live.py). The gateway end to end is in test_job_follow.py."""

from __future__ import annotations

from pathlib import Path

import trio
from trio.testing import wait_all_tasks_blocked

from ductile.dispatch.live import AttemptFeed, LiveStderr
from ductile.plugin.lines import LineSplitter
from ductile.plugin.spawn import child_env, spawn_plugin

OK_JSON = '{"status":"ok","result":"fine"}'
REQUEST = b'{"protocol":2,"job_id":"j","command":"poll"}\n'


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "run"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


# --- the spawn's tap ----------------------------------------------------------------------------


async def test_the_tap_hands_on_each_line_while_the_plugin_runs(tmp_path: Path) -> None:
    """The plugin writes a line, then waits for a file only the test creates after it saw
    that line: the line must have come while the plugin was still running."""
    gate = tmp_path / "go"
    body = (f"cat >/dev/null; echo 'before' >&2; while [ ! -e {gate} ]; do sleep 0.01; done; "
            f"printf 'after\\r\\nno newline' >&2; printf '%s' '{OK_JSON}'")
    seen: list[str] = []
    first = trio.Event()

    def on_line(line: str) -> None:
        seen.append(line)
        first.set()

    async with trio.open_nursery() as nursery:
        async def release() -> None:
            await first.wait()
            assert seen == ["before"]
            gate.touch()

        nursery.start_soon(release)
        result = await spawn_plugin(script(tmp_path, body), REQUEST, timeout=10.0,
                                    env=child_env(), on_stderr_line=on_line)
    assert seen == ["before", "after", "no newline"]
    assert result.stderr == b"before\nafter\r\nno newline"  # stored exactly as written
    assert result.exit_code == 0


async def test_the_tap_sees_past_the_stored_cap_and_changes_nothing_stored(
        tmp_path: Path) -> None:
    body = (f"cat >/dev/null; i=0; while [ $i -lt 50 ]; do echo \"line $i\" >&2; "
            f"i=$((i+1)); done; printf '%s' '{OK_JSON}'")
    seen: list[str] = []
    tapped = await spawn_plugin(script(tmp_path, body), REQUEST, timeout=10.0, env=child_env(),
                                stderr_cap=64, on_stderr_line=seen.append)
    plain = await spawn_plugin(script(tmp_path, body), REQUEST, timeout=10.0, env=child_env(),
                               stderr_cap=64)
    assert seen == [f"line {i}" for i in range(50)]
    assert tapped.stderr == plain.stderr == b"".join(f"line {i}\n".encode()
                                                     for i in range(50))[:64]
    assert tapped.stderr_truncated and plain.stderr_truncated


async def test_invalid_utf8_is_replaced_not_refused(tmp_path: Path) -> None:
    body = f"cat >/dev/null; printf 'caf\\303\\251 \\377\\n' >&2; printf '%s' '{OK_JSON}'"
    seen: list[str] = []
    await spawn_plugin(script(tmp_path, body), REQUEST, timeout=10.0, env=child_env(),
                       on_stderr_line=seen.append)
    assert seen == ["café \ufffd"]


def test_a_runaway_line_is_cut() -> None:
    seen: list[str] = []
    splitter = LineSplitter(seen.append, max_line=4)
    splitter.feed(b"abcdefghij")
    assert seen == ["abcd", "efgh"]
    splitter.feed(b"\n")
    splitter.close()
    assert seen == ["abcd", "efgh", "ij"]


# --- the ring -----------------------------------------------------------------------------------


async def test_a_follower_reads_every_line_in_order_then_the_end() -> None:
    feed = AttemptFeed("j", 1)
    cursor = feed.follow()
    feed.publish("one")
    feed.publish("two")
    batch = await cursor.next()
    assert batch.lines == ("one", "two") and batch.dropped == 0 and not batch.ended
    feed.publish("three")
    feed.end()
    feed.publish("after the end")  # ignored: the attempt is over
    batch = await cursor.next()
    assert batch.lines == ("three",) and batch.ended


async def test_a_follower_waits_for_the_next_line() -> None:
    feed = AttemptFeed("j", 1)
    cursor = feed.follow()
    got: list[tuple[str, ...]] = []

    async def read() -> None:
        got.append((await cursor.next()).lines)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await wait_all_tasks_blocked()
        assert got == []
        feed.publish("late")
    assert got == [("late",)]


async def test_a_slow_follower_is_told_how_many_lines_it_missed() -> None:
    feed = AttemptFeed("j", 1, max_lines=3)
    fast, slow = feed.follow(), feed.follow()
    for i in range(4):
        feed.publish(f"l{i}")
    batch = await fast.next()
    assert batch.dropped == 1 and batch.lines == ("l1", "l2", "l3")  # l0 scrolled out unread
    for i in range(4, 10):
        feed.publish(f"l{i}")
    batch = await slow.next()
    assert batch.dropped == 7 and batch.lines == ("l7", "l8", "l9")
    batch = await fast.next()
    assert batch.dropped == 3 and batch.lines == ("l7", "l8", "l9")  # l4..l6


async def test_the_ring_is_bounded_in_bytes_and_keeps_the_newest_line() -> None:
    feed = AttemptFeed("j", 1, max_lines=1000, max_bytes=10)
    feed.publish("aaaa")  # 5 bytes with its line ending
    feed.publish("bbbb")
    feed.publish("cccc")
    assert (await feed.follow().next()).lines == ("bbbb", "cccc")
    feed.publish("x" * 50)  # alone over the limit: still kept
    assert feed.read(0).lines == ("x" * 50,)


async def test_a_late_follower_sees_what_came_before_it_joined() -> None:
    live = LiveStderr()
    with live.attempt("j", 2) as publish:
        publish("early")
        feed = live.feed("j")
        assert feed is not None and feed.attempt == 2
        batch = await feed.follow().next()
        assert batch.lines == ("early",) and batch.dropped == 0
    assert live.feed("j") is None
    assert feed.ended


async def test_a_watcher_wakes_when_the_next_attempt_starts() -> None:
    live = LiveStderr()
    started = live.watch_start("j")
    other = live.watch_start("k")
    with live.attempt("j", 1):
        assert started.is_set() and not other.is_set()
    live.unwatch("k", other)
    live.unwatch("j", started)  # already consumed: harmless
