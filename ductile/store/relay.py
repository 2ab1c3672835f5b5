"""Replay protection for the relay receiver: the envelopes accepted from each peer within the
clock-skew window (`relay_seen`).

A signed envelope is only accepted while its timestamp is within the window, so remembering
each accepted signature for twice the window (the envelope may be stamped up to one window in
the future) is enough to refuse every replay of the same bytes; older rows are pruned on the
way. The row is written before the envelope's jobs are enqueued and removed again if that
fails, so a refused enqueue never blocks an honest retry (which is signed anew anyway).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ductile.store.jobs import format_time

Write = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class RelaySeen:
    """Remember and forget accepted envelopes, through the one writer (`Database.write`)."""

    def __init__(self, write: Write) -> None:
        self._write = write

    async def remember(self, peer: str, signature: str, event_id: str, *, window: float,
                       now: datetime | None = None) -> str | None:
        """Record a first sighting; None when recorded, else the receiver event id the earlier
        sighting of the same envelope got (a replay)."""
        moment = now or datetime.now(timezone.utc)
        expires = moment + timedelta(seconds=2 * max(window, 0.0) + 1.0)

        def write(conn: sqlite3.Connection) -> str | None:
            conn.execute("DELETE FROM relay_seen WHERE expires_at < ?", (format_time(moment),))
            row = conn.execute("SELECT event_id FROM relay_seen WHERE peer = ? AND signature = ?",
                               (peer, signature)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute("INSERT INTO relay_seen (peer, signature, event_id, seen_at, expires_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (peer, signature, event_id, format_time(moment), format_time(expires)))
            return None

        result: str | None = await self._write(write)
        return result

    async def forget(self, peer: str, signature: str) -> None:
        await self._write(lambda conn: conn.execute(
            "DELETE FROM relay_seen WHERE peer = ? AND signature = ?", (peer, signature)))
