"""Retention on PostgreSQL: one batch of one table, the twin of store/retention.py's deletes.

The same rows are prunable as on SQLite (terminal jobs only; the ledger of a live job is kept;
status sets from states/job.yaml). PostgreSQL has no rowid, so a batch is chosen by each
table's key (`seq` or `id`). Several gateways may prune one database at the same time: the
batch is selected `FOR UPDATE SKIP LOCKED`, so one never waits for rows another is deleting
(it takes other rows, or a short batch, and the next tick carries on).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from ductile.machines import job_statuses
from ductile.store.retention import RetentionStatements

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

_NOT_OUTSTANDING = (
    "NOT EXISTS (SELECT 1 FROM job_queue AS q WHERE q.id = {table}.job_id "
    "AND q.status IN {live})"
)


def _batch(table: str, key: str, where: str) -> str:
    return (f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {where} "
            f"LIMIT %(batch)s FOR UPDATE OF {table} SKIP LOCKED)")


@cache
def deletes() -> dict[str, str]:
    """Each statement deletes at most %(batch)s rows older than %(cutoff)s (keys: the
    RetentionPolicy fields)."""
    statuses = job_statuses()
    terminal, live = statuses.sql("terminal"), statuses.sql("live")
    return {
        "job_log": _batch("job_log", "seq", "completed_at < %(cutoff)s"),
        "job_queue": _batch(
            "job_queue", "seq",
            f"status IN {terminal} AND created_at < %(cutoff)s "
            "AND completed_at IS NOT NULL AND completed_at < %(cutoff)s"),
        "job_transitions": _batch(
            "job_transitions", "id",
            "created_at < %(cutoff)s AND "
            + _NOT_OUTSTANDING.format(table="job_transitions", live=live)),
        "job_attempts": _batch(
            "job_attempts", "id",
            "created_at < %(cutoff)s AND "
            + _NOT_OUTSTANDING.format(table="job_attempts", live=live)),
        "breaker_transitions": _batch(
            "circuit_breaker_transitions", "seq", "created_at < %(cutoff)s"),
    }


def delete_batch(conn: Conn, table: str, cutoff: str, batch: int) -> int:
    return int(conn.execute(deletes()[table], {"cutoff": cutoff, "batch": batch}).rowcount)


PG_RETENTION = RetentionStatements(delete_batch=delete_batch)
