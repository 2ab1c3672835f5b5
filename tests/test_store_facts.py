"""Plugin facts: rule planning, the global sequence, the compatibility mirror, and readers."""

from __future__ import annotations

import sqlite3

import pytest

from ductile.errors import StoreError
from ductile.plugin.manifest import FactOutput
from ductile.store import Database, StateStore
from ductile.store.facts import (
    FactPlan,
    apply_fact_plan,
    fetch_facts,
    next_sequence,
    plan_facts,
    record_facts,
)
from ductile.store.state import MAX_STATE_BYTES

NOW = "2026-03-01T12:00:00.000000Z"
LATER = "2026-03-01T12:00:01.000000Z"


def rule(fact_type: str, command: str = "poll", view: str = "") -> FactOutput:
    return FactOutput(
        command=command, source="state_updates", fact_type=fact_type, compatibility_view=view
    )


async def record(db: Database, plugin: str, facts: list, now: str = NOW, job: str = "j1") -> list:
    return await db.write(lambda conn: record_facts(conn, plugin, job, "poll", facts, now))


async def apply(db: Database, plan: FactPlan, job: str = "j1") -> list:
    return await db.write(lambda conn: apply_fact_plan(conn, plan, job, "poll", NOW))


def test_no_matching_rule_or_no_updates_means_no_plan() -> None:
    assert plan_facts("watch", "poll", [rule("seen", command="health")], {"a": 1}) is None
    assert plan_facts("watch", "poll", [], {"a": 1}) is None
    assert plan_facts("watch", "poll", [rule("seen")], {}) is None
    assert plan_facts("watch", "poll", [rule("seen")], None) is None


def test_every_matching_rule_gives_one_fact_and_any_mirror_asks_for_the_view() -> None:
    plan = plan_facts(
        "watch", "poll", [rule("a"), rule("b", view="mirror_object"), rule("c", "other")],
        {"k": "v"},
    )
    assert plan == FactPlan(plugin="watch", facts=(("a", '{"k":"v"}'), ("b", '{"k":"v"}')),
                            mirror='{"k":"v"}')
    plain = plan_facts("watch", "poll", [rule("a")], {"k": "v"})
    assert plain is not None and plain.mirror is None


def test_an_oversize_fact_is_refused_like_oversize_state() -> None:
    with pytest.raises(StoreError, match=r"plugin state exceeds max size \(1048576 bytes\)"):
        plan_facts("watch", "poll", [rule("a")], {"k": "x" * MAX_STATE_BYTES})


async def test_the_sequence_is_global_and_monotonic_across_plugins(db: Database) -> None:
    first = await record(db, "alpha", [("seen", {"n": 1}), ("seen", {"n": 2})])
    second = await record(db, "beta", [("seen", {"n": 3})])
    third = await record(db, "alpha", [("gone", {"n": 4})])
    seqs = [fact.seq for fact in first + second + third]
    assert seqs == [1, 2, 3, 4]
    alpha = await db.read(lambda conn: fetch_facts(conn, "alpha"))
    assert [(f.seq, f.fact_type, f.fact) for f in alpha] == [
        (4, "gone", {"n": 4}), (2, "seen", {"n": 2}), (1, "seen", {"n": 1})
    ]
    assert all(f.plugin_name == "alpha" and f.job_id == "j1" for f in alpha)


async def test_a_rolled_back_write_gives_its_sequence_numbers_back(db: Database) -> None:
    await record(db, "alpha", [("seen", {"n": 1})])
    with pytest.raises(StoreError, match="exceeds max size"):
        await record(db, "alpha", [("seen", {"n": 2}), ("seen", {"k": "x" * MAX_STATE_BYTES})])
    with pytest.raises(StoreError, match="fact_type is empty"):
        await record(db, "alpha", [("seen", {"n": 2}), (" ", {"n": 3})])
    [again] = await record(db, "alpha", [("seen", {"n": 2})])
    assert again.seq == 2
    assert len(await db.read(lambda conn: fetch_facts(conn, "alpha"))) == 2


async def test_after_seq_follows_the_log_oldest_first(db: Database) -> None:
    await record(db, "alpha", [("a", {"n": i}) for i in range(5)])
    await record(db, "beta", [("a", {"n": 99})])
    page = await db.read(lambda conn: fetch_facts(conn, "alpha", 2, after_seq=1))
    assert [f.seq for f in page] == [2, 3]
    rest = await db.read(lambda conn: fetch_facts(conn, "alpha", 10, after_seq=page[-1].seq))
    assert [f.seq for f in rest] == [4, 5]


async def test_fetch_filters_by_fact_type_and_limits(db: Database) -> None:
    await record(db, "alpha", [("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3})])
    only_a = await db.read(lambda conn: fetch_facts(conn, "alpha", fact_type="a"))
    assert [f.fact["n"] for f in only_a] == [3, 1]
    assert len(await db.read(lambda conn: fetch_facts(conn, "alpha", 1))) == 1
    with pytest.raises(StoreError, match="limit must be a positive integer"):
        await db.read(lambda conn: fetch_facts(conn, "alpha", 0))


async def test_rows_without_a_seq_are_listed_last(db: Database) -> None:
    def legacy(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO plugin_facts (id, seq, plugin_name, fact_type, job_id, command, "
            "fact_json, created_at) VALUES ('old', NULL, 'alpha', 'a', 'j0', 'poll', '{}', ?)",
            (LATER,),
        )

    await db.write(legacy)
    await record(db, "alpha", [("a", {"n": 1})])
    listed = await db.read(lambda conn: fetch_facts(conn, "alpha"))
    assert [(f.id == "old", f.seq) for f in listed] == [(False, 1), (True, None)]


async def test_the_mirror_replaces_plugin_state_wholesale(db: Database) -> None:
    state = StateStore(db)
    await state.merge("watch", {"old": 1, "cursor": 0})
    plan = plan_facts("watch", "poll", [rule("seen", view="mirror_object")], {"cursor": 9})
    assert plan is not None
    [fact] = await apply(db, plan)
    assert fact.fact == {"cursor": 9} and fact.seq == 1
    assert await state.get("watch") == {"cursor": 9}


async def test_a_rule_without_a_view_leaves_plugin_state_alone(db: Database) -> None:
    state = StateStore(db)
    await state.merge("watch", {"old": 1})
    plan = plan_facts("watch", "poll", [rule("seen")], {"cursor": 9})
    assert plan is not None
    await apply(db, plan)
    assert await state.get("watch") == {"old": 1}
    assert [f.fact for f in await db.read(lambda conn: fetch_facts(conn, "watch"))] == [
        {"cursor": 9}
    ]


async def test_next_sequence_counts_each_name_separately(db: Database) -> None:
    values = await db.write(
        lambda conn: [next_sequence(conn, "x"), next_sequence(conn, "x"), next_sequence(conn, "y")]
    )
    assert values == [1, 2, 1]
