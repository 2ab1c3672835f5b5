"""Retention: delete old queue history in small batches so the single writer stays responsive.

Why batches. Every write goes through one writer thread (db.py). One `DELETE` of a month of
history would hold that thread, and so every enqueue and claim, for as long as it takes. Here
each table is pruned `batch` rows per write transaction, with a trio checkpoint between
batches, so other writes queue behind at most one small batch and interleave with the prune.

What is kept, always (the Go original's rules, plus one safety rule of ours):

- a `queued` or `running` job_queue row, however old: only terminal rows are pruned;
- the job_transitions and job_attempts rows of a job that is still queued or running: the
  dispatcher updates the open attempt row when the job ends, and `job inspect` must be able to
  explain a live job. Go prunes these by `created_at` alone; a job running (or waiting on a
  retry) for longer than the retention would lose its ledger there.

Zero retention for a table means keep forever (no statement is run). event_context,
plugin_facts and plugin_state are never pruned.

Cutoffs are compared as text: every timestamp is stored fixed-width (jobs.format_time), so
`completed_at < cutoff` is a time comparison and can use the `(completed_at)` and
`(created_at)` indexes.

Only the statements differ between backends: `RetentionStatements.delete_batch` deletes one
batch of one table (SQLite's by rowid here, `SQLITE_RETENTION`; PostgreSQL's in
store/pg/retention.py); the batching, the cutoffs and the policy are `prune`'s, shared.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any, Protocol

import trio

from ductile.errors import StoreError
from ductile.machines import job_statuses
from ductile.store.jobs import shift_time, utcnow

DEFAULT_BATCH = 500

_NOT_OUTSTANDING = (
    "NOT EXISTS (SELECT 1 FROM job_queue AS q WHERE q.id = {table}.job_id "
    "AND q.status IN {live})"
)


@cache
def _deletes() -> dict[str, str]:
    """Each statement deletes at most :batch rows older than :cutoff. The inner SELECT is what
    the indexes serve; `rowid IN (...)` then deletes by rowid. The status sets come from
    states/job.yaml."""
    statuses = job_statuses()
    terminal, live = statuses.sql("terminal"), statuses.sql("live")
    return {
        "job_log": (
            "DELETE FROM job_log WHERE rowid IN (SELECT rowid FROM job_log "
            "WHERE completed_at < :cutoff LIMIT :batch)"
        ),
        # completed_at >= created_at for every row (both come from the same clock), so the
        # created_at bound never drops a row the completed_at test keeps; it only lets
        # job_queue_status_created_at_idx narrow the scan (job_queue has no completed_at
        # index). After a clock step backwards a row may be kept a little longer, never
        # deleted early.
        "job_queue": (
            "DELETE FROM job_queue WHERE rowid IN (SELECT rowid FROM job_queue "
            f"WHERE status IN {terminal} AND created_at < :cutoff "
            "AND completed_at IS NOT NULL AND completed_at < :cutoff LIMIT :batch)"
        ),
        "job_transitions": (
            "DELETE FROM job_transitions WHERE rowid IN (SELECT rowid FROM job_transitions "
            "WHERE created_at < :cutoff AND "
            + _NOT_OUTSTANDING.format(table="job_transitions", live=live)
            + " LIMIT :batch)"
        ),
        "job_attempts": (
            "DELETE FROM job_attempts WHERE rowid IN (SELECT rowid FROM job_attempts "
            "WHERE created_at < :cutoff AND "
            + _NOT_OUTSTANDING.format(table="job_attempts", live=live)
            + " LIMIT :batch)"
        ),
        "breaker_transitions": (
            "DELETE FROM circuit_breaker_transitions WHERE rowid IN (SELECT rowid "
            "FROM circuit_breaker_transitions WHERE created_at < :cutoff LIMIT :batch)"
        ),
    }


@dataclass(frozen=True)
class RetentionPolicy:
    """How long (seconds) each table keeps its rows; 0 keeps them forever.

    `breaker_transitions` (circuit_breaker_transitions) defaults to forever so a policy built
    from the four job tables alone changes nothing else.
    """

    job_log: float
    job_queue: float
    job_transitions: float
    job_attempts: float
    breaker_transitions: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise StoreError(
                    f"retention for {item.name} must be a finite number of seconds >= 0 "
                    f"(0 keeps rows forever), got {value!r}"
                )


@dataclass(frozen=True)
class PruneReport:
    """Rows deleted per table by one `prune` call."""

    job_log: int = 0
    job_queue: int = 0
    job_transitions: int = 0
    job_attempts: int = 0
    breaker_transitions: int = 0

    @property
    def total(self) -> int:
        """Rows deleted across every table."""
        return sum(getattr(self, item.name) for item in fields(self))


@dataclass(frozen=True)
class RetentionStatements:
    """One backend's delete (Backend.retention): `delete_batch(conn, table, cutoff, batch)`
    deletes at most `batch` prunable rows of `table` (a RetentionPolicy field name) older than
    `cutoff`, keeping what the module docstring says is always kept; returns how many."""

    delete_batch: Callable[[Any, str, str, int], int]


class Writer(Protocol):
    """What `prune` needs of a database: one write transaction per call (Database or
    PgDatabase)."""

    def write(self, fn: Callable[[Any], Any]) -> Awaitable[Any]: ...


async def prune(
    db: Writer,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    statements: RetentionStatements | None = None,
) -> PruneReport:
    """Delete rows older than each table's retention, `batch` rows per write transaction.

    Tables are pruned one after another; each loops until a batch deletes fewer than `batch`
    rows. The cutoffs are fixed at the start, so rows that age past them during the prune wait
    for the next call. Cancellation is honoured between batches (a committed batch stays
    deleted: pruning is idempotent, the next call carries on). `statements` are the
    backend's deletes (SQLite's when None).
    """
    sql = SQLITE_RETENTION if statements is None else statements
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise StoreError(f"prune batch must be a positive integer, got {batch!r}")
    moment = utcnow() if now is None else now
    counts: dict[str, int] = {}
    for item in fields(policy):
        table = item.name
        seconds: float = getattr(policy, table)
        if seconds == 0:
            counts[table] = 0
            continue
        counts[table] = await _prune_table(db, sql, table, shift_time(moment, -seconds), batch)
    return PruneReport(**counts)


async def _prune_table(db: Writer, sql: RetentionStatements, table: str, cutoff: str,
                       batch: int) -> int:
    """Delete batch by batch until a batch comes back short; the checkpoint between batches
    lets the writes queued meanwhile reach the writer before our next batch."""
    deleted = 0
    while True:
        count: int = await db.write(lambda conn: sql.delete_batch(conn, table, cutoff, batch))
        deleted += count
        if count < batch:
            return deleted
        await trio.sleep(0)


def _delete_batch(conn: sqlite3.Connection, table: str, cutoff: str, batch: int) -> int:
    return int(conn.execute(_deletes()[table], {"cutoff": cutoff, "batch": batch}).rowcount)


SQLITE_RETENTION = RetentionStatements(delete_batch=_delete_batch)
