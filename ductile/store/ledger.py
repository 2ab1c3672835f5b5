"""The job ledger's synchronous readers: job rows, attempts, transitions and job_log entries.

Each takes a connection and only reads, so the same function serves `Queue`'s reads (through
`Database.read`) and the CLI (`ductile job list`, `ductile job inspect`) on a read-only
connection opened without a running daemon. They are separate from queue.py so the CLI does
not need the async facade, and from writes.py so nothing here can change a row.

Names with a leading underscore are the queue's own hot-path reads (the dispatcher's
parallelism skip list, the wake-up time, the health depth), not meant for other callers.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ductile.machines import job_statuses
from ductile.store.context import EventContext, fetch_lineage
from ductile.store.jobs import Attempt, Job, JobLinks, LogEntry, Transition
from ductile.store.snapshots import fetch_snapshot

_JOB_COLUMNS = Job.select_list()


def fetch_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    """One job row, or None."""
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM job_queue WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row is not None else None


def fetch_jobs(
    conn: sqlite3.Connection,
    *,
    plugin: str | None,
    command: str | None,
    status: str | None,
    limit: int,
) -> tuple[list[Job], int]:
    """Filtered jobs newest first, plus the total ignoring `limit`."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("plugin", plugin), ("command", command), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    total = int(conn.execute(f"SELECT count(*) FROM job_queue {where}", params).fetchone()[0])
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM job_queue {where} "
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [Job.from_row(row) for row in rows], total


def fetch_attempts(conn: sqlite3.Connection, job_id: str) -> list[Attempt]:
    rows = conn.execute(
        f"SELECT {Attempt.select_list()} FROM job_attempts WHERE job_id = ? ORDER BY attempt, id",
        (job_id,),
    )
    return [Attempt.from_row(row) for row in rows]


def fetch_transitions(conn: sqlite3.Connection, job_id: str) -> list[Transition]:
    rows = conn.execute(
        f"SELECT {Transition.select_list()} FROM job_transitions WHERE job_id = ? "
        "ORDER BY created_at, id",
        (job_id,),
    )
    return [Transition.from_row(row) for row in rows]


def fetch_log_entries(conn: sqlite3.Connection, job_id: str) -> list[LogEntry]:
    rows = conn.execute(
        f"SELECT {LogEntry.select_list()} FROM job_log WHERE job_id = ? "
        "ORDER BY attempt, completed_at",
        (job_id,),
    )
    return [LogEntry.from_row(row) for row in rows]


def fetch_links(conn: sqlite3.Connection, job: Job) -> JobLinks:
    """The job's retry and rerun links both ways (the reverse ones through the partial
    indexes on retry_of and rerun_of)."""
    retried = conn.execute(
        "SELECT id FROM job_queue WHERE retry_of = ? ORDER BY created_at, rowid LIMIT 1",
        (job.id,),
    ).fetchone()
    rerun = conn.execute(
        "SELECT id FROM job_queue WHERE rerun_of = ? ORDER BY created_at, rowid", (job.id,)
    ).fetchall()
    return JobLinks(retry_of=job.retry_of, retried_as=retried[0] if retried else None,
                    rerun_of=job.rerun_of, rerun_as=tuple(str(row[0]) for row in rerun))


@dataclass(frozen=True)
class LineageStep:
    """One hop of a job's context lineage, root first: the event_context row and the first
    job (by creation) that ran with it, when one is still in the ledger."""

    hop: int
    context: EventContext
    job: Job | None


def fetch_steps(conn: sqlite3.Connection, context_id: str | None) -> list[LineageStep]:
    """The context lineage from its root down to `context_id`, each hop numbered from 1 (as the
    Go gateway's inspect report numbers them) with its first job; empty without a context."""
    if not context_id:
        return []
    steps = []
    for hop, context in enumerate(fetch_lineage(conn, context_id), start=1):
        row = conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM job_queue WHERE event_context_id = ? "
            "ORDER BY created_at, rowid LIMIT 1", (context.id,),
        ).fetchone()
        steps.append(LineageStep(hop, context, Job.from_row(row) if row is not None else None))
    return steps


def read_job_ledger(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """Everything recorded about one job, for `ductile job inspect`; None when unknown.

    Keys: job, attempts, transitions, logs, snapshot (the config snapshot live at enqueue, as
    a dict, or None), started_snapshot (the one live at the last claim), links (JobLinks) and
    steps (the job's context lineage, root first, as LineageStep).
    """
    job = fetch_job(conn, job_id)
    if job is None:
        return None
    return {
        "job": job,
        "attempts": fetch_attempts(conn, job_id),
        "transitions": fetch_transitions(conn, job_id),
        "logs": fetch_log_entries(conn, job_id),
        "snapshot": fetch_snapshot(conn, job.enqueued_config_snapshot_id),
        "started_snapshot": fetch_snapshot(conn, job.started_config_snapshot_id),
        "links": fetch_links(conn, job),
        "steps": fetch_steps(conn, job.event_context_id),
    }


def _running_counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT plugin, count(*) FROM job_queue WHERE status = 'running' GROUP BY plugin"
    )
    return {str(row[0]): int(row[1]) for row in rows}


def _queue_depth(conn: sqlite3.Connection) -> int:
    """How many jobs are queued (due or not)."""
    return int(conn.execute("SELECT count(*) FROM job_queue WHERE status = 'queued'").fetchone()[0])


def _outstanding_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Jobs in a live status of states/job.yaml (queued or running), per plugin: the seed and
    the periodic re-sync of the backpressure count (events/outstanding.py)."""
    rows = conn.execute(
        "SELECT plugin, count(*) FROM job_queue WHERE status IN "
        f"{job_statuses().sql('live')} GROUP BY plugin"
    )
    return {str(row[0]): int(row[1]) for row in rows}


def _next_retry_at(conn: sqlite3.Connection) -> str | None:
    """The earliest stored `next_retry_at` of a queued job, or None (NULL or empty)."""
    text: str | None = conn.execute(
        "SELECT min(next_retry_at) FROM job_queue "
        "WHERE status = 'queued' AND next_retry_at IS NOT NULL AND next_retry_at != ''"
    ).fetchone()[0]
    return text
