"""`if_running` with real plugin processes, a real dispatcher and the real clock.

The plugin starts a grandchild (`sleep 30`) and waits for it, recording the grandchild's pid, so
`cancel` can be checked to kill the whole process group, not just the plugin.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ductile.store.breakers import CANCELLED_BY_SCHEDULER
from ductile.store.jobs import utcnow
from support.plugins import make_plugin
from support.scheduler import World, scheduler_world


def hanging_plugin(tmp_path: Path) -> tuple[Path, Path]:
    root, pids = tmp_path / "plugins", tmp_path / "pids"
    make_plugin(root, "slow", f'cat >/dev/null\nsleep 30 &\necho $! >> "{pids}"\nwait')
    return root, pids


def plugins(if_running: str, **plugin: Any) -> dict[str, Any]:
    return {"slow": {"enabled": True, "timeouts": {"poll": "1m"}, **plugin,
                     "schedules": [{"id": "s", "every": "300ms", "if_running": if_running}]}}


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


def skips(world: World, reason: str) -> int:
    return sum(1 for r in world.log_lines()
               if r["msg"] == "scheduled fire skipped" and r.get("reason") == reason)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_if_running_skip_runs_one_job_at_a_time(tmp_path: Path) -> None:
    root, _ = hanging_plugin(tmp_path)
    async with scheduler_world(tmp_path, plugins("skip"), clock=utcnow, dispatch=True,
                               plugin_roots=[str(root)]) as w:
        await until(lambda: skips(w, "already_running") >= 2)
        assert [status for _, status, _ in w.jobs()] == ["running"]


async def test_if_running_queue_allows_max_outstanding_polls(tmp_path: Path) -> None:
    root, _ = hanging_plugin(tmp_path)
    async with scheduler_world(tmp_path, plugins("queue", max_outstanding_polls=2),
                               clock=utcnow, dispatch=True, plugin_roots=[str(root)]) as w:
        await until(lambda: skips(w, "outstanding_limit") >= 2)
        assert len(w.jobs()) == 2


async def test_if_running_cancel_kills_the_running_process_group(tmp_path: Path) -> None:
    root, pids = hanging_plugin(tmp_path)
    async with scheduler_world(tmp_path, plugins("cancel"), clock=utcnow, dispatch=True,
                               plugin_roots=[str(root)]) as w:
        def cancelled_while_running() -> list[tuple[Any, ...]]:
            return w.db_rows(
                "SELECT q.id, q.last_error FROM job_queue q JOIN job_attempts a ON a.job_id = q.id "
                "WHERE q.status = 'cancelled' AND a.outcome = 'cancelled'")

        await until(lambda: bool(cancelled_while_running()) and pids.exists())
        [(job_id, last_error), *_] = cancelled_while_running()
        assert last_error == CANCELLED_BY_SCHEDULER
        w.scheduler.stop()
        first_grandchild = int(pids.read_text().split()[0])
        await until(lambda: not alive(first_grandchild))
        transitions = w.db_rows(
            "SELECT from_status, to_status FROM job_transitions WHERE job_id = ? ORDER BY id",
            job_id)
        assert transitions[-1] == ("running", "cancelled")


async def test_a_manual_fire_honours_if_running_and_regular_fires_count_it(
        tmp_path: Path) -> None:
    """`fire_now` enqueues the schedule's job as scheduler:manual; the regular fire that comes
    due while it runs counts it as the scheduler's own poll (skip), and a second manual fire is
    refused the same way. The schedule's row is the regular fire's business only."""
    from ductile.schedule.scheduler import MANUAL_SUBMITTER

    root, _ = hanging_plugin(tmp_path)
    conf = {"slow": {"enabled": True, "timeouts": {"poll": "1m"}, "schedules": [
        {"id": "s", "after": "1s", "if_running": "skip", "payload": {"k": "v"}}]}}
    async with scheduler_world(tmp_path, conf, clock=utcnow, dispatch=True,
                               plugin_roots=[str(root)]) as w:
        fired = await w.scheduler.fire_now("slow", "s")
        assert fired.skipped is None and fired.job_id is not None
        [(key, _, submitted_by)] = w.jobs()
        assert submitted_by == MANUAL_SUBMITTER and key.startswith("slow:poll:s:manual:")
        assert w.db_rows("SELECT payload FROM job_queue") == [('{"k":"v"}',)]
        again = await w.scheduler.fire_now("slow", "s")
        assert (again.skipped, again.outstanding) == ("already_running", (fired.job_id,))
        await until(lambda: skips(w, "already_running") >= 1)  # the `after: 1s` fire
        assert [j[2] for j in w.jobs()] == [MANUAL_SUBMITTER]
        manual = [r for r in w.log_lines() if r.get("trigger") == "manual"]
        assert [r["job_id"] for r in manual] == [fired.job_id]


async def test_a_manual_fire_leaves_the_next_regular_fire_where_it_was(tmp_path: Path) -> None:
    from ductile.errors import UnknownSchedule

    root, _ = hanging_plugin(tmp_path)
    conf = {"slow": {"enabled": True, "timeouts": {"poll": "1m"}, "max_outstanding_polls": 5,
                     "schedules": [{"id": "s", "every": "1h", "if_running": "queue"}]}}
    async with scheduler_world(tmp_path, conf, clock=utcnow, dispatch=True,
                               plugin_roots=[str(root)]) as w:
        await until(lambda: len(w.jobs()) == 1)  # first sight: the regular fire
        await w.scheduler.idle()
        before = w.db_rows("SELECT next_run_at, last_fired_at, reason FROM schedule_entries")
        fired = await w.scheduler.fire_now("slow", "s")
        assert fired.skipped is None and len(w.jobs()) == 2
        assert w.db_rows("SELECT next_run_at, last_fired_at, reason "
                         "FROM schedule_entries") == before
        try:
            await w.scheduler.fire_now("slow", "nope")
        except UnknownSchedule as exc:
            assert "known: slow/s" in str(exc)
        else:
            raise AssertionError("an unknown schedule was fired")
