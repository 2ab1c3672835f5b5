"""Config snapshots on PostgreSQL: the two statements of store/snapshots.py's
`SnapshotStatements`; the row is built and checked, and read back decoded, by that module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ductile.store.snapshots import COLUMNS, SnapshotStatements, decode_snapshot

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def insert(conn: Conn, row: Mapping[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO config_snapshots ({', '.join(row)}) "
        f"VALUES ({', '.join('%s' for _ in row)})",
        tuple(row.values()),
    )


def fetch(conn: Conn, snapshot_id: str | None) -> dict[str, Any] | None:
    """One snapshot with its JSON columns decoded, or None."""
    if not snapshot_id:
        return None
    row = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM config_snapshots WHERE id = %s", (snapshot_id,)
    ).fetchone()
    return decode_snapshot(snapshot_id, row) if row is not None else None


PG_SNAPSHOTS = SnapshotStatements(insert=insert, fetch=fetch)
