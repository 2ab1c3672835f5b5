"""Plugin facts (`plugin_facts`): an append-only record of what a plugin reported, in order.

A manifest's `fact_outputs` rules turn a successful command's `state_updates` into facts: one
row per matching rule, each numbered from one global sequence (`storage_sequences`, name
`plugin_facts`) allocated inside the writing transaction, so `seq` orders facts across every
plugin exactly as they were committed and a rolled-back write gives its number back.

Compatibility view. `plugin_state` is what a plugin is sent on its next run. A rule with
`compatibility_view: mirror_object` replaces that object wholesale with the fact. When any rule
matched, the usual shallow merge of `state_updates` does not happen, and a rule without a view
leaves `plugin_state` as it was. That is the Go gateway's code (its docs claim mirror_object is
the default); we keep the code's behaviour so a manifest behaves as it did there, and say so
here: a plugin that wants its state refreshed asks for the mirror.

Each fact is one JSON object capped at 1 MiB, like plugin state (the same error text, since the
fact may become the state). The dispatcher plans the write with `plan_facts` (pure, on its own
task) and hands the plan to `Queue.complete_and_claim(facts=...)`, so facts, the mirrored state
and the job's success commit together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ductile.errors import StoreError
from ductile.plugin.manifest import FactOutput
from ductile.store.jobs import load_stored_object
from ductile.store.state import encode_state

FACT_SEQUENCE = "plugin_facts"
MIRROR_OBJECT = "mirror_object"
DEFAULT_FACT_LIMIT = 20

_COLUMNS = "id, seq, plugin_name, fact_type, job_id, command, fact_json, created_at"


@dataclass(frozen=True)
class Fact:
    """One plugin_facts row, `fact` decoded. `seq` is None only for rows written without one
    (a Go database from before the sequence existed)."""

    id: str
    seq: int | None
    plugin_name: str
    fact_type: str
    job_id: str
    command: str
    fact: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class FactPlan:
    """What one successful command records, checked and encoded: `(fact_type, JSON)` pairs in
    rule order, and the JSON that replaces plugin_state (None: leave it alone)."""

    plugin: str
    facts: tuple[tuple[str, str], ...]
    mirror: str | None


def plan_facts(
    plugin: str,
    command: str,
    rules: Sequence[FactOutput],
    state_updates: Mapping[str, Any] | None,
) -> FactPlan | None:
    """The facts `command`'s success records under `rules`, or None when no rule applies.

    None means: shallow-merge `state_updates` as usual. A plan means: record it instead of
    merging. Raises StoreError when the updates are not a JSON object or exceed 1 MiB.
    """
    matching = [
        rule for rule in rules if rule.command == command and rule.source == "state_updates"
    ]
    if not matching or not state_updates:
        return None
    text = _encode_fact(state_updates, plugin)
    mirror = text if any(rule.compatibility_view == MIRROR_OBJECT for rule in matching) else None
    return FactPlan(
        plugin=plugin, facts=tuple((rule.fact_type, text) for rule in matching), mirror=mirror
    )


def apply_fact_plan(
    conn: sqlite3.Connection, plan: FactPlan, job_id: str, command: str, now: str
) -> list[Fact]:
    """Write a plan's facts and mirrored state on `conn` (inside the caller's transaction)."""
    written = [
        _insert_fact(conn, plan.plugin, job_id, command, fact_type, text, now)
        for fact_type, text in plan.facts
    ]
    if plan.mirror is not None:
        conn.execute(
            "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (plugin_name) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (plan.plugin, plan.mirror, now),
        )
    return written


def record_facts(
    conn: sqlite3.Connection,
    plugin: str,
    job_id: str,
    command: str,
    facts: Sequence[tuple[str, Mapping[str, Any]]],
    now: str,
) -> list[Fact]:
    """Append `(fact_type, object)` facts for one job on `conn`; no state projection.

    Each gets the next global sequence number. Raises StoreError for an empty fact type, a
    non-object fact or one over 1 MiB (nothing of the call is kept when the caller's transaction
    rolls back).
    """
    encoded = [(fact_type, _encode_fact(fact, plugin)) for fact_type, fact in facts]
    return [
        _insert_fact(conn, plugin, job_id, command, fact_type, text, now)
        for fact_type, text in encoded
    ]


def next_sequence(conn: sqlite3.Connection, name: str) -> int:
    """Allocate the next value of a named counter (1 first); rolled back with the transaction."""
    row = conn.execute(
        "INSERT INTO storage_sequences (name, value) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        (name,),
    ).fetchone()
    return int(row[0])


def fetch_facts(
    conn: sqlite3.Connection,
    plugin: str,
    limit: int = DEFAULT_FACT_LIMIT,
    after_seq: int | None = None,
    *,
    fact_type: str | None = None,
) -> list[Fact]:
    """A plugin's facts, at most `limit`.

    Without `after_seq`: the newest first (`seq` descending, rows without a seq last, by
    created_at), as `ListFacts` did. With `after_seq`: the facts numbered after it, oldest first,
    so a reader can follow the log by passing the last seq it saw.
    """
    if limit < 1:
        raise StoreError("facts: limit must be a positive integer")
    clauses = ["plugin_name = ?"]
    params: list[Any] = [plugin]
    if fact_type is not None:
        clauses.append("fact_type = ?")
        params.append(fact_type)
    if after_seq is not None:
        clauses.append("seq > ?")
        params.append(after_seq)
        order = "seq ASC"
    else:
        order = "seq IS NULL, seq DESC, created_at DESC"
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM plugin_facts WHERE {' AND '.join(clauses)} "
        f"ORDER BY {order} LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_record(row) for row in rows]


def _encode_fact(fact: Mapping[str, Any], plugin: str) -> str:
    if not isinstance(fact, Mapping):
        raise StoreError(
            f"plugin {plugin}: a fact must be a JSON object, got {type(fact).__name__}"
        )
    return encode_state(fact, plugin)


def _insert_fact(
    conn: sqlite3.Connection,
    plugin: str,
    job_id: str,
    command: str,
    fact_type: str,
    text: str,
    now: str,
) -> Fact:
    require_fact_type(plugin, fact_type)
    fact_id = str(uuid.uuid4())
    seq = next_sequence(conn, FACT_SEQUENCE)
    conn.execute(
        f"INSERT INTO plugin_facts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (fact_id, seq, plugin, fact_type, job_id, command, text, now),
    )
    return Fact(
        id=fact_id, seq=seq, plugin_name=plugin, fact_type=fact_type, job_id=job_id,
        command=command, fact=json.loads(text), created_at=now,
    )


def require_fact_type(plugin: str, fact_type: str) -> None:
    """Refuse an empty fact type (StoreError naming the plugin) before its fact is written."""
    if not fact_type or not fact_type.strip():
        raise StoreError(f"plugin {plugin}: fact_type is empty (check the manifest's fact_outputs)")


def _record(row: Mapping[str, Any]) -> Fact:
    fact = load_stored_object(row["fact_json"], f"fact {row['id']}: stored fact_json")
    return Fact(
        id=row["id"],
        seq=row["seq"],
        plugin_name=row["plugin_name"],
        fact_type=row["fact_type"],
        job_id=row["job_id"],
        command=row["command"],
        fact=fact,
        created_at=row["created_at"],
    )
