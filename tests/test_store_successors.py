"""Successors: routed next steps enqueued in the transaction that ends their parent."""

from __future__ import annotations

from typing import Any

import pytest

from ductile.errors import DedupeDropped, InvalidTransition, SourceEventConflict, StoreError
from ductile.plugin.manifest import FactOutput
from ductile.store import Database, Queue, StateStore
from ductile.store.context import ContextSpec, fetch_context
from ductile.store.facts import fetch_facts, plan_facts
from ductile.store.jobs import Job
from ductile.store.queue import Finished, Successor
from support.store import Clock


@pytest.fixture
def queue(db: Database, clock: Clock) -> Queue:
    return Queue(
        db, snapshot_id=lambda: "cfg", dedupe_ttl=0,
        on_enqueue=lambda: clock.wakes.append("wake"), clock=clock,
    )


async def running(queue: Queue, clock: Clock, plugin: str = "first", **kwargs: Any) -> Job:
    """Enqueue a job and claim it: the parent whose completion carries successors."""
    job = await queue.enqueue(plugin, "handle", {"n": 1}, "api", **kwargs)
    clock.advance(0.001)
    claimed = await queue.claim()
    assert claimed is not None and claimed.id == job.id
    clock.advance(0.001)
    return claimed


def successor(
    plugin: str, event: str | None = "ev1", context: ContextSpec | None = None, **extra: Any
) -> Successor:
    return Successor(
        plugin=plugin, command="handle", payload={"from": "first"}, submitted_by="route",
        source_event_id=event, context=context, max_attempts=3, **extra,
    )


async def finish(queue: Queue, job: Job, status: str = "succeeded", **extra: Any) -> Finished:
    return await queue.complete_and_claim(
        job, status, result='{"ok":true}', last_error=None, stderr=None, exit_code=0,
        duration_ms=4, outcome=extra.pop("outcome", "success"), **extra,
    )


async def queued_count(queue: Queue) -> int:
    return await queue.queue_depth()


async def test_successors_are_queued_children_of_the_finished_job(
    queue: Queue, db: Database, clock: Clock
) -> None:
    parent = await running(queue, clock)
    clock.wakes.clear()
    context = ContextSpec(None, "deploy", "second", {"ductile": {"route_depth": 1}, "b": 1})
    done = await finish(
        queue, parent, successors=[successor("second", context=context), successor("third")]
    )
    assert done.job.status == "succeeded"
    second, third = done.successors
    assert done.dropped == ()
    for child in (second, third):
        assert child.status == "queued" and child.attempt == 1 and child.max_attempts == 3
        assert child.parent_job_id == parent.id and child.source_event_id == "ev1"
        assert child.submitted_by == "route" and child.enqueued_config_snapshot_id == "cfg"
        assert child.created_at == done.job.completed_at
        assert await queue.get(child.id) == child
        [transition] = await queue.transitions(child.id)
        assert (transition.from_status, transition.to_status, transition.reason) == (
            None, "queued", "enqueued by route"
        )
    assert second.payload_obj() == {"from": "first"}
    assert third.event_context_id is None
    stored = await db.read(lambda conn: fetch_context(conn, second.event_context_id))
    assert stored is not None and stored.accumulated["b"] == 1 and stored.step_id == "second"
    assert clock.wakes == ["wake"]


async def test_the_chained_claim_can_take_a_successor_at_once(queue: Queue, clock: Clock) -> None:
    parent = await running(queue, clock)
    done = await finish(queue, parent, successors=[successor("second")], claim_next=())
    assert done.next is not None
    assert done.next.job.id == done.successors[0].id
    assert done.next.job.status == "running"


async def test_a_completion_without_successors_does_not_wake(queue: Queue, clock: Clock) -> None:
    parent = await running(queue, clock)
    clock.wakes.clear()
    done = await finish(queue, parent)
    assert done.successors == () and clock.wakes == []


async def test_a_failed_completion_inserts_no_successor(queue: Queue, clock: Clock) -> None:
    parent = await running(queue, clock)
    await finish(queue, parent)
    clock.wakes.clear()
    with pytest.raises(InvalidTransition, match="succeeded -> succeeded"):
        await finish(queue, parent, successors=[successor("second")])
    assert await queued_count(queue) == 0
    assert clock.wakes == []


async def test_a_bad_successor_context_rolls_back_the_completion(
    queue: Queue, db: Database, clock: Clock
) -> None:
    parent = await running(queue, clock)
    orphan = ContextSpec("no-such-context", "deploy", "second", {})
    with pytest.raises(StoreError, match="parent context no-such-context not found"):
        await finish(queue, parent, successors=[successor("ok"), successor("x", context=orphan)])
    assert (await queue.get(parent.id)).status == "running"  # type: ignore[union-attr]
    assert await queued_count(queue) == 0
    assert await queue.log_entries(parent.id) == []


async def test_an_invalid_successor_is_refused_before_anything_is_written(
    queue: Queue, clock: Clock
) -> None:
    parent = await running(queue, clock)
    with pytest.raises(StoreError, match="plugin is empty"):
        await finish(queue, parent, successors=[successor(" ")])
    assert (await queue.get(parent.id)).status == "running"  # type: ignore[union-attr]


async def test_a_redelivered_event_is_skipped_not_fatal(queue: Queue, clock: Clock) -> None:
    parent = await running(queue, clock)
    earlier = await queue.enqueue(
        "second", "handle", {}, "route", parent_job_id=parent.id, source_event_id="ev1"
    )
    done = await finish(
        queue, parent,
        successors=[successor("second"), successor("third"), successor("third")],
    )
    assert [job.plugin for job in done.successors] == ["third"]
    assert [d.successor.plugin for d in done.dropped] == ["second", "third"]
    assert all(isinstance(d.error, SourceEventConflict) for d in done.dropped)
    assert done.dropped[0].error.parent_job_id == parent.id
    assert done.job.status == "succeeded"
    assert await queued_count(queue) == 2  # `earlier` and the one new third
    assert (await queue.get(earlier.id)).status == "queued"  # type: ignore[union-attr]


async def test_a_dedupe_drop_is_skipped_and_leaves_no_context(
    queue: Queue, db: Database, clock: Clock
) -> None:
    parent = await running(queue, clock, plugin="first")
    await queue.enqueue("second", "handle", {}, "api", dedupe_key="k1")
    clock.wakes.clear()
    context = ContextSpec(None, "deploy", "second", {"n": 1})
    done = await finish(
        queue, parent, successors=[successor("second", context=context, dedupe_key="k1")]
    )
    assert done.successors == ()
    [dropped] = done.dropped
    assert isinstance(dropped.error, DedupeDropped) and dropped.error.reason == "outstanding"
    assert clock.wakes == []
    assert await db.read(
        lambda conn: conn.execute("SELECT count(*) FROM event_context").fetchone()[0]
    ) == 0


async def test_a_skipped_job_records_its_decision_and_still_has_successors(
    queue: Queue, clock: Clock
) -> None:
    parent = await running(queue, clock)
    done = await queue.complete_and_claim(
        parent, "skipped", result=None, last_error=None, stderr=None, exit_code=None,
        duration_ms=None, outcome="skipped", decision="if false: payload.kind eq 'video'",
        successors=[successor("next")],
    )
    assert done.job.status == "skipped"
    transitions = await queue.transitions(parent.id)
    assert (transitions[-1].from_status, transitions[-1].to_status) == ("running", "skipped")
    assert transitions[-1].reason == "if false: payload.kind eq 'video'"
    [log] = await queue.log_entries(parent.id)
    assert log.status == "skipped"
    assert [job.plugin for job in done.successors] == ["next"]


async def test_complete_passes_successors_through(queue: Queue, clock: Clock) -> None:
    parent = await running(queue, clock)
    job = await queue.complete(
        parent, "succeeded", result=None, last_error=None, stderr=None, exit_code=0,
        duration_ms=1, outcome="success", successors=[successor("next")],
    )
    assert job.status == "succeeded"
    assert await queued_count(queue) == 1


RULES = (FactOutput(command="handle", source="state_updates", fact_type="seen",
                    compatibility_view="mirror_object"),)


async def test_facts_commit_with_the_success(queue: Queue, db: Database, clock: Clock) -> None:
    parent = await running(queue, clock)
    plan = plan_facts("first", "handle", RULES, {"cursor": 5})
    assert plan is not None
    await finish(queue, parent, facts=plan, successors=[successor("next")])
    [fact] = await db.read(lambda conn: fetch_facts(conn, "first"))
    assert (fact.job_id, fact.command, fact.fact_type, fact.fact) == (
        parent.id, "handle", "seen", {"cursor": 5}
    )
    assert await StateStore(db).get("first") == {"cursor": 5}


async def test_facts_are_not_written_when_the_completion_fails(
    queue: Queue, db: Database, clock: Clock
) -> None:
    parent = await running(queue, clock)
    await finish(queue, parent)
    plan = plan_facts("first", "handle", RULES, {"cursor": 5})
    assert plan is not None
    with pytest.raises(InvalidTransition):
        await finish(queue, parent, facts=plan)
    assert await db.read(lambda conn: fetch_facts(conn, "first")) == []
    assert await StateStore(db).get("first") == {}


async def test_facts_need_a_success_and_exclude_a_state_update(
    queue: Queue, clock: Clock
) -> None:
    parent = await running(queue, clock)
    plan = plan_facts("first", "handle", RULES, {"cursor": 5})
    assert plan is not None
    with pytest.raises(StoreError, match="only for a succeeded job"):
        await finish(queue, parent, "failed", facts=plan, outcome="plugin_error")
    with pytest.raises(StoreError, match="facts or state_update, not both"):
        await finish(queue, parent, facts=plan, state_update=("first", {"x": 1}))
    assert (await queue.get(parent.id)).status == "running"  # type: ignore[union-attr]
