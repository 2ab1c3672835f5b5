"""The relay receiver's replay table on PostgreSQL: the twins of store/relay.py's statements.

Several gateways may receive the same envelope at once (a peer retrying against another node
behind one address). The sighting is an `INSERT ... ON CONFLICT DO NOTHING`: the unique key
decides which one records it, and the other, finding no row inserted, reads the winner's
event id and refuses the envelope as a replay, without an error or a lost update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.store.relay import RelayStatements

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def remember(conn: Conn, peer: str, signature: str, event_id: str, now: str,
             expires: str) -> str | None:
    """None when this is the first sighting (recorded), else the earlier sighting's event id.

    The earlier row may vanish between the two statements (its receiver forgot it after a
    refused enqueue): then the insert is tried again, and this sighting may be the first."""
    conn.execute("DELETE FROM relay_seen WHERE expires_at < %s", (now,))
    while True:
        inserted = conn.execute(
            "INSERT INTO relay_seen (peer, signature, event_id, seen_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (peer, signature) DO NOTHING "
            "RETURNING peer",
            (peer, signature, event_id, now, expires),
        ).fetchone()
        if inserted is not None:
            return None
        row = conn.execute(
            "SELECT event_id FROM relay_seen WHERE peer = %s AND signature = %s",
            (peer, signature),
        ).fetchone()
        if row is not None:
            return str(row["event_id"])


def forget(conn: Conn, peer: str, signature: str) -> None:
    conn.execute("DELETE FROM relay_seen WHERE peer = %s AND signature = %s", (peer, signature))


PG_RELAY = RelayStatements(remember=remember, forget=forget)
