"""The event context ledger (`event_context`): one immutable row per routed hop.

A row holds the baggage a routed job carries (`accumulated`, a JSON object that includes the
`ductile` control namespace), the pipeline and step it was made for, and the row it grew from.
Rows are never updated or pruned, so `ductile job inspect` can always replay the lineage from a
pipeline instance's root to any job.

The merge rules (deep accretion, immutable inherited paths) belong to the router, which is pure:
it hands the store the finished `accumulated` object in a `ContextSpec`. The store checks what it
must own for every writer alike: the object is JSON, it fits the 1 MiB cap (ContextTooLarge, which
the API maps to 413), and its parent exists.

A spec is encoded on the caller's side (`prepare_context`), before the writer thread sees it:
oversize baggage is refused without taking the write lock, and a caller that mutates its dict
afterwards cannot change what is stored. The row is then written inside the same transaction as
the job that points at it (`Queue.enqueue(context=...)`, successors of `Queue.complete`), so a
dropped or failed enqueue never leaves an orphan context behind.

A spec may carry a not-yet-stored `parent` spec instead of a `parent_id` (a fresh pipeline-instance
root and its first hop, written together), and may pre-assign its `id`: a second spec with the
same id and the same content reuses the stored row, which is how split branches share one new
instance root. A run that splits at its first step also points its synthetic `core.split` root
job at that instance root row (step_id ""), so the run's root shows its pipeline and root
baggage; no other job points at an instance root row.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ductile.errors import ContextTooLarge, StoreError
from ductile.store.jobs import load_stored_object

MAX_CONTEXT_BYTES = 1024 * 1024
#: How far `fetch_lineage` walks up before it stops (a real lineage is a few hops per pipeline).
MAX_LINEAGE_HOPS = 1000

_COLUMNS = "id, parent_id, pipeline_name, step_id, accumulated_json, created_at"


@dataclass(frozen=True)
class ContextSpec:
    """A context row to write: what the router decided one routed job carries.

    Give at most one of `parent_id` (a stored row) and `parent` (a spec written first, in the same
    transaction). `id` is normally left None (a uuid4 is drawn); set it to share one new row
    between several specs.
    """

    parent_id: str | None
    pipeline_name: str | None
    step_id: str | None
    accumulated: Mapping[str, Any]
    id: str | None = None
    parent: ContextSpec | None = None


@dataclass(frozen=True)
class EventContext:
    """One stored event_context row, `accumulated` decoded."""

    id: str
    parent_id: str | None
    pipeline_name: str | None
    step_id: str | None
    accumulated: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class PreparedContext:
    """A ContextSpec checked and encoded, its id drawn: ready for the writer thread."""

    id: str
    parent_id: str | None
    parent: PreparedContext | None
    pipeline_name: str | None
    step_id: str | None
    accumulated_json: str


def encode_accumulated(accumulated: Mapping[str, Any]) -> str:
    """Compact JSON of an accumulated context; ContextTooLarge over 1 MiB.

    Public so the API can refuse oversize root baggage (413) before it enqueues anything.
    """
    if not isinstance(accumulated, Mapping):
        raise StoreError(
            f"event context: accumulated baggage must be a JSON object, got "
            f"{type(accumulated).__name__}"
        )
    try:
        text = json.dumps(accumulated, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate (JSON allows the escape "\ud800") is not UTF-8, and SQLite
            # refuses it: store the escaped form, which decodes back to the same string.
            text = json.dumps(accumulated, separators=(",", ":"), allow_nan=False)
            size = len(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"event context: accumulated baggage is not JSON: {exc}") from exc
    if size > MAX_CONTEXT_BYTES:
        raise ContextTooLarge(size, MAX_CONTEXT_BYTES)
    return text


def prepare_context(spec: ContextSpec) -> PreparedContext:
    """Check and encode `spec` (and its unstored parents) on the caller's side."""
    if spec.parent is not None and spec.parent_id is not None:
        raise StoreError(
            "event context: give either parent_id (a stored row) or parent (a new one), not both"
        )
    return PreparedContext(
        id=spec.id or str(uuid.uuid4()),
        parent_id=spec.parent_id,
        parent=prepare_context(spec.parent) if spec.parent is not None else None,
        pipeline_name=spec.pipeline_name,
        step_id=spec.step_id,
        accumulated_json=encode_accumulated(spec.accumulated),
    )


def insert_context(conn: sqlite3.Connection, spec: ContextSpec, now: str) -> str:
    """Write `spec` (and any unstored parent) on `conn`, inside the caller's transaction.

    `now` is the stored timestamp text. Returns the row id. Raises ContextTooLarge over 1 MiB,
    StoreError when the parent row does not exist or a pre-assigned id names a different row.
    """
    return write_prepared(conn, prepare_context(spec), now)


def write_prepared(conn: sqlite3.Connection, prepared: PreparedContext, now: str) -> str:
    """Write a prepared context (parents first) and return its id."""
    parent_id = prepared.parent_id
    if prepared.parent is not None:
        parent_id = write_prepared(conn, prepared.parent, now)
    elif parent_id is not None and not _exists(conn, parent_id):
        raise StoreError(
            f"event context: parent context {parent_id} not found; a hop must grow from a "
            "stored context (or pass the new parent as ContextSpec.parent)"
        )
    row = (prepared.id, parent_id, prepared.pipeline_name, prepared.step_id,
           prepared.accumulated_json)
    stored = conn.execute(
        "SELECT id, parent_id, pipeline_name, step_id, accumulated_json FROM event_context "
        "WHERE id = ?",
        (prepared.id,),
    ).fetchone()
    if stored is not None:
        if tuple(stored) != row:
            raise StoreError(
                f"event context {prepared.id} already exists with different content; "
                "rows are immutable, so draw a new id"
            )
        return prepared.id
    conn.execute(
        f"INSERT INTO event_context ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", (*row, now)
    )
    return prepared.id


def fetch_context(conn: sqlite3.Connection, context_id: str) -> EventContext | None:
    """One context row with `accumulated` decoded, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM event_context WHERE id = ?", (context_id,)
    ).fetchone()
    return context_from_row(row) if row is not None else None


def fetch_lineage(conn: sqlite3.Connection, context_id: str) -> list[EventContext]:
    """The contexts from the lineage's root down to `context_id` (empty when unknown).

    Stops at a missing parent, at a row seen twice (a cycle only hand-edited data can make) and
    after MAX_LINEAGE_HOPS rows, so it always ends.
    """
    return walk_lineage(lambda context: fetch_context(conn, context), context_id)


def walk_lineage(fetch: Callable[[str], EventContext | None],
                 context_id: str) -> list[EventContext]:
    """`fetch_lineage` over any backend's context lookup (PostgreSQL's too): root first."""
    chain: list[EventContext] = []
    seen: set[str] = set()
    current: str | None = context_id
    while current is not None and current not in seen and len(chain) < MAX_LINEAGE_HOPS:
        seen.add(current)
        found = fetch(current)
        if found is None:
            break
        chain.append(found)
        current = found.parent_id
    chain.reverse()
    return chain


def _exists(conn: sqlite3.Connection, context_id: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM event_context WHERE id = ?", (context_id,)
    ).fetchone() is not None


def context_from_row(row: Mapping[str, Any]) -> EventContext:
    """An event_context row (any backend's, by column name) as its record."""
    accumulated = load_stored_object(row["accumulated_json"],
                                     f"event context {row['id']}: stored accumulated_json")
    return EventContext(
        id=row["id"],
        parent_id=row["parent_id"],
        pipeline_name=row["pipeline_name"],
        step_id=row["step_id"],
        accumulated=accumulated,
        created_at=row["created_at"],
    )
