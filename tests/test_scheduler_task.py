"""The scheduler task over a real runtime and SQLite file, with trio's MockClock.

Hours and days of schedules run in milliseconds: the scheduler's wall clock follows the trio
clock (support.scheduler.trio_wall) and MockClock jumps whenever every task is blocked. No
dispatcher runs here, so jobs stay queued; `if_running: queue` with a generous
`max_outstanding_polls` keeps the overlap guard out of the way.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

from ductile.schedule import control
from ductile.schedule.views import scheduler_jobs
from ductile.store.jobs import format_time
from support.scheduler import World, advance, scheduler_world

T0 = datetime(2026, 5, 4, 10, tzinfo=UTC)
HOUR = 3600


@pytest.fixture
def clock() -> MockClock:
    # Driven by hand (support.scheduler.advance): time moves only while the scheduler sleeps, never
    # while it waits on a database thread.
    return MockClock()


def echo(*schedules: dict[str, Any], **plugin: Any) -> dict[str, Any]:
    entries = [{"if_running": "queue", **s} for s in schedules]
    return {"echo": {"enabled": True, "max_outstanding_polls": 1000, "schedules": entries,
                     **plugin}}


def keys(world: World) -> list[str]:
    return [k for k, _, _ in world.jobs()]


def key(schedule_id: str, moment: datetime, command: str = "poll") -> str:
    return f"echo:{command}:{schedule_id}:{moment.isoformat().replace('+00:00', 'Z')}"


def entry(world: World, schedule_id: str) -> dict[str, Any]:
    assert world.proc.db is not None
    conn = sqlite3.connect(world.proc.db.path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM schedule_entries WHERE schedule_id = ?",
                           (schedule_id,)).fetchone()
        return dict(row) if row is not None else {}
    finally:
        conn.close()


async def test_every_fires_on_time_with_one_job_per_slot(tmp_path: Path, clock: MockClock) -> None:
    async with scheduler_world(tmp_path, echo({"id": "h", "every": "1h"}), start=T0) as w:
        await advance(w, 3 * HOUR + 60)
        assert keys(w) == [key("h", T0 + timedelta(hours=h)) for h in range(4)]
        assert {submitted for _, _, submitted in w.jobs()} == {"ductile-test"}
        row = entry(w, "h")
        assert row["next_run_at"] == format_time(T0 + timedelta(hours=4))
        assert row["last_fired_at"] == format_time(T0 + timedelta(hours=3))


async def test_daily_cron_across_london_fall_back_fires_once_a_day(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = echo({"id": "d", "cron": "30 1 * * *", "timezone": "Europe/London"})
    start = datetime(2026, 10, 24, tzinfo=UTC)
    async with scheduler_world(tmp_path, plugins, start=start,
                               service={"tick_interval": "1d"}) as w:
        await advance(w, 3 * 24 * HOUR)
    async with scheduler_world(tmp_path, plugins, start=start + timedelta(days=3)) as w:
        assert keys(w) == [key("d", datetime(2026, 10, 24, 0, 30, tzinfo=UTC)),
                           key("d", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
                           key("d", datetime(2026, 10, 26, 1, 30, tzinfo=UTC))]


async def test_new_york_spring_gap_fires_at_the_end_of_the_gap(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = echo({"id": "n", "cron": "30 2 * * *", "timezone": "America/New_York"})
    start = datetime(2026, 3, 7, 12, tzinfo=UTC)
    async with scheduler_world(tmp_path, plugins, start=start,
                               service={"tick_interval": "1d"}) as w:
        await advance(w, 2 * 24 * HOUR)
        assert keys(w) == [key("n", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
                           key("n", datetime(2026, 3, 9, 6, 30, tzinfo=UTC))]


async def test_restart_neither_double_fires_nor_forgets(tmp_path: Path, clock: MockClock) -> None:
    plugins = echo({"id": "h", "every": "1h"})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, HOUR + 60)
    # Restart at once (same instant as the last fire): nothing is fired twice.
    async with scheduler_world(tmp_path, plugins, start=T0 + timedelta(seconds=HOUR + 60)) as w:
        await advance(w, 30)
    # Restart later: the cadence continues from the persisted next slot.
    async with scheduler_world(tmp_path, plugins, start=T0 + timedelta(minutes=100)) as w:
        await advance(w, HOUR)
        assert keys(w) == [key("h", T0 + timedelta(hours=h)) for h in range(3)]


@pytest.mark.parametrize(("catch_up", "expected_hours"), [
    ("skip", [0, 4]),
    ("run_once", [0, 3, 4]),
    ("run_all", [0, 1, 2, 3, 4]),
])
async def test_catch_up_after_a_three_hour_outage(
    tmp_path: Path, clock: MockClock, catch_up: str, expected_hours: list[int]
) -> None:
    plugins = echo({"id": "h", "every": "1h", "catch_up": catch_up})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, 60)
    # Down from 10:01 to 13:30; up again until 14:10.
    async with scheduler_world(tmp_path, plugins, start=T0 + timedelta(hours=3.5)) as w:
        await advance(w, 40 * 60)
        assert keys(w) == [key("h", T0 + timedelta(hours=h)) for h in expected_hours]
        if catch_up == "skip":
            dropped = [r for r in w.log_lines() if r["msg"] == "missed schedule slots dropped"]
            assert dropped and dropped[0]["oldest"] == format_time(T0 + timedelta(hours=1))


async def test_pause_survives_a_restart_and_resume_does_not_catch_up(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = echo({"id": "h", "every": "1h", "catch_up": "run_all"}, {"id": "m", "every": "1h"})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, 60)
        assert w.proc.db is not None
        paused = await w.proc.db.write(lambda c: control.pause(
            c, w.rt.config, "echo/h", format_time(T0), backend=w.rt.backend))
        assert [(e.schedule_id, e.status) for e in paused] == [("h", "paused_manual")]
        w.scheduler.wake()
        await advance(w, 2 * HOUR)
    async with scheduler_world(tmp_path, plugins, start=T0 + timedelta(hours=2, minutes=30)) as w:
        await advance(w, 2 * HOUR)  # until 14:30: still paused across the restart
        assert [k for k in keys(w) if ":h:" in k] == [key("h", T0)]
        assert w.proc.db is not None
        listing = await w.proc.db.read(lambda c: scheduler_jobs(
            c, w.rt.config, backend=w.rt.backend, now=T0 + timedelta(hours=4, minutes=30)))
        by_id = {j["schedule_id"]: j for j in listing["jobs"]}
        assert by_id["h"]["paused"] is True and by_id["h"]["status"] == "paused"
        assert by_id["m"]["paused"] is False and "next_run_at" in by_id["m"]
        await w.proc.db.write(lambda c: control.resume(c, w.rt.config, "echo", format_time(T0),
                                                       backend=w.rt.backend))
        w.scheduler.wake()
        await advance(w, HOUR)  # until 15:30: the 15:00 slot fires, 11:00-14:00 are dropped
        assert [k for k in keys(w) if ":h:" in k] == [key("h", T0), key("h", T0 + 5 * timedelta(
            hours=1))]
        # The other schedule was never paused.
        assert [k for k in keys(w) if ":m:" in k] == [
            key("m", T0 + timedelta(hours=h)) for h in range(6)]


async def test_after_fires_once_per_boot_and_at_once_ever(tmp_path: Path, clock: MockClock) -> None:
    plugins = echo({"id": "boot", "after": "30s"}, {"id": "at", "at": "2026-05-04T10:05:00Z"})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, HOUR)
    later = T0 + timedelta(hours=2)
    async with scheduler_world(tmp_path, plugins, start=later) as w:
        await advance(w, HOUR)
        assert sorted(keys(w)) == sorted([
            key("boot", T0 + timedelta(seconds=30)),
            key("at", T0 + timedelta(minutes=5)),
            key("boot", later + timedelta(seconds=30)),
        ])
        assert entry(w, "at")["status"] == "exhausted"


async def test_an_unsupported_command_is_paused_invalid_and_never_fires(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = echo({"id": "x", "every": "1m", "command": "sync"}, {"id": "ok", "every": "1h"})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, 10 * 60)
        assert keys(w) == [key("ok", T0)]
        row = entry(w, "x")
        assert row["status"] == "paused_invalid"
        assert "unsupported command 'sync'" in row["reason"]


async def test_skip_policy_consumes_the_slot_while_a_job_is_outstanding(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = {"echo": {"enabled": True, "schedules": [{"id": "s", "every": "1h"}]}}
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, 2 * HOUR + 60)
        assert keys(w) == [key("s", T0)]  # never claimed: the later slots were skipped
        assert entry(w, "s")["reason"] == "already_running"
        skipped = [r for r in w.log_lines() if r["msg"] == "scheduled fire skipped"]
        assert [r["reason"] for r in skipped] == ["already_running", "already_running"]


async def test_an_unsatisfiable_schedule_is_paused_invalid_without_stopping_the_others(
    tmp_path: Path, clock: MockClock
) -> None:
    plugins = echo({"id": "never", "cron": "0 3 * * *", "only_between": "09:00-17:00"},
                   {"id": "ok", "every": "1h"})
    async with scheduler_world(tmp_path, plugins, start=T0) as w:
        await advance(w, HOUR + 60)
        assert keys(w) == [key("ok", T0), key("ok", T0 + timedelta(hours=1))]
        row = entry(w, "never")
        assert row["status"] == "paused_invalid" and "no fire allowed" in row["reason"]



async def test_a_fire_the_store_refuses_is_skipped_and_other_schedules_go_on(
    tmp_path: Path, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler's job boundary: one fire whose enqueue the store refuses (injected here;
    config load already refuses what JSON cannot carry) is skipped with the reason, and the
    scheduler keeps firing the other schedule."""
    from ductile.errors import StoreError
    from ductile.store.queue import Queue

    real = Queue.enqueue

    async def refuse_bad(self: Queue, *args: Any, **kwargs: Any) -> Any:
        if ":bad:" in (kwargs.get("dedupe_key") or ""):
            raise StoreError("payload is not JSON-serialisable: injected")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Queue, "enqueue", refuse_bad)
    schedules = echo({"id": "bad", "every": "1h"}, {"id": "good", "every": "1h"})
    async with scheduler_world(tmp_path, schedules, start=T0) as w:
        await advance(w, HOUR + 60)
        assert keys(w) == [key("good", T0), key("good", T0 + timedelta(hours=1))]
        skipped = [f for f in w.scheduler.fired if f.schedule_id == "bad"]
        assert len(skipped) == 2 and all(f.job_id is None for f in skipped)
        assert {f.skipped for f in skipped} == {
            "enqueue refused: payload is not JSON-serialisable: injected"}
