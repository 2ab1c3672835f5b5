"""The circuit breaker statements (Backend.breakers) on both backends: same inputs, same answers.

Jobs are run to their ends through each backend's queue; the breaker functions are reached
only through `opened.backend.breakers`, as the scheduler and the planes reach them. Cases are
those of test_breaker_store.py (SQLite only) plus the ones where the backends could differ:
outcomes completed in the same microsecond (SQLite breaks the tie by rowid, PostgreSQL by
seq), the first look at an old history, reads on a read-only snapshot.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ductile.errors import InvalidBreakerChange
from ductile.store import breakers as brk
from ductile.store.jobs import format_time
from support.backends import Opened, location, opened  # noqa: F401 - fixtures

MACHINE = brk.breaker_machine()
SERVICE = "svc"


async def fold(o: Opened, threshold: int = 3, command: str = "poll") -> brk.Breaker:
    now = format_time(o.clock())
    sql = o.backend.breakers
    return await o.write(lambda c: sql.fold_outcomes(
        c, MACHINE, "p", command, threshold=threshold, submitted_by=SERVICE, now=now))


async def cool(o: Opened, reset_after: float = 60.0) -> brk.Breaker:
    now = format_time(o.clock())
    sql = o.backend.breakers
    return await o.write(lambda c: sql.cool_down_if_due(
        c, MACHINE, "p", "poll", reset_after=reset_after, now=now))


async def history(o: Opened) -> list[tuple[Any, ...]]:
    rows = await o.read(lambda c: o.backend.breakers.fetch_breaker_history(c, "p", "poll", 100))
    return [(t.from_state, t.to_state, t.reason, t.failure_count) for t in reversed(rows)]


async def test_one_failure_at_threshold_one_opens_naming_the_job(opened: Opened) -> None:
    job = await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    breaker = await fold(opened, threshold=1)
    assert (breaker.state, breaker.failure_count, breaker.last_job_id) == ("open", 1, job.id)
    assert breaker.opened_at == format_time(opened.clock())
    assert breaker.last_failure_at == job.completed_at
    rows = await opened.read(
        lambda c: opened.backend.breakers.fetch_breaker_history(c, "p", "poll"))
    assert [(t.from_state, t.to_state, t.reason, t.job_id) for t in rows] == [
        ("closed", "open", "failure_threshold", job.id)]
    assert await opened.read(opened.backend.breakers.open_circuit_count) == 1
    stored = await opened.read(lambda c: opened.backend.breakers.fetch_breaker(c, "p", "poll"))
    assert stored == breaker


async def test_failures_below_threshold_count_and_a_success_clears(opened: Opened) -> None:
    for status in ("failed", "timed_out"):
        await opened.finish("p", "poll", status, submitted_by=SERVICE)
    breaker = await fold(opened)
    assert (breaker.state, breaker.failure_count) == ("closed", 2)
    assert await history(opened) == []
    await opened.finish("p", "poll", "succeeded", submitted_by=SERVICE)
    assert (await fold(opened)).failure_count == 0


async def test_each_outcome_is_counted_once_also_in_the_same_microsecond(opened: Opened) -> None:
    """Outcomes completed at one instant are ordered by insertion (rowid / seq): the second
    fold takes exactly the ones after the last job it saw."""
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    await fold(opened, threshold=10)
    await fold(opened, threshold=10)
    for _ in range(3):
        await opened.finish("p", "poll", "failed", submitted_by=SERVICE, step=0)
    assert (await fold(opened, threshold=10)).failure_count == 4
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE, step=0)
    assert (await fold(opened, threshold=10)).failure_count == 5
    assert (await fold(opened, threshold=10)).failure_count == 5


async def test_other_submitters_cancellations_and_commands_are_passed_over(
        opened: Opened) -> None:
    await opened.finish("p", "poll", "failed", submitted_by="api")
    await opened.finish("p", "poll", "cancelled", submitted_by=SERVICE,
                        error=brk.CANCELLED_BY_SCHEDULER)
    await opened.finish("p", "sync", "failed", submitted_by=SERVICE)
    breaker = await fold(opened, threshold=1)
    assert (breaker.state, breaker.failure_count) == ("closed", 0)
    assert await opened.read(lambda c: opened.backend.breakers.has_new_outcomes(
        c, "p", "poll", submitted_by=SERVICE)) is False


async def test_a_first_look_takes_only_the_newest_threshold_outcomes(opened: Opened) -> None:
    for _ in range(5):
        await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    newest = await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    breaker = await fold(opened, threshold=2)
    assert (breaker.state, breaker.failure_count, breaker.last_job_id) == ("open", 2, newest.id)


async def test_has_new_outcomes_on_a_read_snapshot(opened: Opened) -> None:
    sql = opened.backend.breakers

    def new(c: Any) -> bool:
        return sql.has_new_outcomes(c, "p", "poll", submitted_by=SERVICE)

    assert await opened.read(new) is False
    await opened.finish("p", "poll", "succeeded", submitted_by=SERVICE)
    assert await opened.read(new) is True
    await fold(opened)
    assert await opened.read(new) is False


async def test_cooldown_then_a_successful_probe_closes(opened: Opened) -> None:
    for _ in range(3):
        await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    assert (await fold(opened)).state == "open"
    opened.clock.advance(59)
    assert (await cool(opened)).state == "open"
    opened.clock.advance(1)
    assert (await cool(opened)).state == "half_open"
    probe = await opened.finish("p", "poll", "succeeded", submitted_by=SERVICE)
    breaker = await fold(opened)
    assert (breaker.state, breaker.failure_count, breaker.last_job_id) == ("closed", 0, probe.id)
    assert await history(opened) == [
        ("closed", "open", "failure_threshold", 3),
        ("open", "half_open", "cooldown_elapsed", 3),
        ("half_open", "closed", "success", 0),
    ]
    assert await opened.read(opened.backend.breakers.open_circuit_count) == 0


async def test_a_failed_probe_reopens_and_restarts_the_cooldown(opened: Opened) -> None:
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    await fold(opened, threshold=1)
    opened.clock.advance(60)
    await cool(opened)
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    opened.clock.advance(5)
    breaker = await fold(opened, threshold=1)
    assert (breaker.state, breaker.opened_at) == ("open", format_time(opened.clock()))
    opened.clock.advance(30)
    assert (await cool(opened)).state == "open"
    assert [h[:3] for h in await history(opened)] == [
        ("closed", "open", "failure_threshold"),
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "open", "failure_threshold"),
    ]


async def test_a_manual_reset_closes_and_clears_once(opened: Opened) -> None:
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    await fold(opened, threshold=1)
    now = format_time(opened.clock())
    sql = opened.backend.breakers
    breaker = await opened.write(lambda c: sql.reset_breaker(c, MACHINE, "p", "poll", now))
    assert (breaker.state, breaker.failure_count, breaker.opened_at) == ("closed", 0, None)
    assert (await history(opened))[-1] == ("open", "closed", "manual_reset", 0)
    await opened.write(lambda c: sql.reset_breaker(c, MACHINE, "p", "poll", now))
    assert len(await history(opened)) == 2


async def test_a_reset_the_machine_does_not_allow_rolls_back(opened: Opened) -> None:
    """A machine without a way back to closed refuses the reset; nothing is written."""
    await opened.finish("p", "poll", "failed", submitted_by=SERVICE)
    await fold(opened, threshold=1)
    strict = replace(MACHINE, transitions=tuple(
        t for t in MACHINE.transitions if t.dest != "closed"))
    now = format_time(opened.clock())
    sql = opened.backend.breakers
    with pytest.raises(InvalidBreakerChange, match="open -> closed"):
        await opened.write(lambda c: sql.reset_breaker(c, strict, "p", "poll", now))
    stored = await opened.read(lambda c: sql.fetch_breaker(c, "p", "poll"))
    assert stored is not None and stored.state == "open"
    assert len(await history(opened)) == 1


async def test_the_breaker_list_is_ordered_and_filtered(opened: Opened) -> None:
    for plugin, command in (("b", "poll"), ("a", "sync"), ("a", "poll")):
        opened.clock.advance(0.001)
        queued = await opened.queue.enqueue(plugin, command, {}, SERVICE)
        job = await opened.queue.claim()
        assert job is not None and job.id == queued.id
        await opened.queue.complete(job, "failed", result=None, last_error="x", stderr=None,
                                    exit_code=1, duration_ms=1, outcome="test")
        now = format_time(opened.clock())
        await opened.write(lambda c: opened.backend.breakers.fold_outcomes(
            c, MACHINE, plugin, command, threshold=1, submitted_by=SERVICE, now=now))
    sql = opened.backend.breakers
    every = await opened.read(sql.fetch_breakers)
    assert [(b.plugin, b.command, b.state) for b in every] == [
        ("a", "poll", "open"), ("a", "sync", "open"), ("b", "poll", "open")]
    only_a = await opened.read(lambda c: sql.fetch_breakers(c, "a"))
    assert [(b.plugin, b.command) for b in only_a] == [("a", "poll"), ("a", "sync")]
    assert await opened.read(sql.open_circuit_count) == 3
    assert await opened.read(lambda c: sql.fetch_breaker(c, "c", "poll")) is None
