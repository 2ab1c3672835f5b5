"""The schedule bookkeeping statements (Backend.schedules) on both backends: same inputs, same
answers. The scheduler writes schedule_entries through `save_entry` and decides on
`outstanding_jobs`; the operator pauses and resumes through `set_paused`; `active_polls` is the
`system scheduler` list. The operator's pause always wins over the scheduler's bookkeeping."""

from __future__ import annotations

from dataclasses import replace

from ductile.store import schedules as sch
from ductile.store.jobs import format_time
from support.backends import Opened, location, opened  # noqa: F401 - fixtures


def entry(plugin: str, schedule_id: str, **changes: object) -> sch.ScheduleEntry:
    row = sch.ScheduleEntry(plugin=plugin, schedule_id=schedule_id, command="poll",
                            status=sch.ACTIVE, reason=None,
                            last_fired_at="2026-03-01T12:00:00.000000Z",
                            last_success_job_id=None, last_success_at=None,
                            next_run_at="2026-03-01T13:00:00.000000Z",
                            updated_at="2026-03-01T12:00:00.000000Z")
    return replace(row, **changes)  # type: ignore[arg-type]


async def test_entries_are_saved_updated_and_listed_in_key_order(opened: Opened) -> None:
    sql = opened.backend.schedules
    assert await opened.read(sql.fetch_entries) == {}
    rows = [entry("b", "x"), entry("a", "y"), entry("a", "x")]
    written = await opened.write(lambda c: [sql.save_entry(c, row) for row in rows])
    assert written == [True, True, True]
    listed = await opened.read(sql.fetch_entries)
    assert list(listed) == [("a", "x"), ("a", "y"), ("b", "x")]
    assert listed[("b", "x")] == rows[0]
    later = entry("a", "x", last_fired_at="2026-03-01T13:00:00.000000Z", reason="fired",
                  next_run_at=None, status=sch.EXHAUSTED)
    assert await opened.write(lambda c: sql.save_entry(c, later)) is True
    only_a = await opened.read(lambda c: sql.fetch_entries(c, "a"))
    assert only_a == {("a", "x"): later, ("a", "y"): rows[1]}


async def test_a_pause_wins_over_the_schedulers_bookkeeping(opened: Opened) -> None:
    sql = opened.backend.schedules
    now = format_time(opened.clock())
    # Pausing a schedule the scheduler has not written yet creates its row.
    paused = await opened.write(lambda c: sql.set_paused(
        c, [("p", "h", "poll")], paused=True, now=now))
    assert [(e.plugin, e.schedule_id, e.status, e.reason, e.updated_at) for e in paused] == [
        ("p", "h", sch.PAUSED_MANUAL, sch.PAUSED_REASON, now)]
    assert await opened.write(lambda c: sql.save_entry(c, entry("p", "h"))) is False
    stored = (await opened.read(sql.fetch_entries))[("p", "h")]
    assert stored.status == sch.PAUSED_MANUAL and stored.next_run_at is None


async def test_resume_touches_only_paused_rows_and_answers_the_targets(opened: Opened) -> None:
    sql = opened.backend.schedules
    await opened.write(lambda c: [sql.save_entry(c, row) for row in (
        entry("p", "h"), entry("p", "m"), entry("q", "z"))])
    now = format_time(opened.clock())
    await opened.write(lambda c: sql.set_paused(c, [("p", "h", "poll")], paused=True, now=now))
    opened.clock.advance(60)
    later = format_time(opened.clock())
    resumed = await opened.write(lambda c: sql.set_paused(
        c, [("p", "h", "poll"), ("p", "m", "poll")], paused=False, now=later))
    assert [(e.schedule_id, e.status, e.reason, e.updated_at) for e in resumed] == [
        ("h", sch.ACTIVE, sch.RESUMED_REASON, later),
        ("m", sch.ACTIVE, None, entry("p", "m").updated_at),  # was not paused: untouched
    ]
    # The scheduler's own writes go through again once resumed.
    assert await opened.write(lambda c: sql.save_entry(c, entry("p", "h"))) is True


async def test_outstanding_jobs_oldest_first_by_submitter(opened: Opened) -> None:
    sql = opened.backend.schedules
    queue, clock = opened.queue, opened.clock
    clock.advance(0.001)
    first = await queue.enqueue("p", "poll", {}, "svc", dedupe_key="k1")
    # Same created_at: insertion order breaks the tie (SQLite's rowid, PostgreSQL's seq).
    second = await queue.enqueue("p", "poll", {}, "api")
    third = await queue.enqueue("p", "poll", {}, "svc")
    await queue.enqueue("p", "sync", {}, "svc")
    await queue.enqueue("q", "poll", {}, "svc")
    running = await queue.claim()
    assert running is not None and running.id == first.id

    every = await opened.read(lambda c: sql.outstanding_jobs(c, "p", "poll", None))
    assert [(o.id, o.status, o.submitted_by) for o in every] == [
        (first.id, "running", "svc"), (second.id, "queued", "api"), (third.id, "queued", "svc")]
    assert every[0] == sch.Outstanding(
        id=first.id, status="running", plugin="p", dedupe_key="k1", submitted_by="svc",
        attempt=1, created_at=first.created_at, started_at=running.started_at)
    mine = await opened.read(lambda c: sql.outstanding_jobs(c, "p", "poll", "svc"))
    assert [o.id for o in mine] == [first.id, third.id]
    polls = await opened.read(lambda c: sql.active_polls(c, "svc"))
    assert [(o.plugin, o.status) for o in polls] == [
        ("p", "running"), ("p", "queued"), ("p", "queued"), ("q", "queued")]
    assert [o.id for o in polls][:2] == [first.id, third.id]


async def test_finished_jobs_are_not_outstanding(opened: Opened) -> None:
    sql = opened.backend.schedules
    await opened.finish("p", "poll", "succeeded", submitted_by="svc")
    await opened.finish("p", "poll", "failed", submitted_by="svc")
    assert await opened.read(lambda c: sql.outstanding_jobs(c, "p", "poll", None)) == []
    assert await opened.read(lambda c: sql.active_polls(c, "svc")) == []
