"""Shared pieces of the store tests: a hand-moved clock, a real database per test, and a
database as an older release left it (to test migrations)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio

from ductile.errors import StoreError
from ductile.store import Database

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@dataclass
class Clock:
    """A hand-moved clock so due times, TTLs and cutoffs are tested without sleeping."""

    now: datetime = START
    wakes: list[str] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def open_database(tmp_path: Path) -> AsyncIterator[Database]:
    """Body of the `db` fixtures: a fresh SQLite file, closed after the test."""
    database = await Database.open(str(tmp_path / "ductile.db"))
    yield database
    await database.close()


#: ductile/store/schema.sql as released before schema versions (version 1: `JSON` columns).
SCHEMA_V1 = Path(__file__).resolve().parents[1] / "data" / "schema_v1.sql"

#: The payload texts `build_v1_database` enqueues, by job id. Version 1's NUMERIC affinity
#: stores the first, second and fourth as numbers.
V1_PAYLOADS: dict[str, str | None] = {
    "job-int": "42",
    "job-real": "1.5",
    "job-object": '{"a":1}',
    "job-big": "10000000000000000000000",
    "job-none": None,
}


def build_v1_database(path: Path, payloads: dict[str, str | None] | None = None) -> None:
    """A state database as a release before schema versions left it: schema_v1.sql in WAL
    mode, user_version 0, one queued echo/poll job per payload text (in id order), a job
    transition each, and one row of plugin_state, event_context, config_snapshots and
    plugin_facts. Closed cleanly, so the whole file is in `path` (no -wal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA_V1.read_text(encoding="utf-8"))
        conn.execute("BEGIN")
        for n, (job_id, payload) in enumerate((payloads or V1_PAYLOADS).items()):
            created = f"2026-03-01T12:00:0{n}.000000Z"
            conn.execute(
                "INSERT INTO job_queue (id, plugin, command, payload, status, submitted_by, "
                "created_at) VALUES (?, 'echo', 'poll', ?, 'queued', 'api', ?)",
                (job_id, payload, created))
            conn.execute(
                "INSERT INTO job_transitions (job_id, from_status, to_status, reason, created_at)"
                " VALUES (?, NULL, 'queued', 'enqueued', ?)", (job_id, created))
        conn.execute("INSERT INTO plugin_state (plugin_name, state, updated_at) "
                     "VALUES ('echo', '{\"count\":3}', '2026-03-01T12:00:00.000000Z')")
        conn.execute("INSERT INTO event_context (id, parent_id, pipeline_name, step_id, "
                     "accumulated_json, created_at) VALUES ('ctx-1', NULL, 'flow', 'first', "
                     "'{\"baggage\":{\"n\":7}}', '2026-03-01T12:00:00.000000Z')")
        conn.execute("INSERT INTO config_snapshots (id, config_hash, reason, loaded_at, "
                     "semantics, plugin_fingerprints, sanitized_config, secret_fingerprints) "
                     "VALUES ('cfg-1', 'blake2b:00', 'startup', '2026-03-01T12:00:00.000000Z', "
                     "'{}', '{}', '{\"service\":{}}', '{}')")
        conn.execute("INSERT INTO plugin_facts (id, seq, plugin_name, fact_type, job_id, "
                     "command, fact_json, created_at) VALUES ('fact-1', 1, 'echo', 'seen', "
                     "'job-int', 'poll', '{\"k\":\"v\"}', '2026-03-01T12:00:00.000000Z')")
        conn.execute("COMMIT")
    finally:
        conn.close()


async def together(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the calls at once; each result, or the StoreError it raised, in call order (two
    gateways racing on one database)."""
    results: list[Any] = [None] * len(calls)

    async def one(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results[index] = await call()
        except StoreError as exc:
            results[index] = exc

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return results
