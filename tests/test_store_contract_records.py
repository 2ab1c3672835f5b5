"""Config snapshots, plugin state, the vault audit trail and the relay replay table on both
backends: each store class built on the Backend's statements (as boot builds them), the same
calls, the same answers."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest

from ductile.errors import StoreError
from ductile.logs import Logger
from ductile.store.audit import AuditEvent, AuditWriter
from ductile.store.jobs import format_time
from ductile.store.relay import RelaySeen
from ductile.store.snapshots import Snapshots
from ductile.store.state import MAX_STATE_BYTES, StateStore
from support.backends import Opened, location, opened  # noqa: F401 - fixtures

# -- config snapshots ---------------------------------------------------------------------------


async def test_a_snapshot_round_trips_with_its_json_decoded(opened: Opened) -> None:
    snapshots = Snapshots(opened.db, opened.backend.snapshots)
    fields = {
        "config_hash": "blake2b:00ff", "source_hash": "blake2b:11ee",
        "source_path": "/etc/ductile", "source": "explicit",
        "semantics": {"retry_policy_owner": "core"},
        "plugin_fingerprints": [{"plugin": "echo", "available": True}],
        "sanitized_config": {"service": {"name": "ductile", "ünï": "cödé"}},
        "secret_fingerprints": [],
    }
    snapshot_id = await snapshots.record(fields, reason="startup", version="0.1.0",
                                         binary_path="/usr/bin/ductile")
    assert re.fullmatch(r"cfg_[0-9a-f]{32}", snapshot_id)
    row = await snapshots.get(snapshot_id)
    assert row is not None
    assert {key: row[key] for key in fields} == fields
    assert (row["id"], row["reason"], row["ductile_version"], row["binary_path"],
            row["snapshot_format"]) == (snapshot_id, "startup", "0.1.0", "/usr/bin/ductile", 1)
    assert row["loaded_at"].endswith("Z")


async def test_absent_fields_json_text_and_unknown_ids(opened: Opened) -> None:
    snapshots = Snapshots(opened.db, opened.backend.snapshots)
    snapshot_id = await snapshots.record({"config_hash": "h", "semantics": '{"a":1}'},
                                         reason="reload", version="v", binary_path="b")
    row = await snapshots.get(snapshot_id)
    assert row is not None and row["semantics"] == {"a": 1}
    assert row["plugin_fingerprints"] is None and row["source_hash"] is None
    assert await snapshots.get("cfg_missing") is None
    assert await snapshots.get("") is None
    with pytest.raises(StoreError, match="unknown field"):
        await snapshots.record({"config_hash": "h", "colour": 1}, reason="r", version="v",
                               binary_path="b")


# -- plugin state -------------------------------------------------------------------------------


async def test_state_merges_shallowly_and_refuses_what_it_cannot_keep(opened: Opened) -> None:
    state = StateStore(opened.db, opened.backend.state)
    assert await state.get("echo") == {}
    assert await state.merge("echo", {"a": 1, "nested": {"x": 1}}) == {"a": 1,
                                                                         "nested": {"x": 1}}
    merged = await state.merge("echo", {"nested": {"y": 2}, "b": None})
    assert merged == {"a": 1, "nested": {"y": 2}, "b": None}
    assert await state.get("echo") == merged
    assert await state.get("other") == {}
    with pytest.raises(StoreError, match="exceeds max size"):
        await state.merge("echo", {"big": "x" * MAX_STATE_BYTES})
    assert await state.get("echo") == merged
    with pytest.raises(StoreError, match="JSON object"):
        await state.merge("echo", ["not", "an", "object"])  # type: ignore[arg-type]


async def test_state_written_by_the_queue_is_read_by_the_state_store(opened: Opened) -> None:
    """One plugin_state for both writers: a job's state update and StateStore.merge."""
    queued = await opened.queue.enqueue("echo", "poll", {}, "test")
    job = await opened.queue.claim()
    assert job is not None and job.id == queued.id
    await opened.queue.complete(job, "succeeded", result=None, last_error=None, stderr=None,
                                exit_code=0, duration_ms=1, outcome="ok",
                                state_update=("echo", {"cursor": 7}))
    state = StateStore(opened.db, opened.backend.state)
    assert await state.get("echo") == {"cursor": 7}
    await state.merge("echo", {"seen": True})
    claimed = await opened.queue.claim_next()
    assert claimed is None
    await opened.queue.enqueue("echo", "poll", {}, "test")
    claim = await opened.queue.claim_next()
    assert claim is not None and claim.state == {"cursor": 7, "seen": True}


# -- the vault audit trail ----------------------------------------------------------------------


async def test_the_audit_trail_lists_newest_first_by_principal(opened: Opened) -> None:
    stamps = iter(f"2026-03-01T12:00:0{i}.000000Z" for i in range(10))
    writer = AuditWriter(opened.db, clock=lambda: next(stamps),
                         statements=opened.backend.audit)
    await writer(AuditEvent("cli", "set", "db-password", "ok"))
    await writer(AuditEvent("core-admin-token", "get", "db-password", "denied", "not allowed"))
    await writer(AuditEvent("alice", "roll", "api-token", "error", "x" * 900))
    sql = opened.backend.audit
    rows = await opened.read(lambda c: sql.list_events(c))
    assert [(r.actor, r.op, r.target, r.outcome) for r in rows] == [
        ("alice", "roll", "api-token", "error"),
        ("core-admin-token", "get", "db-password", "denied"),
        ("cli", "set", "db-password", "ok")]
    assert rows[0].id > rows[1].id > rows[2].id
    assert rows[0].created_at == "2026-03-01T12:00:02.000000Z"
    assert len(rows[0].detail) == 500
    assert [r.op for r in await opened.read(lambda c: sql.list_events(
        c, principal="db-password"))] == ["get", "set"]
    assert [r.op for r in await opened.read(lambda c: sql.list_events(
        c, principal="alice"))] == ["roll"]
    assert len(await opened.read(lambda c: sql.list_events(c, limit=1))) == 1


async def test_an_old_refused_row_reads_as_denied_and_bad_outcomes_are_refused(
        opened: Opened) -> None:
    sql = opened.backend.audit
    await opened.write(lambda c: c.execute(
        "INSERT INTO vault_audit (created_at, actor, op, target, outcome, detail) "
        "VALUES ('2026-01-01T00:00:00.000000Z', 'cli', 'get', 's', 'refused', '')"))
    new_id = await opened.write(lambda c: sql.insert_event(
        c, AuditEvent("cli", "get", "s", "ok"), "2026-01-02T00:00:00.000000Z"))
    rows = await opened.read(lambda c: sql.list_events(c))
    assert [(r.id, r.outcome) for r in rows][0] == (new_id, "ok")
    assert rows[1].outcome == "denied"
    with pytest.raises(StoreError, match="ok, denied, error"):
        await opened.write(lambda c: sql.insert_event(
            c, AuditEvent("cli", "get", "s", "maybe"), "2026-01-03T00:00:00.000000Z"))
    # The daemon's writer logs a refused row and carries on: the operation already happened.
    out = io.StringIO()
    writer = AuditWriter(opened.db, Logger(stream=out), statements=sql)
    await writer(AuditEvent("cli", "get", "s", "maybe"))
    assert "vault audit row not written" in out.getvalue()
    assert len(await opened.read(lambda c: sql.list_events(c))) == 2


# -- the relay replay table ---------------------------------------------------------------------


async def test_a_replayed_envelope_is_refused_until_the_window_passes(opened: Opened) -> None:
    seen = RelaySeen(opened.write, opened.backend.relay)
    now = opened.clock()
    assert await seen.remember("peer", "sig1", "evt-1", window=30, now=now) is None
    assert await seen.remember("peer", "sig1", "evt-2", window=30, now=now) == "evt-1"
    assert await seen.remember("other", "sig1", "evt-3", window=30, now=now) is None
    assert await seen.remember("peer", "sig2", "evt-4", window=30, now=now) is None
    # Kept for twice the window plus a second, then pruned on the way.
    almost = now + timedelta(seconds=61)
    assert await seen.remember("peer", "sig1", "evt-5", window=30, now=almost) == "evt-1"
    later = now + timedelta(seconds=61.001)
    assert await seen.remember("peer", "sig1", "evt-6", window=30, now=later) is None


async def test_a_forgotten_envelope_can_be_accepted_again(opened: Opened) -> None:
    seen = RelaySeen(opened.write, opened.backend.relay)
    now = opened.clock()
    assert await seen.remember("peer", "sig", "evt-1", window=30, now=now) is None
    await seen.forget("peer", "sig")
    await seen.forget("peer", "never-seen")
    assert await seen.remember("peer", "sig", "evt-2", window=30, now=now) is None
    assert await seen.remember("peer", "sig", "evt-3", window=30, now=now) == "evt-2"


async def test_replay_rows_hold_the_times_they_were_given(opened: Opened) -> None:
    seen = RelaySeen(opened.write, opened.backend.relay)
    now = opened.clock()
    await seen.remember("peer", "sig", "evt-1", window=5, now=now)
    rows = await opened.read(lambda c: [tuple(r.values()) if isinstance(r, dict) else tuple(r)
                                        for r in c.execute(
        "SELECT peer, signature, event_id, seen_at, expires_at FROM relay_seen").fetchall()])
    assert rows == [("peer", "sig", "evt-1", format_time(now),
                     format_time(now + timedelta(seconds=11)))]
