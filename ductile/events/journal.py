"""The journal: writes the hub's events to the `events` table in batches, from one task.

One transaction per batch (at most every `interval` seconds while events come), never one per
event on the dispatcher's path. A batch the database refuses stays in memory and is tried
again; at stop the remainder is written once more before the database closes. The statements
are the store backend's (`EventStatements`, from the process's Backend), run on the
connections its database hands out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ductile.errors import StoreError
from ductile.events.hub import RING, Event, Hub
from ductile.logs import Logger
from ductile.store import events as stored

if TYPE_CHECKING:
    from ductile.store.events import EventStatements
    from ductile.store.queue import Store

Read = Callable[[Callable[[Any], Any]], Awaitable[Any]]

#: Seconds to let a batch gather after the first unsaved event.
BATCH_INTERVAL = 0.2
RETRY_MAX = 5.0


async def load(hub: Hub, db: Store, sql: EventStatements) -> None:
    """Continue the hub's ids after the table's and seed its ring (at boot)."""

    def read(conn: Any) -> tuple[int, list[stored.StoredEvent]]:
        return sql.max_id(conn), sql.latest(conn, RING)

    last, recent = await db.read(read)
    hub.resume(last, [Event(row.id, row.type, row.at, row.data) for row in recent])


async def backlog(read: Read, after: int, sql: EventStatements) -> list[Event]:
    """The stored events after id `after`, oldest first (`read`: a store read, as the API
    plane's `ApiContext.read`; `sql`: its backend's statements)."""
    rows: list[stored.StoredEvent] = await read(lambda conn: sql.after(conn, after))
    return [Event(row.id, row.type, row.at, row.data) for row in rows]


async def run_journal(hub: Hub, db: Store, log: Logger, sql: EventStatements, *,
                      keep: int = stored.DEFAULT_KEEP,
                      interval: float = BATCH_INTERVAL) -> None:
    log = log.child("events")
    delay = interval
    try:
        while True:
            await hub.wait_unsaved()
            await trio.sleep(delay)
            if await _save(hub, db, log, sql, keep):
                delay = interval
            else:
                delay = min(max(delay * 2, 0.5), RETRY_MAX)
    finally:
        with trio.CancelScope(shield=True):
            await _save(hub, db, log, sql, keep)


async def _save(hub: Hub, db: Store, log: Logger, sql: EventStatements, keep: int) -> bool:
    batch = hub.take_unsaved()
    if not batch:
        return True
    rows = [stored.StoredEvent(e.id, e.type, e.at, e.data) for e in batch]
    try:
        await db.write(lambda conn: sql.append(conn, rows, keep))
    except StoreError as exc:
        hub.save_failed()
        log.warn("events not saved yet (kept in memory, tried again)", count=len(rows),
                 error=str(exc))
        return False
    hub.saved()
    return True
