"""A scheduled plugin that fails trips its breaker, is probed after reset_after, and closes again
once it recovers: real dispatcher, real plugin processes, real clock, real SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from ductile.store.jobs import utcnow
from support.plugins import make_plugin
from support.scheduler import World, scheduler_world


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


def transitions(w: World) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in w.db_rows(  # type: ignore[misc]
        "SELECT from_state, to_state, reason FROM circuit_breaker_transitions "
        "WHERE plugin = 'flaky' AND command = 'poll' ORDER BY created_at, rowid")]


async def test_breaker_opens_probes_reopens_and_closes_end_to_end(tmp_path: Path) -> None:
    root, flag = tmp_path / "plugins", tmp_path / "down"
    flag.touch()
    make_plugin(root, "flaky", (
        "cat >/dev/null\n"
        f'if [ -e "{flag}" ]; then echo \'{{"status":"error","error":"down"}}\'; '
        "else echo '{\"status\":\"ok\",\"result\":\"fine\"}'; fi"
    ))
    plugins = {"flaky": {
        "enabled": True,
        "retry": {"max_attempts": 1},
        "circuit_breaker": {"threshold": 2, "reset_after": "1s"},
        "schedules": [{"id": "s", "every": "100ms"}],
    }}
    async with scheduler_world(tmp_path, plugins, clock=utcnow, dispatch=True,
                               plugin_roots=[str(root)]) as w:
        await until(lambda: len(transitions(w)) >= 3)  # open, half_open, open again
        assert transitions(w)[:3] == [
            ("closed", "open", "failure_threshold"),
            ("open", "half_open", "cooldown_elapsed"),
            ("half_open", "open", "failure_threshold"),
        ]
        assert any(r["msg"] == "scheduled fire skipped" and r["reason"] == "circuit_open"
                   for r in w.log_lines())
        # Exactly `threshold` failures opened it, then one probe per half-open period.
        opened = w.db_rows("SELECT job_id, failure_count FROM circuit_breaker_transitions "
                           "WHERE to_state = 'open' ORDER BY created_at, rowid")
        assert [count for _, count in opened[:2]] == [2, 3]
        failed = {r[0] for r in w.db_rows("SELECT id FROM job_queue WHERE status = 'failed'")}
        assert {job for job, _ in opened} <= failed

        flag.unlink()
        await until(lambda: transitions(w)[-1][1:] == ("closed", "success"))
        assert transitions(w)[-2:] == [("open", "half_open", "cooldown_elapsed"),
                                       ("half_open", "closed", "success")]
        state = w.db_rows("SELECT state, failure_count FROM circuit_breakers "
                          "WHERE plugin = 'flaky'")
        assert state == [("closed", 0)]
