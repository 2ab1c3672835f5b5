"""Retention (Backend.retention through store/retention.py `prune`) on both backends: the same
history built through each backend's queue, the same rows pruned, the same report. What is
kept is checked through the queue's own readers, as an operator would see it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ductile.store import breakers as brk
from ductile.store.jobs import Job, format_time
from ductile.store.retention import PruneReport, RetentionPolicy, prune
from support.backends import Opened, location, opened  # noqa: F401 - fixtures

DAY = 86400.0
TABLES = ("job_log", "job_queue", "job_transitions", "job_attempts")


def policy(**days: float) -> RetentionPolicy:
    """A policy in days; tables not named keep rows forever."""
    return RetentionPolicy(**{t: days.get(t, 0.0) * DAY for t in (*TABLES,
                                                                     "breaker_transitions")})


async def finished(o: Opened, status: str, *, retried: bool = False) -> Job:
    """A job run to `status` (two attempts when `retried`); plugin `other` is never claimed."""
    o.clock.advance(0.000001)
    queued = await o.queue.enqueue("echo", "poll", {}, "test", max_attempts=2)
    job = await o.queue.claim(skip_plugins=["other"])
    assert job is not None and job.id == queued.id
    if retried:
        await o.queue.retry(job, delay=0, last_error="x", exit_code=1, duration_ms=1,
                            outcome="plugin_error", stderr="")
        job = await o.queue.claim(skip_plugins=["other"])
        assert job is not None and job.id == queued.id
    return await o.queue.complete(job, status, result="{}", last_error=None, stderr="",
                                  exit_code=0, duration_ms=1, outcome="ok")


async def history(o: Opened) -> dict[str, Job]:
    """Old jobs in every phase, and one new succeeded job ten days later."""
    jobs = {"old_succeeded": await finished(o, "succeeded"),
            "old_failed": await finished(o, "failed", retried=True)}
    o.clock.advance(0.000001)
    jobs["old_queued"] = await o.queue.enqueue("other", "poll", {}, "test")
    o.clock.advance(0.000001)
    await o.queue.enqueue("echo", "poll", {}, "test")
    running = await o.queue.claim(skip_plugins=["other"])
    assert running is not None
    jobs["old_running"] = running
    o.clock.advance(10 * DAY)
    jobs["new_succeeded"] = await finished(o, "succeeded")
    return jobs


async def ledger(o: Opened, jobs: dict[str, Job]) -> dict[str, tuple[bool, int, int, int]]:
    """Per job: (row kept, transitions, attempts, job_log rows)."""
    out = {}
    for name, job in jobs.items():
        out[name] = (await o.queue.get(job.id) is not None,
                     len(await o.queue.transitions(job.id)),
                     len(await o.queue.attempts(job.id)),
                     len(await o.queue.log_entries(job.id)))
    return out


async def test_old_history_goes_and_outstanding_jobs_keep_their_ledger(opened: Opened) -> None:
    jobs = await history(opened)
    report = await prune(opened.db, policy(job_log=1, job_queue=1, job_transitions=1,
                                           job_attempts=1),
                         now=opened.clock.now, statements=opened.backend.retention)
    assert report == PruneReport(job_log=2, job_queue=2, job_transitions=8, job_attempts=3)
    assert await ledger(opened, jobs) == {
        "old_succeeded": (False, 0, 0, 0),
        "old_failed": (False, 0, 0, 0),
        "old_queued": (True, 1, 0, 0),
        "old_running": (True, 2, 1, 0),
        "new_succeeded": (True, 3, 1, 1),
    }


@pytest.mark.parametrize("table", TABLES)
async def test_each_table_follows_its_own_retention(opened: Opened, table: str) -> None:
    jobs = await history(opened)
    before = await ledger(opened, jobs)
    report = await prune(opened.db, policy(**{table: 1}), now=opened.clock.now,
                         statements=opened.backend.retention)
    expected = {"job_log": 2, "job_queue": 2, "job_transitions": 8, "job_attempts": 3}
    assert report == PruneReport(**{table: expected[table]})
    after = await ledger(opened, jobs)
    column = {"job_queue": 0, "job_transitions": 1, "job_attempts": 2, "job_log": 3}[table]
    for name in ("old_queued", "old_running", "new_succeeded"):
        assert after[name] == before[name]
    for name in ("old_succeeded", "old_failed"):
        assert [v for i, v in enumerate(after[name]) if i != column] == \
               [v for i, v in enumerate(before[name]) if i != column]
        assert after[name][column] in (False, 0)


@pytest.mark.parametrize("batch", [1, 2, 500])
async def test_small_batches_prune_the_same_rows(opened: Opened, batch: int) -> None:
    jobs = await history(opened)
    report = await prune(opened.db, policy(job_log=1, job_queue=1, job_transitions=1,
                                           job_attempts=1),
                         now=opened.clock.now, batch=batch, statements=opened.backend.retention)
    assert report.total == 2 + 2 + 8 + 3
    assert (await ledger(opened, jobs))["old_running"] == (True, 2, 1, 0)


async def test_zero_keeps_everything_and_breaker_history_has_its_own(opened: Opened) -> None:
    statements = opened.backend.retention
    machine = brk.breaker_machine()
    for _ in range(2):
        now = format_time(opened.clock())
        await opened.write(lambda c: opened.backend.breakers.reset_breaker(
            c, machine, "echo", "poll", now))
        await opened.finish("echo", "poll", "failed", submitted_by="svc")
        now = format_time(opened.clock())
        await opened.write(lambda c: opened.backend.breakers.fold_outcomes(
            c, machine, "echo", "poll", threshold=1, submitted_by="svc", now=now))
    history_rows = await opened.read(lambda c: opened.backend.breakers.fetch_breaker_history(
        c, "echo", "poll", 100))
    assert [t.to_state for t in history_rows] == ["open", "closed", "open"]
    await history(opened)
    far = opened.clock.now + timedelta(days=3650)
    assert (await prune(opened.db, policy(), now=far, statements=statements)).total == 0
    later = opened.clock.now + timedelta(days=2)  # the breaker rows are 12 days old by now
    kept = await prune(opened.db, policy(job_log=30), now=later, statements=statements)
    assert kept.breaker_transitions == 0
    gone = await prune(opened.db, policy(breaker_transitions=1), now=later,
                       statements=statements)
    assert gone == PruneReport(breaker_transitions=3)
    assert await opened.read(lambda c: opened.backend.breakers.fetch_breaker_history(
        c, "echo", "poll", 100)) == []
