"""The job ledger's readers on PostgreSQL: the twins of store/ledger.py and store/joblog.py.

Same answers as the SQLite readers, row for row: the records are the shared dataclasses of
store/jobs.py, built from psycopg's dict rows by column name. Where SQLite breaks a created_at
tie by `rowid`, these use `seq` (insert order; PostgreSQL has no rowid), and the job log's text
search is `strpos` (a plain substring, as SQLite's `instr`: no LIKE pattern characters).
Each function takes the connection of a `PgDatabase.read` or `write` and only reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.machines import job_statuses
from ductile.store.jobs import Attempt, Job, JobLinks, LogEntry, Transition
from ductile.store.joblog import MAX_LIMIT, LogFilter, filter_sql

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

JOB_COLUMNS = Job.select_list()


def fetch_job(conn: Conn, job_id: str) -> Job | None:
    """One job row, or None."""
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM job_queue WHERE id = %s", (job_id,)).fetchone()
    return Job.from_row(row) if row is not None else None


def fetch_jobs(
    conn: Conn, *, plugin: str | None, command: str | None, status: str | None, limit: int
) -> tuple[list[Job], int]:
    """Filtered jobs newest first, plus the total ignoring `limit`."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("plugin", plugin), ("command", command), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    total = conn.execute(f"SELECT count(*) AS n FROM job_queue {where}", params).fetchone()
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM job_queue {where} ORDER BY created_at DESC, seq DESC "
        "LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [Job.from_row(row) for row in rows], int(total["n"])


def fetch_attempts(conn: Conn, job_id: str) -> list[Attempt]:
    rows = conn.execute(
        f"SELECT {Attempt.select_list()} FROM job_attempts WHERE job_id = %s "
        "ORDER BY attempt, id",
        (job_id,),
    ).fetchall()
    return [Attempt.from_row(row) for row in rows]


def fetch_transitions(conn: Conn, job_id: str) -> list[Transition]:
    rows = conn.execute(
        f"SELECT {Transition.select_list()} FROM job_transitions WHERE job_id = %s "
        "ORDER BY created_at, id",
        (job_id,),
    ).fetchall()
    return [Transition.from_row(row) for row in rows]


def fetch_log_entries(conn: Conn, job_id: str) -> list[LogEntry]:
    rows = conn.execute(
        f"SELECT {LogEntry.select_list()} FROM job_log WHERE job_id = %s "
        "ORDER BY attempt, completed_at",
        (job_id,),
    ).fetchall()
    return [LogEntry.from_row(row) for row in rows]


def retried_as(conn: Conn, job_id: str) -> str | None:
    """The job that retried `job_id` (`ductile job retry`), or None."""
    row = conn.execute(
        "SELECT id FROM job_queue WHERE retry_of = %s ORDER BY created_at, seq LIMIT 1",
        (job_id,),
    ).fetchone()
    return str(row["id"]) if row is not None else None


def fetch_links(conn: Conn, job: Job) -> JobLinks:
    """The job's retry and rerun links both ways."""
    rerun = conn.execute(
        "SELECT id FROM job_queue WHERE rerun_of = %s ORDER BY created_at, seq", (job.id,)
    ).fetchall()
    return JobLinks(retry_of=job.retry_of, retried_as=retried_as(conn, job.id),
                    rerun_of=job.rerun_of, rerun_as=tuple(str(row["id"]) for row in rerun))


def running_counts(conn: Conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT plugin, count(*) AS n FROM job_queue WHERE status = 'running' GROUP BY plugin"
    ).fetchall()
    return {str(row["plugin"]): int(row["n"]) for row in rows}


def queue_depth(conn: Conn) -> int:
    """How many jobs are queued (due or not)."""
    row = conn.execute("SELECT count(*) AS n FROM job_queue WHERE status = 'queued'").fetchone()
    return int(row["n"])


def outstanding_counts(conn: Conn) -> dict[str, int]:
    """Jobs in a live status of states/job.yaml (queued or running), per plugin."""
    rows = conn.execute(
        "SELECT plugin, count(*) AS n FROM job_queue WHERE status IN "
        f"{job_statuses().sql('live')} GROUP BY plugin"
    ).fetchall()
    return {str(row["plugin"]): int(row["n"]) for row in rows}


def next_retry_at(conn: Conn) -> str | None:
    """The earliest stored `next_retry_at` of a queued job, or None (NULL or empty)."""
    row = conn.execute(
        "SELECT min(next_retry_at) AS due FROM job_queue "
        "WHERE status = 'queued' AND next_retry_at IS NOT NULL AND next_retry_at != ''"
    ).fetchone()
    due: str | None = row["due"]
    return due


def search_logs(conn: Conn, where: LogFilter) -> tuple[list[LogEntry], int]:
    """Matching job_log rows, newest `completed_at` first (at most `limit`), and the total
    (the filter of store/joblog.py, same meaning)."""
    sql_where, params = filter_sql(where, "%s", "strpos({column}, {mark}) > 0")
    total = conn.execute(f"SELECT count(*) AS n FROM job_log {sql_where}", params).fetchone()
    rows = conn.execute(
        f"SELECT {LogEntry.select_list()} FROM job_log {sql_where} "
        "ORDER BY completed_at DESC, id DESC LIMIT %s",
        (*params, max(1, min(where.limit, MAX_LIMIT))),
    ).fetchall()
    return [LogEntry.from_row(row) for row in rows], int(total["n"])
