"""Queue benchmarks on a real SQLite file: enqueue rate, claim latency as the table grows, and
crash recovery of a large orphan set.

The table is prefilled with direct `executemany` INSERTs in one transaction (seconds for
100k rows, where the Queue API would take minutes): mostly terminal history plus 0.5% queued
jobs. In the main sweep those are due (the claims measured take them first, like any other
job). In the backlog variant they wait on a retry time an hour away: they then sit in front
of every new job in claim order (`status, created_at`) and each claim steps over all of them,
so that variant shows what a retry backlog (a downstream outage) costs the dispatcher.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trio

from support.bench import median, percentile, report
from ductile.store import Database, Queue
from ductile.store.jobs import Job, format_time

SIZES = (0, 10_000, 100_000)
BACKLOG_SHARE = 0.005  # prefilled rows that are queued
SEQUENTIAL_JOBS = 1000
CONCURRENT_JOBS = 2000
CONCURRENT_TASKS = 20
CLAIMS = 500
WARMUP = 20
ORPHANS = 10_000
TERMINAL = ("succeeded", "succeeded", "succeeded", "failed", "dead", "skipped", "timed_out")


def prefill_rows(
    count: int, *, status_of: str | None, now: datetime, backlog_due: bool = True
) -> list[tuple]:
    """`count` job_queue rows created before `now`; `status_of=None` gives the mixed history
    (terminal, 0.5% queued: due now, or due in an hour when not `backlog_due`), otherwise
    every row has that status."""
    backlog_every = int(1 / BACKLOG_SHARE)
    retry_at = None if backlog_due else format_time(now + timedelta(hours=1))
    rows = []
    for i in range(count):
        created = now - timedelta(seconds=count - i)
        status = status_of or ("queued" if i % backlog_every == 0 else TERMINAL[i % len(TERMINAL)])
        terminal = status not in ("queued", "running")
        rows.append((
            str(uuid.uuid4()), "echo", "poll", '{"n":1}', status, 1, 4, "bench",
            f"key{i % 100}" if i % 2 else None, format_time(created),
            format_time(created) if status == "running" else None,
            format_time(created + timedelta(seconds=1)) if terminal else None,
            retry_at if status == "queued" else None,
        ))
    return rows


async def prefill(db: Database, rows: list[tuple], *, attempts: bool = False) -> None:
    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO job_queue (id, plugin, command, payload, status, attempt, max_attempts, "
            "submitted_by, dedupe_key, created_at, started_at, completed_at, next_retry_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if attempts:
            conn.executemany(
                "INSERT INTO job_attempts (job_id, attempt, created_at, started_at) "
                "VALUES (?, 1, ?, ?)",
                [(row[0], row[9], row[9]) for row in rows],
            )

    await db.write(insert)


def new_queue(db: Database) -> Queue:
    return Queue(db, snapshot_id=lambda: "cfg_bench", dedupe_ttl=0)


async def enqueue_sequential(queue: Queue, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await queue.enqueue("echo", "poll", {"i": i}, "bench")
    return n / (time.perf_counter() - start)


async def enqueue_concurrent(queue: Queue, n: int, tasks: int) -> float:
    per_task = n // tasks

    async def producer(t: int) -> None:
        for i in range(per_task):
            await queue.enqueue("echo", "poll", {"t": t, "i": i}, "bench")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(producer, t)
    return per_task * tasks / (time.perf_counter() - start)


async def claim_complete(queue: Queue) -> float:
    """Seconds for one claim and the completion of the claimed job (two writes)."""
    start = time.perf_counter()
    job: Job | None = await queue.claim()
    assert job is not None, "the queue ran dry"
    await queue.complete(job, "succeeded", result="{}", last_error=None, stderr="",
                         exit_code=0, duration_ms=1, outcome="ok")
    return time.perf_counter() - start


async def measure(
    directory: Path, rows: int, *, backlog_due: bool = True
) -> tuple[float, float, list[float]]:
    """(sequential enqueue jobs/s, concurrent enqueue jobs/s, claim+complete seconds)."""
    directory.mkdir()
    db = await Database.open(str(directory / "ductile.db"))
    try:
        now = datetime.now(timezone.utc)
        await prefill(db, prefill_rows(rows, status_of=None, now=now, backlog_due=backlog_due))
        queue = new_queue(db)
        sequential = await enqueue_sequential(queue, SEQUENTIAL_JOBS)
        concurrent = await enqueue_concurrent(queue, CONCURRENT_JOBS, CONCURRENT_TASKS)
        for _ in range(WARMUP):
            await claim_complete(queue)
        latencies = [await claim_complete(queue) for _ in range(CLAIMS)]
        return sequential, concurrent, latencies
    finally:
        await db.close()


async def test_enqueue_rate_and_claim_latency_as_the_table_grows(tmp_path: Path) -> None:
    claim_p50: dict[int, float] = {}
    for rows in SIZES:
        sequential, concurrent, latencies = await measure(tmp_path / f"rows{rows}", rows)
        claim_p50[rows] = median(latencies) * 1e6
        report(f"enqueue_sequential_{rows}rows", sequential, "jobs/s", ">= 2000 jobs/s",
               f"n={SEQUENTIAL_JOBS}")
        report(f"enqueue_concurrent{CONCURRENT_TASKS}_{rows}rows", concurrent, "jobs/s",
               ">= 2000 jobs/s", f"n={CONCURRENT_JOBS}")
        report(f"claim_complete_p50_{rows}rows", claim_p50[rows], "us", "n/a",
               f"p95 {percentile(latencies, 95) * 1e6:.0f} us, n={CLAIMS}")
    largest = SIZES[-1]
    report(f"claim_complete_p50_ratio_{largest}_vs_0", claim_p50[largest] / claim_p50[0], "x",
           "<= 2x")

    _, _, latencies = await measure(tmp_path / "backlog", largest, backlog_due=False)
    backlog_p50 = median(latencies) * 1e6
    report(f"claim_complete_p50_{largest}rows_not_due_backlog", backlog_p50, "us", "n/a",
           f"p95 {percentile(latencies, 95) * 1e6:.0f} us, "
           f"{int(largest * BACKLOG_SHARE)} queued jobs not yet due ahead of every claim")
    report(f"claim_complete_p50_ratio_{largest}_not_due_backlog_vs_0", backlog_p50 / claim_p50[0],
           "x", "<= 2x")


async def test_recovery_of_orphaned_running_jobs(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "ductile.db"))
    try:
        now = datetime.now(timezone.utc)
        await prefill(db, prefill_rows(ORPHANS, status_of="running", now=now), attempts=True)
        await prefill(db, prefill_rows(ORPHANS, status_of=None, now=now))
        queue = new_queue(db)
        start = time.perf_counter()
        recovered = await queue.recover_orphans()
        elapsed = time.perf_counter() - start
        assert len(recovered) == ORPHANS
        assert {job.status for job in recovered} == {"queued"}
        left = await db.read(lambda conn: conn.execute(
            "SELECT count(*) FROM job_queue WHERE status = 'running'").fetchone()[0])
        assert left == 0
    finally:
        await db.close()
    report(f"recover_orphans_{ORPHANS}", elapsed, "s", "n/a",
           f"{elapsed / ORPHANS * 1e6:.0f} us/job, one write transaction")
