"""Read-only figures over the ledger for `GET /analytics/*` and `GET /stopwatch/{plugin}`.

Every function takes a read connection (the store's `read` runs it in one snapshot) and the
current time, and reads through an index (tests/test_introspect.py checks each query plan):

- `job_log_completed_at_idx` bounds the terminal attempts of a window (summary, throughput);
- `job_queue_status_created_at_idx` serves every count by status, the oldest queued job and the
  running jobs, and (by status and created_at) the queue waits of recent jobs;
- `job_queue_plugin_command_status_idx` the counts per plugin;
- `job_queue_retry_due_idx` the jobs waiting for a retry;
- `job_attempts_created_at_idx` the attempts of a stopwatch window, each joined by key to its
  job for the plugin and command.

Percentiles use the nearest-rank method (the smallest sample at or above p% of the samples),
as the Go original's stopwatch does, so every figure is a duration that really occurred.

The API reaches these through `AnalyticsStatements` (Backend.analytics): SQLite's functions here
(`SQLITE_ANALYTICS`), PostgreSQL's in store/pg/analytics.py. What is not SQL (grouping rows,
the queue waits, percentiles) is written once here and called by both.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ductile.machines import job_statuses
from ductile.store.facts import Fact, fetch_facts
from ductile.store.jobs import format_time, parse_time

#: The stopwatch windows the original accepts, in seconds.
STOPWATCH_WINDOWS: dict[str, float] = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}
#: Buckets of a stopwatch trend (the original's six).
TREND_BUCKETS = 6
#: The window of `analytics/summary` and of the queue waits and throughput.
SUMMARY_WINDOW = timedelta(hours=24)
RECENT_WINDOW = timedelta(hours=1)


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float | None:
    """The nearest-rank percentile of ascending `sorted_values` (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def status_counts(conn: sqlite3.Connection, now: datetime,
                  window: timedelta = SUMMARY_WINDOW) -> dict[str, int]:
    """Terminal attempts (job_log rows) completed within `window` before `now`, by status."""
    rows = conn.execute(
        "SELECT status, COUNT(*) FROM job_log WHERE completed_at >= ? GROUP BY status",
        (format_time(now - window),)).fetchall()
    # As tuples: the store's reader hands out sqlite3.Row, which does not sort.
    return {status: int(count) for status, count in sorted(tuple(row) for row in rows)}


def plugin_status_counts(conn: sqlite3.Connection, now: datetime,
                         window: timedelta = SUMMARY_WINDOW) -> dict[str, dict[str, int]]:
    """The same attempts by plugin, then status."""
    rows = conn.execute(
        "SELECT plugin, status, COUNT(*) FROM job_log WHERE completed_at >= ? "
        "GROUP BY plugin, status", (format_time(now - window),)).fetchall()
    return by_plugin_then_status(rows)


def by_plugin_then_status(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """(plugin, status, count) rows as {plugin: {status: count}}, both sorted."""
    out: dict[str, dict[str, int]] = {}
    for plugin, status, count in sorted(tuple(row) for row in rows):
        out.setdefault(plugin, {})[status] = int(count)
    return out


@dataclass(frozen=True)
class QueueFigures:
    """The queue as it stands: what `GET /analytics/queue` answers."""

    by_status: dict[str, int]
    delayed: int  # queued jobs waiting for a retry's due time
    oldest_queued_at: str | None
    running: list[dict[str, Any]]
    active_by_plugin: dict[str, dict[str, int]]  # plugin -> {queued, running}
    wait_ms: list[float]  # ascending: created -> first start of jobs created in the last hour
    completed_last_hour: int


def queue_figures(conn: sqlite3.Connection, now: datetime) -> QueueFigures:
    statuses = sorted(job_statuses().all)
    marks = ", ".join("?" for _ in statuses)
    by_status = conn.execute(
        f"SELECT status, COUNT(*) FROM job_queue WHERE status IN ({marks}) GROUP BY status",
        statuses).fetchall()
    delayed = conn.execute(
        "SELECT COUNT(*) FROM job_queue WHERE status = 'queued' AND next_retry_at IS NOT NULL "
        "AND next_retry_at > ?", (format_time(now),)).fetchone()[0]
    oldest = conn.execute(
        "SELECT MIN(created_at) FROM job_queue WHERE status = 'queued'").fetchone()[0]
    running = conn.execute(
        "SELECT id, plugin, command, started_at FROM job_queue "
        "WHERE status = 'running' ORDER BY created_at, id").fetchall()
    active = conn.execute(
        "SELECT plugin, status, COUNT(*) FROM job_queue "
        "WHERE status IN ('queued', 'running') GROUP BY plugin, status").fetchall()
    started = started_statuses()
    since = format_time(now - RECENT_WINDOW)
    waits = conn.execute(
        f"SELECT created_at, started_at FROM job_queue WHERE status IN "
        f"({', '.join('?' for _ in started)}) AND created_at >= ? AND attempt = 1 "
        f"AND started_at IS NOT NULL", (*started, since)).fetchall()
    completed = conn.execute("SELECT COUNT(*) FROM job_log WHERE completed_at >= ?",
                             (since,)).fetchone()[0]
    return assemble_queue_figures(by_status=by_status, delayed=delayed, oldest=oldest,
                                  running=running, active=active, waits=waits,
                                  completed=completed)


def started_statuses() -> list[str]:
    """Every status a job has once it started (all but queued), for the queue waits."""
    return [s for s in sorted(job_statuses().all) if s != "queued"]


def assemble_queue_figures(
    *,
    by_status: Iterable[Sequence[Any]],
    delayed: int,
    oldest: str | None,
    running: Iterable[Sequence[Any]],
    active: Iterable[Sequence[Any]],
    waits: Iterable[Sequence[Any]],
    completed: int,
) -> QueueFigures:
    """`QueueFigures` from a backend's rows, as tuples in the order of the SQLite selects:
    (status, count); (id, plugin, command, started_at) of running jobs oldest first;
    (plugin, status, count) of live jobs; (created_at, started_at) of recent first attempts."""
    active_by_plugin: dict[str, dict[str, int]] = {}
    for plugin, status, count in (tuple(row) for row in active):
        active_by_plugin.setdefault(plugin, {"queued": 0, "running": 0})[status] = int(count)
    wait_ms = [max(0.0, (parse_time(first_start) - parse_time(created)).total_seconds() * 1000)
               for created, first_start in (tuple(row) for row in waits)]
    return QueueFigures(
        by_status={status: int(count) for status, count in (tuple(row) for row in by_status)},
        delayed=int(delayed), oldest_queued_at=oldest,
        running=[{"job_id": job_id, "plugin": plugin, "command": command, "started_at": started}
                 for job_id, plugin, command, started in (tuple(row) for row in running)],
        active_by_plugin=dict(sorted(active_by_plugin.items())),
        wait_ms=sorted(wait_ms), completed_last_hour=int(completed))


@dataclass(frozen=True)
class Sample:
    """One finished attempt of a plugin: its command, when it began, how long it ran."""

    command: str
    at: str
    duration_ms: int
    outcome: str | None


def attempt_durations(conn: sqlite3.Connection, plugin: str, since: datetime) -> list[Sample]:
    """The finished attempts of `plugin` that began at or after `since`, oldest first.

    The plugin and command come from the job row, or from the job_log row once retention has
    removed the job (job_queue keeps terminal jobs a day by default, job_log a month)."""
    rows = conn.execute(
        "SELECT COALESCE(q.command, l.command), a.created_at, a.duration_ms, a.outcome "
        "FROM job_attempts AS a "
        "LEFT JOIN job_queue AS q ON q.id = a.job_id "
        "LEFT JOIN job_log AS l ON l.job_id = a.job_id AND l.attempt = a.attempt "
        "WHERE a.created_at >= ? AND a.duration_ms IS NOT NULL "
        "AND COALESCE(q.plugin, l.plugin) = ? ORDER BY a.created_at, a.id",
        (format_time(since), plugin)).fetchall()
    return samples_of(rows)


def samples_of(rows: Iterable[Sequence[Any]]) -> list[Sample]:
    """(command, at, duration_ms, outcome) rows as Samples, skipping rows with no command
    (an attempt whose job row and job_log row are both gone)."""
    return [Sample(command, at, int(ms), outcome)
            for command, at, ms, outcome in (tuple(row) for row in rows)
            if command is not None]


def stopwatch_steps(samples: Sequence[Sample], since: datetime,
                    window_seconds: float) -> list[dict[str, Any]]:
    """Per command: the sample count, p50/p95/p99 and max, the last duration and when it
    began, and the p95 of each sixth of the window (None where a sixth has no sample)."""
    by_command: dict[str, list[Sample]] = {}
    for sample in samples:
        by_command.setdefault(sample.command, []).append(sample)
    steps = []
    width = window_seconds / TREND_BUCKETS
    for command in sorted(by_command):
        mine = by_command[command]
        ordered = sorted(s.duration_ms for s in mine)
        buckets: list[list[int]] = [[] for _ in range(TREND_BUCKETS)]
        for sample in mine:
            offset = (parse_time(sample.at) - since).total_seconds()
            buckets[min(TREND_BUCKETS - 1, max(0, int(offset // width)))].append(
                sample.duration_ms)
        steps.append({
            "step": command,
            "sample_count": len(ordered),
            "p50_ms": nearest_rank(ordered, 50),
            "p95_ms": nearest_rank(ordered, 95),
            "p99_ms": nearest_rank(ordered, 99),
            "max_ms": ordered[-1],
            "last_ms": mine[-1].duration_ms,
            "last_at": mine[-1].at,
            "trend_p95_ms": [nearest_rank(sorted(b), 95) for b in buckets],
        })
    return steps


def facts_of_every_plugin(conn: sqlite3.Connection, limit: int,
                          fact_type: str | None = None) -> list[Fact]:
    """The newest `limit` facts over every plugin: each plugin's newest through its index
    (`fetch_facts`), merged newest first by time, then sequence."""
    plugins = [row[0] for row in conn.execute(
        "SELECT DISTINCT plugin_name FROM plugin_facts ORDER BY plugin_name").fetchall()]
    merged = [fact for plugin in plugins
              for fact in fetch_facts(conn, plugin, limit, fact_type=fact_type)]
    merged.sort(key=lambda f: (f.created_at, f.seq or 0), reverse=True)
    return merged[:limit]


@dataclass(frozen=True)
class AnalyticsStatements:
    """The ledger figures of one backend (Backend.analytics), each with the arguments and
    answer of the SQLite function of the same name in this module: status_counts(conn, now,
    window=SUMMARY_WINDOW), plugin_status_counts(conn, now, window=SUMMARY_WINDOW),
    queue_figures(conn, now), attempt_durations(conn, plugin, since)."""

    status_counts: Callable[..., dict[str, int]]
    plugin_status_counts: Callable[..., dict[str, dict[str, int]]]
    queue_figures: Callable[[Any, datetime], QueueFigures]
    attempt_durations: Callable[[Any, str, datetime], list[Sample]]


SQLITE_ANALYTICS = AnalyticsStatements(
    status_counts=status_counts,
    plugin_status_counts=plugin_status_counts,
    queue_figures=queue_figures,
    attempt_durations=attempt_durations,
)
