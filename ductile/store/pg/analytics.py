"""The ledger figures of `GET /analytics/*` and `GET /stopwatch/{plugin}` on PostgreSQL.

The same selects as store/analytics.py with PostgreSQL placeholders; the rows go through the
same pure helpers there (grouping, queue waits, samples), so both backends answer alike.
Called inside one `PgDatabase.read` (one REPEATABLE READ snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ductile.machines import job_statuses
from ductile.store.analytics import (
    RECENT_WINDOW,
    SUMMARY_WINDOW,
    AnalyticsStatements,
    QueueFigures,
    Sample,
    assemble_queue_figures,
    by_plugin_then_status,
    samples_of,
    started_statuses,
)
from ductile.store.jobs import format_time

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def _rows(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows as tuples in select order (the pool's connections return dicts)."""
    return [tuple(row.values()) for row in conn.execute(sql, params).fetchall()]


def _one(conn: Conn, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return next(iter(row.values()))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("%s" for _ in values)


def status_counts(conn: Conn, now: datetime, window: timedelta = SUMMARY_WINDOW) -> dict[str, int]:
    """Terminal attempts (job_log rows) completed within `window` before `now`, by status."""
    rows = _rows(conn, "SELECT status, COUNT(*) FROM job_log WHERE completed_at >= %s "
                       "GROUP BY status", (format_time(now - window),))
    return {status: int(count) for status, count in sorted(rows)}


def plugin_status_counts(conn: Conn, now: datetime,
                         window: timedelta = SUMMARY_WINDOW) -> dict[str, dict[str, int]]:
    """The same attempts by plugin, then status."""
    return by_plugin_then_status(_rows(
        conn, "SELECT plugin, status, COUNT(*) FROM job_log WHERE completed_at >= %s "
              "GROUP BY plugin, status", (format_time(now - window),)))


def queue_figures(conn: Conn, now: datetime) -> QueueFigures:
    statuses = sorted(job_statuses().all)
    started = started_statuses()
    since = format_time(now - RECENT_WINDOW)
    return assemble_queue_figures(
        by_status=_rows(conn, f"SELECT status, COUNT(*) FROM job_queue WHERE status IN "
                              f"({_marks(statuses)}) GROUP BY status", statuses),
        delayed=_one(conn, "SELECT COUNT(*) FROM job_queue WHERE status = 'queued' "
                           "AND next_retry_at IS NOT NULL AND next_retry_at > %s",
                     (format_time(now),)),
        oldest=_one(conn, "SELECT MIN(created_at) FROM job_queue WHERE status = 'queued'"),
        running=_rows(conn, "SELECT id, plugin, command, started_at FROM job_queue "
                            "WHERE status = 'running' ORDER BY created_at, id"),
        active=_rows(conn, "SELECT plugin, status, COUNT(*) FROM job_queue "
                           "WHERE status IN ('queued', 'running') GROUP BY plugin, status"),
        waits=_rows(conn, f"SELECT created_at, started_at FROM job_queue WHERE status IN "
                          f"({_marks(started)}) AND created_at >= %s AND attempt = 1 "
                          "AND started_at IS NOT NULL", (*started, since)),
        completed=_one(conn, "SELECT COUNT(*) FROM job_log WHERE completed_at >= %s", (since,)),
    )


def attempt_durations(conn: Conn, plugin: str, since: datetime) -> list[Sample]:
    """The finished attempts of `plugin` that began at or after `since`, oldest first (the
    plugin and command from the job row, or from its job_log row once the job is pruned)."""
    return samples_of(_rows(
        conn,
        "SELECT COALESCE(q.command, l.command), a.created_at, a.duration_ms, a.outcome "
        "FROM job_attempts AS a "
        "LEFT JOIN job_queue AS q ON q.id = a.job_id "
        "LEFT JOIN job_log AS l ON l.job_id = a.job_id AND l.attempt = a.attempt "
        "WHERE a.created_at >= %s AND a.duration_ms IS NOT NULL "
        "AND COALESCE(q.plugin, l.plugin) = %s ORDER BY a.created_at, a.id",
        (format_time(since), plugin)))


PG_ANALYTICS = AnalyticsStatements(
    status_counts=status_counts,
    plugin_status_counts=plugin_status_counts,
    queue_figures=queue_figures,
    attempt_durations=attempt_durations,
)
