"""Config snapshots: which config was live, recorded once per startup and per reload.

Every job row carries the snapshot id live when it was enqueued and when it started, so
`ductile job inspect` can answer "with which config did this run" long after a reload. The
caller (config/snapshot) computes the hashes, fingerprints and sanitized config; this module
only stores and reads them.

`Snapshots` takes its backend's `SnapshotStatements` (SQLite's `SQLITE_SNAPSHOTS` by default,
PostgreSQL's in store/pg/snapshots.py); building and checking the row, and decoding the JSON
columns, are this module's for both.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ductile.errors import StoreError
from ductile.store.jobs import stored_json_text, utcnow_text

if TYPE_CHECKING:
    from ductile.store.queue import Store

SNAPSHOT_FORMAT = 1

#: Keys `Snapshots.record` accepts in `fields`; the JSON ones are encoded on the way in and
#: decoded on the way out.
TEXT_FIELDS = ("config_hash", "source_hash", "source_path", "source")
JSON_FIELDS = ("semantics", "plugin_fingerprints", "sanitized_config", "secret_fingerprints")

COLUMNS = (
    "id", "config_hash", "source_hash", "source_path", "source", "reason", "loaded_at",
    "ductile_version", "binary_path", "snapshot_format", *JSON_FIELDS,
)


@dataclass(frozen=True)
class SnapshotStatements:
    """One backend's config_snapshots statements (Backend.snapshots): insert(conn, row) writes
    a `snapshot_row`; fetch(conn, snapshot_id) answers as `fetch_snapshot` below."""

    insert: Callable[[Any, Mapping[str, Any]], None]
    fetch: Callable[[Any, str | None], dict[str, Any] | None]


class Snapshots:
    """Record and read config_snapshots rows, on the backend whose `statements` are given."""

    def __init__(self, db: Store, statements: SnapshotStatements | None = None) -> None:
        self._db = db
        self._sql = SQLITE_SNAPSHOTS if statements is None else statements

    async def record(
        self, fields: Mapping[str, Any], *, reason: str, version: str, binary_path: str
    ) -> str:
        """Insert a snapshot and return its id (`cfg_` + uuid4 hex)."""
        row = snapshot_row(fields, reason=reason, version=version, binary_path=binary_path)
        await self._db.write(lambda conn: self._sql.insert(conn, row))
        return str(row["id"])

    async def get(self, snapshot_id: str) -> dict[str, Any] | None:
        """The snapshot as a dict (JSON columns decoded), or None when there is no such id."""
        return await self._db.read(lambda conn: self._sql.fetch(conn, snapshot_id))


def snapshot_row(
    fields: Mapping[str, Any], *, reason: str, version: str, binary_path: str
) -> dict[str, Any]:
    """The column values of a new snapshot; refuses unknown keys and a missing config_hash."""
    unknown = sorted(set(fields) - set(TEXT_FIELDS) - set(JSON_FIELDS))
    if unknown:
        raise StoreError(f"config snapshot: unknown field(s) {', '.join(unknown)}")
    if not fields.get("config_hash"):
        raise StoreError("config snapshot: config_hash is empty")
    if not reason:
        raise StoreError("config snapshot: reason is empty")
    row: dict[str, Any] = {
        "id": "cfg_" + uuid.uuid4().hex,
        "reason": reason,
        "loaded_at": utcnow_text(),
        "ductile_version": version,
        "binary_path": binary_path,
        "snapshot_format": SNAPSHOT_FORMAT,
    }
    for key in TEXT_FIELDS:
        row[key] = fields.get(key)
    for key in JSON_FIELDS:
        row[key] = _encode(key, fields.get(key))
    return row


def fetch_snapshot(conn: sqlite3.Connection, snapshot_id: str | None) -> dict[str, Any] | None:
    """Read one snapshot on `conn` (usable on a read-only CLI connection)."""
    if not snapshot_id:
        return None
    row = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM config_snapshots WHERE id = ?", (snapshot_id,)
    ).fetchone()
    return decode_snapshot(snapshot_id, row) if row is not None else None


def decode_snapshot(snapshot_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row (keyed by column) as `Snapshots.get` answers it: JSON columns decoded."""
    snapshot = {name: row[name] for name in COLUMNS}
    for key in JSON_FIELDS:
        snapshot[key] = _decode(snapshot_id, key, snapshot[key])
    return snapshot


def _insert(conn: sqlite3.Connection, row: Mapping[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO config_snapshots ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


def _encode(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        _decode("(new)", key, value)  # already JSON text (the caller canonicalised it)
        return value
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"config snapshot: {key} is not JSON-serialisable: {exc}") from exc


def _decode(snapshot_id: str, key: str, text: Any) -> Any:
    if text is None:
        return None
    text = stored_json_text(text, f"config snapshot {snapshot_id}: {key}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"config snapshot {snapshot_id}: {key} is not valid JSON: {exc}") from exc


SQLITE_SNAPSHOTS = SnapshotStatements(insert=_insert, fetch=fetch_snapshot)
