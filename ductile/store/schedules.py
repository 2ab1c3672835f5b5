"""Schedule bookkeeping (schedule_entries) and the scheduler's view of outstanding jobs.

One row per (plugin, schedule id): the status (active, paused_manual, paused_invalid, exhausted),
the reason of the last decision, the scheduled instant of the last fire and of the next one.
Instants are the *scheduled* times (before jitter), which is what the scheduler needs to pick up
where it left off after a restart: the next fire is recomputed from them, and every fire is
enqueued with a key derived from its scheduled instant, so a fire replayed after a crash is a
dedupe hit, never a second job.

The operator's pause (`paused_manual`) always wins: `save_entry`, used by the scheduler, never
overwrites a paused row; only `set_paused(..., paused=False)` lifts it. That way a CLI pause
written beside a running daemon cannot be undone by the daemon's next bookkeeping write.

`ScheduleStatements` is what the layers above run, from the Backend they are given: SQLite's
functions here (`SQLITE_SCHEDULES`), PostgreSQL's in store/pg/schedules.py. The pause and
resume rule (`set_paused_on`) is written once over each backend's two row statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ductile.store.jobs import _Record

ACTIVE = "active"
PAUSED_MANUAL = "paused_manual"
PAUSED_INVALID = "paused_invalid"
EXHAUSTED = "exhausted"
PAUSED_REASON = "paused by operator"
RESUMED_REASON = "resumed by operator"
_OUTSTANDING = "id, status, plugin, dedupe_key, submitted_by, attempt, created_at, started_at"


@dataclass(frozen=True)
class ScheduleEntry(_Record):
    """One schedule_entries row."""

    plugin: str
    schedule_id: str
    command: str
    status: str
    reason: str | None
    last_fired_at: str | None
    last_success_job_id: str | None
    last_success_at: str | None
    next_run_at: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.columns()}


@dataclass(frozen=True)
class Outstanding:
    """A queued or running job the overlap policy (if_running) must consider."""

    id: str
    status: str
    plugin: str
    dedupe_key: str | None
    submitted_by: str
    attempt: int
    created_at: str
    started_at: str | None


def fetch_entries(
    conn: sqlite3.Connection, plugin: str | None = None
) -> dict[tuple[str, str], ScheduleEntry]:
    """Every row (of one plugin), keyed by (plugin, schedule id)."""
    where, params = ("WHERE plugin = ?", (plugin,)) if plugin is not None else ("", ())
    rows = conn.execute(
        f"SELECT {ScheduleEntry.select_list()} FROM schedule_entries {where} "
        "ORDER BY plugin, schedule_id",
        params,
    )
    return {(r["plugin"], r["schedule_id"]): ScheduleEntry.from_row(r) for r in rows}


def save_entry(conn: sqlite3.Connection, entry: ScheduleEntry) -> bool:
    """Insert or update the row, unless it is paused by the operator; True when written."""
    values = entry.as_dict()
    names = ", ".join(values)
    updates = ", ".join(f"{n} = excluded.{n}" for n in values if n not in ("plugin", "schedule_id"))
    cursor = conn.execute(
        f"INSERT INTO schedule_entries ({names}) VALUES ({', '.join('?' for _ in values)}) "
        f"ON CONFLICT (plugin, schedule_id) DO UPDATE SET {updates} "
        f"WHERE schedule_entries.status != '{PAUSED_MANUAL}'",
        tuple(values.values()),
    )
    return cursor.rowcount > 0


def set_paused_on(
    pause_row: Callable[[Any, str, str, str, str], None],
    resume_row: Callable[[Any, str, str, str], None],
    fetch: Callable[[Any], dict[tuple[str, str], ScheduleEntry]],
    conn: Any,
    targets: Iterable[tuple[str, str, str]],
    *,
    paused: bool,
    now: str,
) -> list[ScheduleEntry]:
    """Pause or resume each (plugin, schedule id, command); return the rows afterwards.

    Pausing creates the row when the scheduler has not written one yet, so a schedule can be
    paused before the gateway ever ran it. Resuming only touches paused rows and marks them
    `resumed by operator`: the scheduler then drops the fires missed while paused instead of
    catching them up. `pause_row(conn, plugin, schedule_id, command, now)` and
    `resume_row(conn, plugin, schedule_id, now)` are the backend's statements.
    """
    targets = list(targets)
    for plugin, schedule_id, command in targets:
        if paused:
            pause_row(conn, plugin, schedule_id, command, now)
        else:
            resume_row(conn, plugin, schedule_id, now)
    wanted = {(p, s) for p, s, _ in targets}
    return [e for key, e in fetch(conn).items() if key in wanted]


def _pause_row(conn: sqlite3.Connection, plugin: str, schedule_id: str, command: str,
               now: str) -> None:
    conn.execute(
        "INSERT INTO schedule_entries (plugin, schedule_id, command, status, reason, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (plugin, schedule_id) DO "
        "UPDATE SET status = excluded.status, reason = excluded.reason, "
        "updated_at = excluded.updated_at",
        (plugin, schedule_id, command, PAUSED_MANUAL, PAUSED_REASON, now),
    )


def _resume_row(conn: sqlite3.Connection, plugin: str, schedule_id: str, now: str) -> None:
    conn.execute(
        "UPDATE schedule_entries SET status = ?, reason = ?, updated_at = ? "
        "WHERE plugin = ? AND schedule_id = ? AND status = ?",
        (ACTIVE, RESUMED_REASON, now, plugin, schedule_id, PAUSED_MANUAL),
    )


set_paused = partial(set_paused_on, _pause_row, _resume_row, fetch_entries)


def outstanding_jobs(
    conn: sqlite3.Connection, plugin: str, command: str, submitted_by: str | None
) -> list[Outstanding]:
    """Queued and running jobs of (plugin, command), oldest first; with `submitted_by`, only
    that submitter's (the scheduler counts only its own polls, as Go does)."""
    sql = (
        f"SELECT {_OUTSTANDING} FROM job_queue "
        "WHERE plugin = ? AND command = ? AND status IN ('queued', 'running')"
    )
    params: list[Any] = [plugin, command]
    if submitted_by is not None:
        sql += " AND submitted_by = ?"
        params.append(submitted_by)
    rows = conn.execute(sql + " ORDER BY created_at, rowid", params)
    return [Outstanding(*tuple(r)) for r in rows]


def active_polls(conn: sqlite3.Connection, submitted_by: str) -> list[Outstanding]:
    """Every queued or running job the scheduler submitted (Go's `system scheduler` list)."""
    rows = conn.execute(
        f"SELECT {_OUTSTANDING} FROM job_queue "
        "WHERE submitted_by = ? AND status IN ('queued', 'running') ORDER BY created_at, rowid",
        (submitted_by,),
    )
    return [Outstanding(*tuple(r)) for r in rows]


@dataclass(frozen=True)
class ScheduleStatements:
    """One backend's schedule_entries statements and the scheduler's view of outstanding jobs
    (Backend.schedules), each with the arguments and answers of the SQLite function of the
    same name in this module: fetch_entries(conn, plugin=None), save_entry(conn, entry),
    set_paused(conn, targets, *, paused, now), outstanding_jobs(conn, plugin, command,
    submitted_by), active_polls(conn, submitted_by)."""

    fetch_entries: Callable[..., dict[tuple[str, str], ScheduleEntry]]
    save_entry: Callable[[Any, ScheduleEntry], bool]
    set_paused: Callable[..., list[ScheduleEntry]]
    outstanding_jobs: Callable[[Any, str, str, str | None], list[Outstanding]]
    active_polls: Callable[[Any, str], list[Outstanding]]


SQLITE_SCHEDULES = ScheduleStatements(
    fetch_entries=fetch_entries,
    save_entry=save_entry,
    set_paused=set_paused,
    outstanding_jobs=outstanding_jobs,
    active_polls=active_polls,
)
