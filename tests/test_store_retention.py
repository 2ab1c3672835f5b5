"""Retention: old history is pruned per table, in small batches, never an outstanding job."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from typing import Any

import pytest
import trio

from ductile.errors import StoreError
from ductile.store import Database, Queue
from ductile.store.jobs import Job, format_time
from support.store import START, Clock
from ductile.store.retention import PruneReport, RetentionPolicy, prune

DAY = 86400.0
TABLES = ("job_log", "job_queue", "job_transitions", "job_attempts")
TERMINAL = ("succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")


@pytest.fixture
def queue(db: Database, clock: Clock) -> Queue:
    return Queue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0, clock=clock)


def policy(**days: float) -> RetentionPolicy:
    """A policy in days; tables not named keep rows forever."""
    return RetentionPolicy(**{table: days.get(table, 0.0) * DAY for table in TABLES})


async def counts(db: Database) -> dict[str, int]:
    def read(conn: sqlite3.Connection) -> dict[str, int]:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    return await db.read(read)


async def job_ids(db: Database, table: str) -> set[str]:
    column = "id" if table == "job_queue" else "job_id"
    return await db.read(
        lambda conn: {row[0] for row in conn.execute(f"SELECT DISTINCT {column} FROM {table}")}
    )


async def finished_job(queue: Queue, clock: Clock, status: str, *, retried: bool = False) -> Job:
    """A job run to `status` through the real queue (two attempts when `retried`); plugin
    `other` is skipped so the old queued job of `history` stays queued."""
    clock.advance(0.000001)
    queued = await queue.enqueue("echo", "poll", {}, "test", max_attempts=2)
    job = await queue.claim(skip_plugins=["other"])
    assert job is not None and job.id == queued.id
    if retried:
        await queue.retry(job, delay=0, last_error="x", exit_code=1, duration_ms=1,
                          outcome="plugin_error", stderr="")
        job = await queue.claim(skip_plugins=["other"])
        assert job is not None and job.id == queued.id
    return await queue.complete(job, status, result="{}", last_error=None, stderr="",
                                exit_code=0, duration_ms=1, outcome="ok")


async def history(queue: Queue, clock: Clock) -> dict[str, Job]:
    """Old jobs at START in every status, and one new succeeded job ten days later."""
    jobs = {
        "old_succeeded": await finished_job(queue, clock, "succeeded"),
        "old_failed": await finished_job(queue, clock, "failed", retried=True),
    }
    clock.advance(0.000001)
    jobs["old_queued"] = await queue.enqueue("other", "poll", {}, "test")
    clock.advance(0.000001)
    await queue.enqueue("echo", "poll", {}, "test")
    running = await queue.claim(skip_plugins=["other"])
    assert running is not None
    jobs["old_running"] = running
    clock.advance(10 * DAY)
    jobs["new_succeeded"] = await finished_job(queue, clock, "succeeded")
    return jobs


# -- what is pruned ------------------------------------------------------------------------


async def test_old_history_goes_and_new_history_and_outstanding_jobs_stay(
    db: Database, queue: Queue, clock: Clock
) -> None:
    jobs = await history(queue, clock)
    old_done = {jobs["old_succeeded"].id, jobs["old_failed"].id}
    kept = {job.id for job in jobs.values()} - old_done
    before = await counts(db)

    report = await prune(db, policy(job_log=1, job_queue=1, job_transitions=1, job_attempts=1),
                         now=clock.now)

    assert await job_ids(db, "job_queue") == kept
    assert await job_ids(db, "job_log") == {jobs["new_succeeded"].id}
    # The outstanding jobs keep their ledger although it is older than the cutoff.
    assert await job_ids(db, "job_transitions") == kept
    assert await job_ids(db, "job_attempts") == {jobs["old_running"].id, jobs["new_succeeded"].id}
    after = await counts(db)
    assert report == PruneReport(
        job_log=2,
        job_queue=2,
        job_transitions=before["job_transitions"] - after["job_transitions"],
        job_attempts=3,  # old_succeeded's one attempt, old_failed's two
    )
    assert report.job_transitions == 3 + 5  # new->queued->running->done; + retry and re-claim
    assert report.total == 2 + 2 + 8 + 3


@pytest.mark.parametrize("table", TABLES)
async def test_each_table_follows_its_own_retention(
    db: Database, queue: Queue, clock: Clock, table: str
) -> None:
    await history(queue, clock)
    before = await counts(db)

    report = await prune(db, policy(**{table: 1}), now=clock.now)

    after = await counts(db)
    for other in TABLES:
        deleted = before[other] - after[other]
        assert getattr(report, other) == deleted
        assert (deleted > 0) == (other == table), other


async def test_outstanding_jobs_are_never_pruned_however_old(db: Database) -> None:
    """Even a queued row carrying an old completed_at (a cancelled-then-requeued row from an
    older writer, say) is outstanding and stays, with its transitions and attempts."""
    old = format_time(START)
    rows = [job_row(status, created=old, completed=old) for status in ("queued", "running")]
    rows += [job_row(status, created=old, completed=old) for status in TERMINAL]
    await insert_history(db, rows)

    report = await prune(db, policy(job_log=1, job_queue=1, job_transitions=1, job_attempts=1),
                         now=START + timedelta(days=30))

    left = await db.read(lambda conn: conn.execute(
        "SELECT status FROM job_queue ORDER BY status").fetchall())
    assert [row[0] for row in left] == ["queued", "running"]
    assert (report.job_queue, report.job_log) == (len(TERMINAL), len(TERMINAL))
    assert (report.job_transitions, report.job_attempts) == (len(TERMINAL), len(TERMINAL))
    assert await counts(db) == {
        "job_log": 0, "job_queue": 2, "job_transitions": 2, "job_attempts": 2,
    }


async def test_the_cutoff_is_strict(db: Database) -> None:
    cutoff = START
    at = format_time(cutoff)
    before = format_time(cutoff - timedelta(microseconds=1))
    await insert_history(db, [
        job_row("succeeded", created=before, completed=before),
        job_row("succeeded", created=before, completed=at),
    ])

    report = await prune(db, policy(job_log=1, job_queue=1, job_transitions=1, job_attempts=1),
                         now=cutoff + timedelta(days=1))

    assert (report.job_queue, report.job_log) == (1, 1)
    # job_transitions and job_attempts go by created_at, which is `before` for both jobs.
    assert (report.job_transitions, report.job_attempts) == (2, 2)


async def test_zero_retention_keeps_everything(db: Database, queue: Queue, clock: Clock) -> None:
    await history(queue, clock)
    before = await counts(db)
    writes = db.write_stats()[1]

    report = await prune(db, policy(), now=clock.now + timedelta(days=3650))

    assert report.total == 0
    assert await counts(db) == before
    assert db.write_stats()[1] == writes  # not even an empty DELETE


async def test_breaker_transitions_are_pruned_only_when_asked(db: Database) -> None:
    old, new = format_time(START), format_time(START + timedelta(days=10))

    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO circuit_breaker_transitions (id, plugin, command, to_state, reason, "
            "created_at) VALUES (?, 'echo', 'poll', 'open', 'failures', ?)",
            [(str(uuid.uuid4()), old), (str(uuid.uuid4()), old), (str(uuid.uuid4()), new)],
        )

    await db.write(insert)
    now = START + timedelta(days=10)
    assert (await prune(db, policy(job_log=1), now=now)).breaker_transitions == 0
    with_breakers = RetentionPolicy(0, 0, 0, 0, breaker_transitions=DAY)
    assert (await prune(db, with_breakers, now=now)).breaker_transitions == 2


# -- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "batch", "writes"), [(10, 3, 4), (9, 3, 4), (2, 3, 1)])
async def test_prune_deletes_in_batches_until_a_short_one(
    db: Database, rows: int, batch: int, writes: int
) -> None:
    """10 rows, batch 3: 3 + 3 + 3 + 1 in four write transactions; 9 rows need a fourth,
    empty batch to learn they are done."""
    old = format_time(START)
    await insert_history(
        db, [job_row("succeeded", created=old, completed=old) for _ in range(rows)]
    )
    writes_before = db.write_stats()[1]

    report = await prune(db, policy(job_log=1), now=START + timedelta(days=2), batch=batch)

    assert report.job_log == rows
    assert db.write_stats()[1] - writes_before == writes
    assert (await counts(db))["job_log"] == 0


async def test_enqueues_succeed_and_interleave_during_a_big_prune(
    db: Database, queue: Queue, clock: Clock
) -> None:
    old = format_time(START)
    await insert_history(db, [
        job_row(TERMINAL[i % len(TERMINAL)], created=old, completed=old) for i in range(3000)
    ])
    clock.advance(30 * DAY)
    events: list[str] = []
    enqueued: list[Job] = []
    result: list[PruneReport] = []

    async def pruner() -> None:
        result.append(await prune(
            db, policy(job_log=1, job_queue=1, job_transitions=1, job_attempts=1),
            now=clock.now, batch=50,
        ))
        events.append("pruned")

    async def producer(n: int) -> None:
        for i in range(20):
            enqueued.append(await queue.enqueue("echo", "poll", {"n": n, "i": i}, "test"))
            events.append("enqueued")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pruner)
        for n in range(5):
            nursery.start_soon(producer, n)

    assert result[0] == PruneReport(
        job_log=3000, job_queue=3000, job_transitions=3000, job_attempts=3000
    )
    assert len(enqueued) == 100
    assert await job_ids(db, "job_queue") == {job.id for job in enqueued}
    assert events.index("pruned") > events.index("enqueued") + 50, (
        "the enqueues waited for the whole prune instead of interleaving with its batches"
    )


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_a_policy_refuses_nonsense_durations(seconds: float) -> None:
    with pytest.raises(StoreError, match="job_queue"):
        RetentionPolicy(job_log=0, job_queue=seconds, job_transitions=0, job_attempts=0)


@pytest.mark.parametrize("batch", [0, -5, True])
async def test_prune_refuses_a_bad_batch(db: Database, batch: Any) -> None:
    with pytest.raises(StoreError, match="batch"):
        await prune(db, policy(job_log=1), batch=batch)


# -- helpers -------------------------------------------------------------------------------


def job_row(status: str, *, created: str, completed: str | None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "plugin": "echo", "command": "poll", "status": status,
        "submitted_by": "test", "created_at": created, "completed_at": completed,
    }


async def insert_history(db: Database, jobs: list[dict[str, Any]]) -> None:
    """Rows straight into the tables: each job with one transition and one attempt at its
    created_at, and a job_log row at its completed_at when terminal."""

    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO job_queue (id, plugin, command, status, submitted_by, created_at, "
            "completed_at) VALUES (:id, :plugin, :command, :status, :submitted_by, "
            ":created_at, :completed_at)",
            jobs,
        )
        conn.executemany(
            "INSERT INTO job_transitions (job_id, from_status, to_status, created_at) "
            "VALUES (:id, NULL, :status, :created_at)",
            jobs,
        )
        conn.executemany(
            "INSERT INTO job_attempts (job_id, attempt, created_at) VALUES (:id, 1, :created_at)",
            jobs,
        )
        conn.executemany(
            "INSERT INTO job_log (id, job_id, plugin, command, status, attempt, submitted_by, "
            "created_at, completed_at) VALUES (:id || '-1', :id, :plugin, :command, :status, 1, "
            ":submitted_by, :created_at, :completed_at)",
            [job for job in jobs if job["status"] in TERMINAL],
        )

    await db.write(insert)
