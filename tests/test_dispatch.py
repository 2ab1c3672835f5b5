"""The dispatcher with real plugin processes and a real SQLite file, in-process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from support.dispatch import harness
from ductile.dispatch.outcome import backoff_delay
from ductile.store.ledger import read_job_ledger
from support.plugins import make_plugin

NO_BACKOFF = {"max_attempts": 3, "backoff_base": "1ms"}


def echo(**config: object) -> dict:
    return {"echo": {"enabled": True, "config": config, "retry": NO_BACKOFF}}


async def test_an_idle_dispatcher_is_woken_by_enqueue(tmp_path: Path) -> None:
    # tick_interval is an hour: only the enqueue wake-up can start this job in time.
    async with harness(tmp_path, plugins=echo(), service={"tick_interval": "1h"}) as h:
        await trio.sleep(0.05)  # let the dispatcher go to sleep first
        job = await h.run("echo", "poll", {"n": 1}, timeout=10)
        assert job.status == "succeeded"


async def test_success_merges_state_updates_and_passes_state_back(tmp_path: Path) -> None:
    async with harness(tmp_path, plugins=echo()) as h:
        await h.run("echo")
        await h.run("echo")
        assert (await h.rt.state.get("echo"))["count"] == 2


async def test_retryable_error_is_retried_then_failed_with_every_attempt_recorded(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, plugins=echo(mode="error", message="nope")) as h:
        job = await h.run("echo", max_attempts=3)
        assert (job.status, job.attempt, job.last_error) == ("failed", 3, "nope")
        attempts = await h.rt.queue.attempts(job.id)
        assert [a.outcome for a in attempts] == ["plugin_error"] * 3
        assert all(a.exit_code == 0 for a in attempts)


@pytest.mark.parametrize(("config", "reason"), [
    ({"mode": "error", "retry": False}, "plugin_retry_false"),
    ({"mode": "error", "exit_code": 78}, "exit_code_78"),
])
async def test_permanent_failures_are_not_retried(tmp_path: Path, config: dict,
                                                  reason: str) -> None:
    async with harness(tmp_path, plugins=echo(**config)) as h:
        job = await h.run("echo", max_attempts=3)
        assert (job.status, job.attempt) == ("failed", 1)
        assert [a.outcome for a in await h.rt.queue.attempts(job.id)] == [reason]


async def test_a_hanging_plugin_times_out_and_is_killed(tmp_path: Path) -> None:
    plugins = echo(mode="hang")
    plugins["echo"]["timeouts"] = {"poll": "300ms"}
    async with harness(tmp_path, plugins=plugins, kill_grace=0.2) as h:
        job = await h.run("echo", max_attempts=1)
        assert job.status == "timed_out"
        assert job.last_error == "plugin execution timed out after 300ms"


BAD_PLUGINS = {
    "silent": ("cat >/dev/null", "plugin produced no output on stdout"),
    "garbage": ("cat >/dev/null; echo 'this is not json'", "plugin output is not valid JSON"),
    "twice": ("cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"a\"}"
              "{\"status\":\"ok\",\"result\":\"b\"}'", "plugin output is not valid JSON"),
    "flood": ("cat >/dev/null; head -c 20000000 /dev/zero | tr '\\0' 'x'",
              "plugin stdout exceeded max size 10485760 bytes"),
}


@pytest.mark.parametrize("name", sorted(BAD_PLUGINS))
async def test_misbehaving_plugins_fail_cleanly_and_the_database_stays_sound(
    tmp_path: Path, name: str
) -> None:
    script, needle = BAD_PLUGINS[name]
    root = tmp_path / "plugins"
    make_plugin(root, name, script)
    plugins = {name: {"enabled": True, "retry": {"max_attempts": 1, "backoff_base": "1ms"}}}
    async with harness(tmp_path, plugins=plugins, plugin_roots=[str(root)]) as h:
        job = await h.run(name, max_attempts=1)
        assert job.status == "failed"
        assert needle in (job.last_error or "")
        db_path = h.rt.config.state_path
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_nonzero_exit_with_status_ok_succeeds_and_records_the_exit_code(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "grumpy",
                "cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"fine\"}'; exit 3")
    async with harness(tmp_path, plugins={"grumpy": {"enabled": True}},
                       plugin_roots=[str(root)]) as h:
        job = await h.run("grumpy")
        assert job.status == "succeeded"
        assert (await h.rt.queue.attempts(job.id))[0].exit_code == 3


async def test_a_grandchild_ignoring_sigterm_does_not_survive_a_timeout(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    pidfile = tmp_path / "grandchild.pid"
    make_plugin(root, "sneaky",
                f"cat >/dev/null; sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 60' & "
                "sleep 60")
    plugins = {"sneaky": {"enabled": True, "timeouts": {"poll": "300ms"},
                          "retry": {"max_attempts": 1, "backoff_base": "1ms"}}}
    async with harness(tmp_path, plugins=plugins, plugin_roots=[str(root)],
                       kill_grace=0.2) as h:
        job = await h.run("sneaky", max_attempts=1, timeout=15)
        assert job.status == "timed_out"
    pid = int(pidfile.read_text())
    status = Path(f"/proc/{pid}/status")
    # Gone, or a zombie waiting for a reaper that is not us (containers without an init).
    assert not status.exists() or "State:\tZ" in status.read_text()


async def test_unknown_plugin_fails_without_retry(tmp_path: Path) -> None:
    async with harness(tmp_path, plugins=echo()) as h:
        job = await h.run("nonexistent", max_attempts=4)
        assert (job.status, job.attempt) == ("failed", 1)
        assert job.last_error == "plugin 'nonexistent' not found in registry"


async def test_an_unsafe_plugin_runs_one_job_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "serial",
                "cat >/dev/null; sleep 0.2; echo '{\"status\":\"ok\",\"result\":\"x\"}'",
                concurrency_safe=False)
    async with harness(tmp_path, plugins={"serial": {"enabled": True}},
                       plugin_roots=[str(root)], service={"max_workers": 2}) as h:
        jobs = [await h.rt.queue.enqueue("serial", "poll", None, "test") for _ in range(3)]
        done = [await h.wait(j.id) for j in jobs]
        assert {j.status for j in done} == {"succeeded"}
        spans = []
        for j in done:
            attempt = (await h.rt.queue.attempts(j.id))[0]
            spans.append((attempt.started_at, attempt.finished_at))
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"overlap: {spans}"


async def test_the_ledger_shows_attempts_transitions_and_the_snapshot(tmp_path: Path) -> None:
    async with harness(tmp_path, plugins=echo(mode="error")) as h:
        job = await h.run("echo", max_attempts=2)
        db_path, snapshot = h.rt.config.state_path, h.rt.snapshot_id
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    ledger = read_job_ledger(conn, job.id)
    conn.close()
    assert ledger is not None
    assert [t.to_status for t in ledger["transitions"]] == [
        "queued", "running", "queued", "running", "failed"]
    assert len(ledger["attempts"]) == 2
    assert ledger["snapshot"]["id"] == snapshot
    assert json.loads(ledger["logs"][-1].result)["status"] == "error"


def test_backoff_doubles_with_bounded_jitter() -> None:
    import random

    rng = random.Random(7)
    for attempt, base in ((1, 30.0), (2, 60.0), (3, 120.0)):
        delay = backoff_delay(30.0, attempt, rng)
        assert base <= delay <= base + 7.5


async def test_state_updates_over_the_cap_fail_the_job_and_keep_the_old_state(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "hoarder",
                "cat >/dev/null; printf '{\"status\":\"ok\",\"result\":\"x\","
                "\"state_updates\":{\"blob\":\"'; head -c 1100000 /dev/zero | tr '\\0' 'a'; "
                "printf '\"}}'")
    async with harness(tmp_path, plugins={"hoarder": {"enabled": True}},
                       plugin_roots=[str(root)]) as h:
        job = await h.run("hoarder")
        assert job.status == "failed"
        assert (job.last_error or "").startswith("state update rejected:")
        assert await h.rt.state.get("hoarder") == {}


async def test_a_delayed_retry_wakes_the_dispatcher_at_its_due_time(tmp_path: Path) -> None:
    # tick_interval is an hour: only the due-time wake-up can run the second attempt in time.
    plugins = {"echo": {"enabled": True, "config": {"mode": "error"},
                        "retry": {"max_attempts": 2, "backoff_base": "200ms"}}}
    async with harness(tmp_path, plugins=plugins, service={"tick_interval": "1h"}) as h:
        job = await h.run("echo", max_attempts=2, timeout=10)
        assert (job.status, job.attempt) == ("failed", 2)


async def test_jobs_enqueued_while_the_dispatcher_is_busy_are_all_run(tmp_path: Path) -> None:
    async with harness(tmp_path, plugins=echo(), service={"tick_interval": "1h",
                                                          "max_workers": 2}) as h:
        jobs = []
        for i in range(12):
            jobs.append(await h.rt.queue.enqueue("echo", "poll", {"i": i}, "test"))
            if i % 3 == 0:
                await trio.sleep(0.01)
        finished = [await h.wait(j.id, timeout=20) for j in jobs]
        assert {j.status for j in finished} == {"succeeded"}


@pytest.mark.parametrize(("config", "max_attempts", "reasons"), [
    ({"mode": "error", "message": "nope"}, 2,
     ["plugin_error: nope", "attempts_exhausted: nope"]),
    ({"mode": "error", "message": "nope", "retry": False}, 3, ["plugin_retry_false: nope"]),
    ({"mode": "error", "message": "nope", "exit_code": 78}, 3, ["exit_code_78: nope"]),
    ({"mode": "protocol_error"}, 1, ["attempts_exhausted: plugin spawn failed: decode response"]),
])
async def test_every_retry_decision_is_recorded_with_its_reason(
    tmp_path: Path, config: dict, max_attempts: int, reasons: list[str]
) -> None:
    async with harness(tmp_path, plugins=echo(**config)) as h:
        job = await h.run("echo", max_attempts=max_attempts)
        decided = [t.reason for t in await h.rt.queue.transitions(job.id)
                   if t.from_status == "running"]
    assert len(decided) == len(reasons)
    for got, expected in zip(decided, reasons):
        assert got is not None and got.startswith(expected), (got, expected)


async def test_a_timeout_is_recorded_as_timeout(tmp_path: Path) -> None:
    plugins = echo(mode="hang")
    plugins["echo"]["timeouts"] = {"poll": "200ms"}
    async with harness(tmp_path, plugins=plugins, kill_grace=0.1) as h:
        job = await h.run("echo", max_attempts=2)
        decided = [t.reason for t in await h.rt.queue.transitions(job.id)
                   if t.from_status == "running"]
    assert decided[0].startswith("timeout: plugin execution timed out after 200ms")
    assert decided[1].startswith("attempts_exhausted: plugin execution timed out")
