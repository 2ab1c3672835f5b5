"""Per-plugin state (`plugin_state`): one JSON object per plugin, shallow-merged.

A plugin's `state_updates` overwrite top-level keys of its stored object; nested objects are
replaced wholesale and `null` is stored as null (nothing is ever deleted). The merged object is
capped at 1 MiB of compact JSON so one chatty plugin cannot bloat every request it receives
(its state is sent back to it on each run). The merge is a read-modify-write, so it always runs
on the writer thread: either through `StateStore.merge` or inside `Queue.complete`'s
transaction, so a job never succeeds without its state update or the other way round.

`StateStore` takes its backend's `StateStatements` (SQLite's `SQLITE_STATE` by default;
PostgreSQL's, in store/pg/records.py with the queue's other record statements, are bound in
store/pg/backend.py). The merge, the cap and the encoding are this module's for both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ductile.errors import StoreError
from ductile.store.jobs import load_stored_object, utcnow_text

if TYPE_CHECKING:
    from ductile.store.queue import Store

MAX_STATE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StateStatements:
    """One backend's plugin_state statements: load_state(conn, plugin) -> the object ({} when
    absent, StoreError when not an object); apply_state_update(conn, plugin, updates, now) ->
    the merged object, written (StoreError over the cap, nothing written)."""

    load_state: Callable[[Any, str], dict[str, Any]]
    apply_state_update: Callable[[Any, str, Mapping[str, Any], str], dict[str, Any]]


class StateStore:
    """Read and shallow-merge plugin state, on the backend whose `statements` are given."""

    def __init__(self, db: Store, statements: StateStatements | None = None) -> None:
        self._db = db
        self._sql = SQLITE_STATE if statements is None else statements

    async def get(self, plugin: str) -> dict[str, Any]:
        """The plugin's state object, `{}` when it has none."""
        return await self._db.read(lambda conn: self._sql.load_state(conn, plugin))

    async def merge(self, plugin: str, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Shallow-merge `updates` into the plugin's state; return the stored result."""
        encoded = encode_updates(updates)
        now = utcnow_text()
        return await self._db.write(
            lambda conn: self._sql.apply_state_update(conn, plugin, encoded, now))


def merge_state(current: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `current` with each top-level key of `updates` overwritten."""
    merged = dict(current)
    merged.update(updates)
    return merged


def encode_state(state: Mapping[str, Any], plugin: str) -> str:
    """Compact JSON of `state`, refused over MAX_STATE_BYTES (1 MiB)."""
    text = _compact_json(state, f"plugin {plugin}: state")
    if len(text.encode("utf-8")) > MAX_STATE_BYTES:
        raise StoreError(f"plugin state exceeds max size ({MAX_STATE_BYTES} bytes)")
    return text


def encode_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Check that `updates` is a JSON object before it reaches the writer thread.

    Returns a plain dict copy (round-tripped through JSON) so the writer never sees a value
    that json cannot encode or that the caller mutates afterwards.
    """
    if not isinstance(updates, Mapping):
        raise StoreError(f"state updates must be a JSON object, got {type(updates).__name__}")
    decoded: dict[str, Any] = json.loads(_compact_json(updates, "state updates"))
    return decoded


def load_state(conn: sqlite3.Connection, plugin: str) -> dict[str, Any]:
    """Read a plugin's state on `conn`; `{}` when absent, StoreError when not a JSON object."""
    row = conn.execute(
        "SELECT state FROM plugin_state WHERE plugin_name = ?", (plugin,)
    ).fetchone()
    if row is None or row[0] is None:
        return {}
    return load_stored_object(row[0], f"plugin {plugin}: stored state")


def apply_state_update(
    conn: sqlite3.Connection, plugin: str, updates: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """Merge and write on the writer connection (inside the caller's transaction)."""
    merged = merge_state(load_state(conn, plugin), updates)
    conn.execute(
        "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (plugin_name) DO UPDATE SET state = excluded.state, "
        "updated_at = excluded.updated_at",
        (plugin, encode_state(merged, plugin), now),
    )
    return merged


def _compact_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serialisable: {exc}") from exc


SQLITE_STATE = StateStatements(load_state=load_state, apply_state_update=apply_state_update)
