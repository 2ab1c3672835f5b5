"""Circuit breakers in the store: outcomes read from the job log, transitions per
states/breaker.yaml."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ductile.errors import InvalidBreakerChange
from ductile.store import Database
from ductile.store import breakers as brk
from ductile.store.jobs import format_time
from ductile.store.queue import Queue
from support.store import Clock, open_database

SERVICE = "ductile"
MACHINE = brk.breaker_machine()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async for database in open_database(tmp_path):
        yield database


async def finish(queue: Queue, status: str, *, submitted_by: str = SERVICE,
                 command: str = "poll", error: str | None = "boom") -> str:
    """One job of plugin `p` run to `status` through the real queue; returns its id."""
    job = await queue.enqueue("p", command, {}, submitted_by)
    claimed = await queue.claim()
    assert claimed is not None and claimed.id == job.id
    if status == "cancelled":
        await queue.complete(claimed, "cancelled", result=None,
                             last_error=brk.CANCELLED_BY_SCHEDULER, stderr=None, exit_code=None,
                             duration_ms=0, outcome="cancelled")
    else:
        await queue.complete(claimed, status, result=None,
                             last_error=None if status == "succeeded" else error, stderr=None,
                             exit_code=0, duration_ms=1, outcome="test")
    return job.id


async def fold(db: Database, clock: Clock, threshold: int = 3) -> brk.Breaker:
    now = format_time(clock())
    return await db.write(lambda c: brk.fold_outcomes(
        c, MACHINE, "p", "poll", threshold=threshold, submitted_by=SERVICE, now=now))


async def cool(db: Database, clock: Clock, reset_after: float = 60.0) -> brk.Breaker:
    now = format_time(clock())
    return await db.write(lambda c: brk.cool_down_if_due(
        c, MACHINE, "p", "poll", reset_after=reset_after, now=now))


async def history(db: Database) -> list[tuple[Any, ...]]:
    rows = await db.read(lambda c: brk.fetch_breaker_history(c, "p", "poll", 100))
    return [(t.from_state, t.to_state, t.reason, t.failure_count) for t in reversed(rows)]


def queue_for(db: Database, clock: Clock) -> Queue:
    return Queue(db, snapshot_id=lambda: None, dedupe_ttl=0, clock=clock)


async def test_threshold_one_failure_opens_with_a_transition_naming_the_job(
    db: Database, clock: Clock
) -> None:
    job_id = await finish(queue_for(db, clock), "failed")
    breaker = await fold(db, clock, threshold=1)
    assert (breaker.state, breaker.failure_count, breaker.last_job_id) == ("open", 1, job_id)
    assert breaker.opened_at == format_time(clock())
    rows = await db.read(lambda c: brk.fetch_breaker_history(c, "p", "poll"))
    assert [(t.from_state, t.to_state, t.reason, t.job_id) for t in rows] == [
        ("closed", "open", "failure_threshold", job_id)]
    assert await db.read(brk.open_circuit_count) == 1


async def test_failures_below_threshold_count_but_do_not_transition(
    db: Database, clock: Clock
) -> None:
    queue = queue_for(db, clock)
    for status in ("failed", "timed_out"):
        await finish(queue, status)
    breaker = await fold(db, clock)
    assert (breaker.state, breaker.failure_count) == ("closed", 2)
    assert await history(db) == []
    await finish(queue, "succeeded")
    assert (await fold(db, clock)).failure_count == 0


async def test_each_outcome_is_counted_once(db: Database, clock: Clock) -> None:
    queue = queue_for(db, clock)
    await finish(queue, "failed")
    await fold(db, clock)
    await fold(db, clock)
    await finish(queue, "timed_out")
    assert (await fold(db, clock)).failure_count == 2
    assert (await fold(db, clock)).failure_count == 2


async def test_other_submitters_cancellations_and_commands_are_ignored(
    db: Database, clock: Clock
) -> None:
    queue = queue_for(db, clock)
    await finish(queue, "failed", submitted_by="api")
    await finish(queue, "cancelled")
    await finish(queue, "failed", command="sync")
    breaker = await fold(db, clock, threshold=1)
    assert (breaker.state, breaker.failure_count) == ("closed", 0)


async def test_cooldown_then_probe_success_closes(db: Database, clock: Clock) -> None:
    queue = queue_for(db, clock)
    for _ in range(3):
        await finish(queue, "failed")
    assert (await fold(db, clock)).state == "open"
    clock.advance(59)
    assert (await cool(db, clock)).state == "open"
    clock.advance(1)
    assert (await cool(db, clock)).state == "half_open"
    probe = await finish(queue, "succeeded")
    breaker = await fold(db, clock)
    assert (breaker.state, breaker.failure_count, breaker.last_job_id) == ("closed", 0, probe)
    assert await history(db) == [
        ("closed", "open", "failure_threshold", 3),
        ("open", "half_open", "cooldown_elapsed", 3),
        ("half_open", "closed", "success", 0),
    ]
    assert await db.read(brk.open_circuit_count) == 0


async def test_probe_failure_reopens_and_restarts_the_cooldown(db: Database,
                                                               clock: Clock) -> None:
    queue = queue_for(db, clock)
    await finish(queue, "failed")
    await fold(db, clock, threshold=1)
    clock.advance(60)
    await cool(db, clock)
    await finish(queue, "failed")
    clock.advance(5)
    breaker = await fold(db, clock, threshold=1)
    assert (breaker.state, breaker.opened_at) == ("open", format_time(clock()))
    clock.advance(30)
    assert (await cool(db, clock)).state == "open"
    assert [h[:3] for h in await history(db)] == [
        ("closed", "open", "failure_threshold"),
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "open", "failure_threshold"),
    ]


async def test_manual_reset_closes_and_clears(db: Database, clock: Clock) -> None:
    await finish(queue_for(db, clock), "failed")
    await fold(db, clock, threshold=1)
    now = format_time(clock())
    breaker = await db.write(lambda c: brk.reset_breaker(c, MACHINE, "p", "poll", now))
    assert (breaker.state, breaker.failure_count, breaker.opened_at) == ("closed", 0, None)
    assert (await history(db))[-1] == ("open", "closed", "manual_reset", 0)
    # Resetting a closed breaker records nothing: it is not a transition.
    await db.write(lambda c: brk.reset_breaker(c, MACHINE, "p", "poll", now))
    assert len(await history(db)) == 2


async def test_a_change_the_machine_does_not_declare_is_refused(db: Database,
                                                                clock: Clock) -> None:
    now = format_time(clock())
    closed = brk.closed_breaker("p", "poll", now)
    with pytest.raises(InvalidBreakerChange, match="closed -> half_open"):
        await db.write(lambda c: brk._change(c, MACHINE, closed, "half_open", "x", None, now))
