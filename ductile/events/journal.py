"""The journal: writes the hub's events to the `events` table in batches, from one task.

One transaction per batch (at most every `interval` seconds while events come), never one per
event on the dispatcher's path. A batch the database refuses stays in memory and is tried
again; at stop the remainder is written once more before the database closes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ductile.errors import StoreError
from ductile.events.hub import RING, Event, Hub
from ductile.logs import Logger
from ductile.store import events as stored
from ductile.store.db import Database

Read = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

#: Seconds to let a batch gather after the first unsaved event.
BATCH_INTERVAL = 0.2
RETRY_MAX = 5.0


async def load(hub: Hub, db: Database) -> None:
    """Continue the hub's ids after the table's and seed its ring (at boot)."""

    def read(conn: sqlite3.Connection) -> tuple[int, list[stored.StoredEvent]]:
        return stored.max_id(conn), stored.latest(conn, RING)

    last, recent = await db.read(read)
    hub.resume(last, [Event(row.id, row.type, row.at, row.data) for row in recent])


async def backlog(read: Read, after: int) -> list[Event]:
    """The stored events after id `after`, oldest first (`read`: a store read, as the API
    plane's `ApiContext.read`)."""
    rows: list[stored.StoredEvent] = await read(lambda conn: stored.after(conn, after))
    return [Event(row.id, row.type, row.at, row.data) for row in rows]


async def run_journal(hub: Hub, db: Database, log: Logger, *, keep: int = stored.DEFAULT_KEEP,
                      interval: float = BATCH_INTERVAL) -> None:
    log = log.child("events")
    delay = interval
    try:
        while True:
            await hub.wait_unsaved()
            await trio.sleep(delay)
            if await _save(hub, db, log, keep):
                delay = interval
            else:
                delay = min(max(delay * 2, 0.5), RETRY_MAX)
    finally:
        with trio.CancelScope(shield=True):
            await _save(hub, db, log, keep)


async def _save(hub: Hub, db: Database, log: Logger, keep: int) -> bool:
    batch = hub.take_unsaved()
    if not batch:
        return True
    rows = [stored.StoredEvent(e.id, e.type, e.at, e.data) for e in batch]
    try:
        await db.write(lambda conn: stored.append(conn, rows, keep))
    except StoreError as exc:
        hub.save_failed()
        log.warn("events not saved yet (kept in memory, tried again)", count=len(rows),
                 error=str(exc))
        return False
    hub.saved()
    return True
