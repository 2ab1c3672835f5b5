"""Replay protection for the relay receiver: the envelopes accepted from each peer within the
clock-skew window (`relay_seen`).

A signed envelope is only accepted while its timestamp is within the window, so remembering
each accepted signature for twice the window (the envelope may be stamped up to one window in
the future) is enough to refuse every replay of the same bytes; older rows are pruned on the
way. The row is written before the envelope's jobs are enqueued and removed again if that
fails, so a refused enqueue never blocks an honest retry (which is signed anew anyway).

`RelaySeen` computes the times and takes its backend's `RelayStatements` (SQLite's
`SQLITE_RELAY` here by default, PostgreSQL's in store/pg/relay.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ductile.store.jobs import format_time

Write = Callable[[Callable[[Any], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class RelayStatements:
    """One backend's relay_seen statements (Backend.relay).

    remember(conn, peer, signature, event_id, now, expires) prunes rows expired before `now`,
    then records a first sighting (None) or answers the event id of the earlier sighting of
    the same (peer, signature) (a replay); forget(conn, peer, signature) removes a sighting.
    Times are stored text (jobs.format_time).
    """

    remember: Callable[[Any, str, str, str, str, str], str | None]
    forget: Callable[[Any, str, str], None]


class RelaySeen:
    """Remember and forget accepted envelopes, through the store's writer (`write`)."""

    def __init__(self, write: Write, statements: RelayStatements | None = None) -> None:
        self._write = write
        self._sql = SQLITE_RELAY if statements is None else statements

    async def remember(self, peer: str, signature: str, event_id: str, *, window: float,
                       now: datetime | None = None) -> str | None:
        """Record a first sighting; None when recorded, else the receiver event id the earlier
        sighting of the same envelope got (a replay)."""
        moment = now or datetime.now(timezone.utc)
        expires = moment + timedelta(seconds=2 * max(window, 0.0) + 1.0)
        stamp, until = format_time(moment), format_time(expires)
        result: str | None = await self._write(
            lambda conn: self._sql.remember(conn, peer, signature, event_id, stamp, until))
        return result

    async def forget(self, peer: str, signature: str) -> None:
        await self._write(lambda conn: self._sql.forget(conn, peer, signature))


def _remember(conn: sqlite3.Connection, peer: str, signature: str, event_id: str, now: str,
              expires: str) -> str | None:
    conn.execute("DELETE FROM relay_seen WHERE expires_at < ?", (now,))
    row = conn.execute("SELECT event_id FROM relay_seen WHERE peer = ? AND signature = ?",
                       (peer, signature)).fetchone()
    if row is not None:
        return str(row[0])
    conn.execute("INSERT INTO relay_seen (peer, signature, event_id, seen_at, expires_at)"
                 " VALUES (?, ?, ?, ?, ?)", (peer, signature, event_id, now, expires))
    return None


def _forget(conn: sqlite3.Connection, peer: str, signature: str) -> None:
    conn.execute("DELETE FROM relay_seen WHERE peer = ? AND signature = ?", (peer, signature))


SQLITE_RELAY = RelayStatements(remember=_remember, forget=_forget)
