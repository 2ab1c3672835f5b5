"""Event contexts, plugin state and plugin facts on PostgreSQL, inside the queue's transactions.

The twins of the SQL in store/context.py, store/state.py and store/facts.py; the rules (the
1 MiB caps, the shallow merge, the fact plan, immutable context rows) are theirs, called here,
not restated. What differs is concurrency: several gateways write one database, so

- a state merge (read, merge, write) locks the plugin's plugin_state row first (inserting an
  empty one if needed, so there is a row to lock): two nodes completing jobs of one plugin
  merge one after the other instead of one overwriting the other's keys;
- a context row with a pre-assigned id (split branches share one) is inserted with
  `ON CONFLICT DO NOTHING` and then compared, so two writers of the same row cannot fail
  each other;
- the facts sequence is an upsert on storage_sequences, whose row lock orders concurrent
  writers (and a rolled-back write gives its numbers back, as on SQLite).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Mapping

from ductile.errors import StoreError
from ductile.store.context import EventContext, PreparedContext, context_from_row
from ductile.store.facts import FACT_SEQUENCE, FactPlan, require_fact_type
from ductile.store.jobs import load_stored_object
from ductile.store.state import encode_state, merge_state

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

_CONTEXT_COLUMNS = "id, parent_id, pipeline_name, step_id, accumulated_json, created_at"


def fetch_context(conn: Conn, context_id: str) -> EventContext | None:
    """One context row with `accumulated` decoded, or None."""
    row = conn.execute(
        f"SELECT {_CONTEXT_COLUMNS} FROM event_context WHERE id = %s", (context_id,)
    ).fetchone()
    return context_from_row(row) if row is not None else None


def write_prepared(conn: Conn, prepared: PreparedContext, now: str) -> str:
    """Write a prepared context (parents first) and return its id (store/context.py's
    `write_prepared`: same errors for a missing parent or a changed pre-assigned row)."""
    parent_id = prepared.parent_id
    if prepared.parent is not None:
        parent_id = write_prepared(conn, prepared.parent, now)
    elif parent_id is not None and conn.execute(
        "SELECT 1 FROM event_context WHERE id = %s", (parent_id,)
    ).fetchone() is None:
        raise StoreError(
            f"event context: parent context {parent_id} not found; a hop must grow from a "
            "stored context (or pass the new parent as ContextSpec.parent)"
        )
    row = (prepared.id, parent_id, prepared.pipeline_name, prepared.step_id,
           prepared.accumulated_json)
    conn.execute(
        f"INSERT INTO event_context ({_CONTEXT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        (*row, now),
    )
    stored = conn.execute(
        "SELECT id, parent_id, pipeline_name, step_id, accumulated_json FROM event_context "
        "WHERE id = %s",
        (prepared.id,),
    ).fetchone()
    if stored is None or tuple(stored.values()) != row:
        raise StoreError(
            f"event context {prepared.id} already exists with different content; "
            "rows are immutable, so draw a new id"
        )
    return prepared.id


def load_state(conn: Conn, plugin: str, *, lock: bool = False) -> dict[str, Any]:
    """A plugin's state on `conn`; `{}` when absent, StoreError when not a JSON object.
    `lock` takes the row's lock for a read-modify-write (see the module docstring)."""
    row = conn.execute(
        "SELECT state FROM plugin_state WHERE plugin_name = %s" + (" FOR UPDATE" if lock else ""),
        (plugin,),
    ).fetchone()
    if row is None or row["state"] is None:
        return {}
    return load_stored_object(row["state"], f"plugin {plugin}: stored state")


def apply_state_update(
    conn: Conn, plugin: str, updates: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """Shallow-merge `updates` into the plugin's state under its row lock; StoreError (and
    the caller's transaction rolled back) when the merged state is over 1 MiB."""
    conn.execute(
        "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES (%s, '{}', NULL) "
        "ON CONFLICT (plugin_name) DO NOTHING",
        (plugin,),
    )
    merged = merge_state(load_state(conn, plugin, lock=True), updates)
    conn.execute(
        "UPDATE plugin_state SET state = %s, updated_at = %s WHERE plugin_name = %s",
        (encode_state(merged, plugin), now, plugin),
    )
    return merged


def next_sequence(conn: Conn, name: str) -> int:
    """Allocate the next value of a named counter (1 first); rolled back with the transaction."""
    row = conn.execute(
        "INSERT INTO storage_sequences (name, value) VALUES (%s, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = storage_sequences.value + 1 RETURNING value",
        (name,),
    ).fetchone()
    return int(row["value"])


def apply_fact_plan(conn: Conn, plan: FactPlan, job_id: str, command: str, now: str) -> None:
    """Write a plan's facts (each numbered from the global sequence) and its mirrored state."""
    for fact_type, text in plan.facts:
        require_fact_type(plan.plugin, fact_type)
        conn.execute(
            "INSERT INTO plugin_facts (id, seq, plugin_name, fact_type, job_id, command, "
            "fact_json, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (str(uuid.uuid4()), next_sequence(conn, FACT_SEQUENCE), plan.plugin, fact_type,
             job_id, command, text, now),
        )
    if plan.mirror is not None:
        conn.execute(
            "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (plugin_name) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (plan.plugin, plan.mirror, now),
        )
