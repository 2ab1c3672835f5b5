"""The event log: the recent events of the event hub (`ductile/events/hub.py`), so a subscriber
reconnecting with Last-Event-ID resumes where it stopped, also after a restart.

The hub writes here in batches from one task (never one transaction per event on the
dispatcher's path); the table keeps the newest `keep` events and older ones are pruned in the
same write. Ids are the hub's: they continue from `max_id` at the next boot.

`EventStatements` (Backend.events) is what the journal runs: SQLite's functions here
(`SQLITE_EVENTS`), PostgreSQL's in store/pg/events.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: How many events the table keeps by default (the oldest are pruned past this).
DEFAULT_KEEP = 10_000


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    at: str
    data: str  # the event's data object, as the single-line JSON that was sent


def append(conn: sqlite3.Connection, rows: Sequence[StoredEvent], keep: int = DEFAULT_KEEP) -> None:
    """Insert one batch and prune to the newest `keep` (one transaction: the writer's)."""
    if not rows:
        return
    conn.executemany("INSERT OR IGNORE INTO events (id, type, at, data) VALUES (?, ?, ?, ?)",
                     [(row.id, row.type, row.at, row.data) for row in rows])
    conn.execute("DELETE FROM events WHERE id <= ?", (rows[-1].id - keep,))


def after(conn: sqlite3.Connection, last_id: int, limit: int = DEFAULT_KEEP) -> list[StoredEvent]:
    """The stored events with an id above `last_id`, oldest first."""
    return [StoredEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(
        "SELECT id, type, at, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (last_id, limit))]


def latest(conn: sqlite3.Connection, count: int) -> list[StoredEvent]:
    """The newest `count` stored events, oldest first (the hub's ring at boot)."""
    rows = [StoredEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(
        "SELECT id, type, at, data FROM events ORDER BY id DESC LIMIT ?", (count,))]
    rows.reverse()
    return rows


def max_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(id) FROM events").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


@dataclass(frozen=True)
class EventStatements:
    """One backend's events table (Backend.events): append(conn, rows, keep=DEFAULT_KEEP),
    after(conn, last_id, limit=DEFAULT_KEEP), latest(conn, count), max_id(conn), with the
    answers of the SQLite functions above."""

    append: Callable[..., None]
    after: Callable[..., list[StoredEvent]]
    latest: Callable[[Any, int], list[StoredEvent]]
    max_id: Callable[[Any], int]


SQLITE_EVENTS = EventStatements(append=append, after=after, latest=latest, max_id=max_id)
