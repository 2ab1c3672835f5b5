"""The event context ledger: rows, the 1 MiB cap, parents, lineage, and enqueue(context=)."""

from __future__ import annotations

import sqlite3

import pytest

from ductile.errors import ContextTooLarge, DedupeDropped, StoreError
from ductile.store import Database, Queue
from ductile.store.context import (
    MAX_CONTEXT_BYTES,
    ContextSpec,
    encode_accumulated,
    fetch_context,
    fetch_lineage,
    insert_context,
)
from support.store import Clock

NOW = "2026-03-01T12:00:00.000000Z"


@pytest.fixture
def queue(db: Database, clock: Clock) -> Queue:
    return Queue(
        db, snapshot_id=lambda: "cfg", dedupe_ttl=0,
        on_enqueue=lambda: clock.wakes.append("wake"), clock=clock,
    )


def spec(accumulated: dict, parent_id: str | None = None, **extra) -> ContextSpec:
    return ContextSpec(
        parent_id=parent_id, pipeline_name="deploy", step_id="build", accumulated=accumulated,
        **extra,
    )


async def insert(db: Database, context: ContextSpec) -> str:
    return await db.write(lambda conn: insert_context(conn, context, NOW))


async def count_contexts(db: Database) -> int:
    return await db.read(
        lambda conn: conn.execute("SELECT count(*) FROM event_context").fetchone()[0]
    )


async def test_a_context_row_round_trips_with_its_baggage_decoded(db: Database) -> None:
    baggage = {"ductile": {"pipeline_instance_id": "i1", "route_depth": 1}, "user": {"id": 7}}
    context_id = await insert(db, spec(baggage))
    stored = await db.read(lambda conn: fetch_context(conn, context_id))
    assert stored is not None
    assert (stored.id, stored.parent_id, stored.pipeline_name, stored.step_id) == (
        context_id, None, "deploy", "build"
    )
    assert stored.accumulated == baggage
    assert stored.created_at == NOW


async def test_an_unknown_context_is_none(db: Database) -> None:
    assert await db.read(lambda conn: fetch_context(conn, "nope")) is None


def test_the_cap_is_exactly_one_mebibyte_of_compact_json() -> None:
    # {"k":"<n chars>"} is n + 8 bytes.
    at_cap = {"k": "x" * (MAX_CONTEXT_BYTES - 8)}
    assert len(encode_accumulated(at_cap).encode()) == MAX_CONTEXT_BYTES
    with pytest.raises(ContextTooLarge) as caught:
        encode_accumulated({"k": "x" * (MAX_CONTEXT_BYTES - 7)})
    assert caught.value.actual == MAX_CONTEXT_BYTES + 1
    assert caught.value.limit == MAX_CONTEXT_BYTES
    assert "accumulated context exceeds max size (1048576 bytes)" in str(caught.value)


def test_the_cap_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(ContextTooLarge):
        encode_accumulated({"k": "é" * (MAX_CONTEXT_BYTES // 2)})


async def test_an_oversize_context_writes_nothing(db: Database) -> None:
    with pytest.raises(ContextTooLarge):
        await insert(db, spec({"k": "x" * MAX_CONTEXT_BYTES}))
    assert await count_contexts(db) == 0


@pytest.mark.parametrize(
    ("accumulated", "message"),
    [
        (["not", "an", "object"], "must be a JSON object, got list"),
        ({"x": float("nan")}, "is not JSON"),
        ({"x": object()}, "is not JSON"),
    ],
)
def test_baggage_that_is_not_a_json_object_is_refused(accumulated: object, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        encode_accumulated(accumulated)  # type: ignore[arg-type]


async def test_a_lone_surrogate_is_stored_escaped_and_reads_back_unchanged(db: Database) -> None:
    baggage = {"odd": "a\ud800b", "fine": "é"}
    context_id = await insert(db, spec(baggage))
    stored = await db.read(lambda conn: fetch_context(conn, context_id))
    assert stored is not None and stored.accumulated == baggage


async def test_a_parent_must_exist(db: Database) -> None:
    with pytest.raises(StoreError, match="parent context missing-id not found"):
        await insert(db, spec({}, parent_id="missing-id"))
    assert await count_contexts(db) == 0


async def test_giving_parent_id_and_parent_is_refused(db: Database) -> None:
    with pytest.raises(StoreError, match="either parent_id"):
        await insert(db, spec({}, parent_id="a", parent=spec({})))


async def test_a_new_parent_is_written_first_and_the_lineage_reads_root_to_leaf(
    db: Database,
) -> None:
    root = ContextSpec(None, "deploy", "", {"ductile": {"route_depth": 0}})
    hop = spec({"ductile": {"route_depth": 1}, "who": "me"}, parent=root)
    leaf_id = await insert(db, hop)
    grandchild = await insert(db, spec({"ductile": {"route_depth": 2}}, parent_id=leaf_id))
    lineage = await db.read(lambda conn: fetch_lineage(conn, grandchild))
    assert [c.accumulated["ductile"]["route_depth"] for c in lineage] == [0, 1, 2]
    assert lineage[0].parent_id is None and lineage[0].step_id == ""
    assert lineage[1].parent_id == lineage[0].id and lineage[2].parent_id == leaf_id
    assert await db.read(lambda conn: fetch_lineage(conn, "unknown")) == []


async def test_a_lineage_walk_ends_on_a_hand_made_cycle(db: Database) -> None:
    first = await insert(db, spec({"n": 1}))
    second = await insert(db, spec({"n": 2}, parent_id=first))

    def make_cycle(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE event_context SET parent_id = ? WHERE id = ?", (second, first))

    await db.write(make_cycle)
    lineage = await db.read(lambda conn: fetch_lineage(conn, second))
    assert [c.id for c in lineage] == [first, second]


async def test_a_pre_assigned_id_is_shared_when_the_content_matches(db: Database) -> None:
    root = ContextSpec(None, "deploy", "", {"ductile": {"pipeline_instance_id": "i9"}}, id="r1")
    left = await insert(db, spec({"side": "l"}, parent=root))
    right = await insert(db, spec({"side": "r"}, parent=root))
    assert left != right
    assert await count_contexts(db) == 3
    other = ContextSpec(None, "deploy", "", {"changed": True}, id="r1")
    with pytest.raises(StoreError, match="context r1 already exists with different content"):
        await insert(db, other)


async def test_enqueue_writes_the_context_with_the_job(queue: Queue, db: Database) -> None:
    job = await queue.enqueue("echo", "handle", {"a": 1}, "route", context=spec({"b": 2}))
    assert job.event_context_id is not None
    stored = await db.read(lambda conn: fetch_context(conn, job.event_context_id))
    assert stored is not None and stored.accumulated == {"b": 2}
    assert stored.created_at == job.created_at
    assert (await queue.get(job.id)) == job


async def test_a_dropped_enqueue_leaves_no_context(queue: Queue, db: Database) -> None:
    await queue.enqueue("echo", "handle", {}, "route", dedupe_key="k", context=spec({"n": 1}))
    with pytest.raises(DedupeDropped):
        await queue.enqueue("echo", "handle", {}, "route", dedupe_key="k", context=spec({"n": 2}))
    assert await count_contexts(db) == 1
    assert (await queue.list())[1] == 1


async def test_enqueue_with_oversize_baggage_writes_nothing(
    queue: Queue, db: Database, clock: Clock
) -> None:
    with pytest.raises(ContextTooLarge):
        await queue.enqueue(
            "echo", "handle", {}, "api", context=spec({"k": "x" * MAX_CONTEXT_BYTES})
        )
    assert await count_contexts(db) == 0
    assert (await queue.list())[1] == 0
    assert clock.wakes == []


async def test_enqueue_refuses_a_context_and_a_context_id_together(queue: Queue) -> None:
    with pytest.raises(StoreError, match="either event_context_id"):
        await queue.enqueue(
            "echo", "handle", {}, "api", event_context_id="c1", context=spec({})
        )
