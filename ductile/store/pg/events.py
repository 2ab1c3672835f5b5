"""The event log (`events`) on PostgreSQL: the twins of store/events.py.

An id already stored is skipped (`ON CONFLICT DO NOTHING`, SQLite's `INSERT OR IGNORE`), so a
batch tried again after an unknown commit outcome is harmless. Every row belongs to one node
(`events_for(node_id)`): gateways sharing the database each number their own events, and
each resumes only its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ductile.store.events import DEFAULT_KEEP, EventStatements, StoredEvent

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def events_for(node: str) -> EventStatements:
    """The event statements of one node's stream (`''` for a lone gateway)."""

    def append(conn: Conn, rows: Sequence[StoredEvent], keep: int = DEFAULT_KEEP) -> None:
        """Insert one batch and prune to the newest `keep`, in the caller's transaction."""
        if not rows:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO events (node, id, type, at, data) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (node, id) DO NOTHING",
                [(node, row.id, row.type, row.at, row.data) for row in rows],
            )
        conn.execute("DELETE FROM events WHERE node = %s AND id <= %s",
                     (node, rows[-1].id - keep))

    def after(conn: Conn, last_id: int, limit: int = DEFAULT_KEEP) -> list[StoredEvent]:
        """The stored events with an id above `last_id`, oldest first."""
        rows = conn.execute(
            "SELECT id, type, at, data FROM events WHERE node = %s AND id > %s "
            "ORDER BY id LIMIT %s", (node, last_id, limit),
        ).fetchall()
        return [_event(row) for row in rows]

    def latest(conn: Conn, count: int) -> list[StoredEvent]:
        """The newest `count` stored events, oldest first."""
        rows = conn.execute(
            "SELECT id, type, at, data FROM events WHERE node = %s ORDER BY id DESC LIMIT %s",
            (node, count),
        ).fetchall()
        return [_event(row) for row in reversed(rows)]

    def max_id(conn: Conn) -> int:
        row = conn.execute("SELECT max(id) AS last FROM events WHERE node = %s",
                           (node,)).fetchone()
        return int(row["last"]) if row is not None and row["last"] is not None else 0

    return EventStatements(append=append, after=after, latest=latest, max_id=max_id)


def _event(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(int(row["id"]), str(row["type"]), str(row["at"]), str(row["data"]))


PG_EVENTS = events_for("")
