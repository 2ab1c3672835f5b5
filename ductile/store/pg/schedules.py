"""Schedule bookkeeping on PostgreSQL: the twins of store/schedules.py's statements.

Same rows, same rules: `save_entry` never overwrites an operator's pause (the upsert's WHERE),
`set_paused` is store/schedules.py's rule over the two statements here. Outstanding jobs are
ordered by created_at, then `seq` where SQLite uses rowid.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from ductile.store.schedules import (
    _OUTSTANDING,
    ACTIVE,
    PAUSED_MANUAL,
    PAUSED_REASON,
    RESUMED_REASON,
    Outstanding,
    ScheduleEntry,
    ScheduleStatements,
    set_paused_on,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def fetch_entries(conn: Conn, plugin: str | None = None) -> dict[tuple[str, str], ScheduleEntry]:
    """Every row (of one plugin), keyed by (plugin, schedule id)."""
    where, params = ("WHERE plugin = %s", (plugin,)) if plugin is not None else ("", ())
    rows = conn.execute(
        f"SELECT {ScheduleEntry.select_list()} FROM schedule_entries {where} "
        "ORDER BY plugin, schedule_id",
        params,
    ).fetchall()
    return {(r["plugin"], r["schedule_id"]): ScheduleEntry.from_row(r) for r in rows}


def save_entry(conn: Conn, entry: ScheduleEntry) -> bool:
    """Insert or update the row, unless it is paused by the operator; True when written."""
    values = entry.as_dict()
    updates = ", ".join(f"{n} = excluded.{n}" for n in values if n not in ("plugin", "schedule_id"))
    cursor = conn.execute(
        f"INSERT INTO schedule_entries ({', '.join(values)}) "
        f"VALUES ({', '.join('%s' for _ in values)}) "
        f"ON CONFLICT (plugin, schedule_id) DO UPDATE SET {updates} "
        f"WHERE schedule_entries.status != '{PAUSED_MANUAL}'",
        tuple(values.values()),
    )
    return cursor.rowcount > 0


def _pause_row(conn: Conn, plugin: str, schedule_id: str, command: str, now: str) -> None:
    conn.execute(
        "INSERT INTO schedule_entries (plugin, schedule_id, command, status, reason, "
        "updated_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (plugin, schedule_id) DO "
        "UPDATE SET status = excluded.status, reason = excluded.reason, "
        "updated_at = excluded.updated_at",
        (plugin, schedule_id, command, PAUSED_MANUAL, PAUSED_REASON, now),
    )


def _resume_row(conn: Conn, plugin: str, schedule_id: str, now: str) -> None:
    conn.execute(
        "UPDATE schedule_entries SET status = %s, reason = %s, updated_at = %s "
        "WHERE plugin = %s AND schedule_id = %s AND status = %s",
        (ACTIVE, RESUMED_REASON, now, plugin, schedule_id, PAUSED_MANUAL),
    )


def outstanding_jobs(
    conn: Conn, plugin: str, command: str, submitted_by: str | None
) -> list[Outstanding]:
    """Queued and running jobs of (plugin, command), oldest first; with `submitted_by`, only
    that submitter's."""
    sql = (
        f"SELECT {_OUTSTANDING} FROM job_queue "
        "WHERE plugin = %s AND command = %s AND status IN ('queued', 'running')"
    )
    params: list[Any] = [plugin, command]
    if submitted_by is not None:
        sql += " AND submitted_by = %s"
        params.append(submitted_by)
    rows = conn.execute(sql + " ORDER BY created_at, seq", params).fetchall()
    return [_outstanding(row) for row in rows]


def active_polls(conn: Conn, submitted_by: str) -> list[Outstanding]:
    """Every queued or running job the scheduler submitted."""
    rows = conn.execute(
        f"SELECT {_OUTSTANDING} FROM job_queue "
        "WHERE submitted_by = %s AND status IN ('queued', 'running') ORDER BY created_at, seq",
        (submitted_by,),
    ).fetchall()
    return [_outstanding(row) for row in rows]


def _outstanding(row: dict[str, Any]) -> Outstanding:
    return Outstanding(*row.values())


PG_SCHEDULES = ScheduleStatements(
    fetch_entries=fetch_entries,
    save_entry=save_entry,
    set_paused=partial(set_paused_on, _pause_row, _resume_row, fetch_entries),
    outstanding_jobs=outstanding_jobs,
    active_polls=active_polls,
)
