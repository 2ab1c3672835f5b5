"""One contract suite for every store backend: what ductile/store/interface.py promises.

Each test runs twice, on a `Queue` over a fresh SQLite file and on a `PgQueue` over a fresh
PostgreSQL database (`pg_dsn`, skipped with its reason when PostgreSQL is not installed), with
the same hand-moved clock, and asserts the same answers on both. It calls only the public queue
methods, never SQL and never a SQLite-only reader, so what it checks is what the dispatcher,
the scheduler and the planes can observe. What is not observable through the queue (rows of
plugin_facts and event_context themselves, a corrupt stored state) stays in the per-backend
tests (test_store_facts.py, test_store_context.py, test_store_state.py).

The last test runs one scenario on both backends and compares every read answer, with ids
renamed in order of appearance: list, links, pipeline_run, tree, log_entries, search_logs,
attempts, transitions, queue_depth, next_due_at and running_counts must be equal.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ductile.errors import (
    ContextTooLarge,
    DedupeDropped,
    InvalidTransition,
    JobNotFound,
    JobStateConflict,
    SourceEventConflict,
    StoreError,
)
from ductile.plugin.manifest import FactOutput
from ductile.store.context import MAX_CONTEXT_BYTES, ContextSpec
from ductile.store.facts import plan_facts
from ductile.store.jobs import Job, format_time
from ductile.store.joblog import LogFilter
from ductile.store.queue import Claim, Finished, QueueCore, Successor
from ductile.store.tree import SPLIT_ROOT_PLUGIN, PipelineRun
from ductile.store.writes import INTERRUPTED_REASON, POISON_ERROR, RECOVERED_REASON
from support.store import START, Clock

BACKENDS = ["sqlite", "postgresql"]


async def open_store(backend: str, where: str) -> Any:
    """A Database (SQLite file) or a PgDatabase (DSN), with our schema."""
    if backend == "sqlite":
        from ductile.store.db import Database

        return await Database.open(where)
    from ductile.store.pg.db import PgDatabase

    return await PgDatabase.open(where)


def new_queue(backend: str, db: Any, clock: Clock, *, dedupe_ttl: float = 3600) -> QueueCore:
    kwargs: dict[str, Any] = dict(
        snapshot_id=lambda: "cfg_live", dedupe_ttl=dedupe_ttl,
        on_enqueue=lambda: clock.wakes.append("wake"), clock=clock,
    )
    if backend == "sqlite":
        from ductile.store.queue import Queue

        return Queue(db, **kwargs)
    from ductile.store.pg.queue import PgQueue

    return PgQueue(db, **kwargs)


@dataclass
class Store:
    """One open backend and how to make queues on it."""

    backend: str
    db: Any
    clock: Clock

    def queue(self, *, dedupe_ttl: float = 3600) -> QueueCore:
        return new_queue(self.backend, self.db, self.clock, dedupe_ttl=dedupe_ttl)


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a SQLite file path, or the DSN of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "ductile.db")
    return "postgresql", request.getfixturevalue("pg_dsn")


@pytest.fixture
async def store(location: tuple[str, str], clock: Clock) -> AsyncIterator[Store]:
    db = await open_store(*location)
    yield Store(location[0], db, clock)
    await db.close()


@pytest.fixture
def queue(store: Store) -> QueueCore:
    return store.queue()


# -- helpers ----------------------------------------------------------------------------------


async def enqueue(
    queue: QueueCore, clock: Clock, plugin: str = "echo", *, command: str = "poll",
    payload: Any = {"n": 1}, **kwargs: Any,
) -> Job:
    """Enqueue one job, the clock moved a microsecond first so created_at orders are distinct."""
    clock.advance(0.000001)
    return await queue.enqueue(plugin, command, payload, "api", **kwargs)


async def claim(queue: QueueCore, skip: tuple[str, ...] = ()) -> Claim:
    found = await queue.claim_next(skip)
    assert found is not None, "nothing was claimed"
    return found


async def current(queue: QueueCore, job_id: str) -> Job:
    job = await queue.get(job_id)
    assert job is not None
    return job


async def finish(
    queue: QueueCore, job: Job, status: str = "succeeded", **extra: Any
) -> Finished:
    ending: dict[str, Any] = dict(
        result='{"ok":true}', last_error=None if status == "succeeded" else "boom",
        stderr=None, exit_code=0, duration_ms=5, outcome="success",
    )
    ending.update(extra)
    return await queue.complete_and_claim(job, status, **ending)


async def retry(queue: QueueCore, job: Job, *, delay: float = 0.0, **extra: Any) -> Finished:
    ending: dict[str, Any] = dict(
        last_error="plugin said no", exit_code=1, duration_ms=7, outcome="plugin_error",
        stderr="trace\n",
    )
    ending.update(extra)
    return await queue.retry_and_claim(job, delay=delay, **ending)


async def state_of(queue: QueueCore, clock: Clock, plugin: str) -> dict[str, Any]:
    """The plugin's stored state as a claim sees it (Claim.state), through a probe job that
    must be the only eligible one; the probe is ended at once."""
    probe = await enqueue(queue, clock, plugin, command="probe")
    found = await claim(queue)
    assert found.job.id == probe.id and found.state_error is None
    await finish(queue, found.job, "skipped", result=None, outcome="skipped")
    return found.state


def successor(
    plugin: str, event: str | None = "ev1", context: ContextSpec | None = None, **extra: Any
) -> Successor:
    return Successor(
        plugin=plugin, command="handle", payload={"from": "first"}, submitted_by="route",
        source_event_id=event, context=context, max_attempts=3, **extra,
    )


async def transitions(queue: QueueCore, job_id: str) -> list[tuple[str | None, str]]:
    return [(t.from_status, t.to_status) for t in await queue.transitions(job_id)]


# -- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_stores_a_queued_job_with_the_live_snapshot(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock, payload={"b": [1, 2], "a": "é"})
    assert (job.status, job.attempt, job.max_attempts) == ("queued", 1, 4)
    assert job.payload == '{"b":[1,2],"a":"é"}'
    assert job.enqueued_config_snapshot_id == "cfg_live"
    assert job.created_at == format_time(clock.now)
    assert await queue.get(job.id) == job
    assert await queue.get("missing") is None
    assert clock.wakes == ["wake"]
    [first] = await queue.transitions(job.id)
    assert (first.from_status, first.to_status, first.reason) == (None, "queued",
                                                                   "enqueued by api")
    none = await enqueue(queue, clock, payload=None, max_attempts=0)
    assert none.payload is None and none.max_attempts == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "poll", {}, "api"), "plugin is empty"),
        (("echo", " ", {}, "api"), "command is empty"),
        (("echo", "poll", {}, ""), "submitted_by is empty"),
        (("echo", "poll", {"x": float("nan")}, "api"), "payload is not JSON-serialisable"),
    ],
)
async def test_enqueue_refuses_bad_input_and_writes_nothing(
    queue: QueueCore, clock: Clock, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        await queue.enqueue(*args)
    assert (await queue.list())[1] == 0 and clock.wakes == []


async def test_oversize_baggage_is_refused_before_anything_is_written(
    queue: QueueCore, clock: Clock
) -> None:
    big = ContextSpec(None, "deploy", "build", {"k": "x" * MAX_CONTEXT_BYTES})
    with pytest.raises(ContextTooLarge):
        await enqueue(queue, clock, context=big)
    assert (await queue.list())[1] == 0 and clock.wakes == []


# -- claim ------------------------------------------------------------------------------------


async def test_claim_complete_round_trip_writes_log_attempt_and_transitions(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    clock.advance(1)
    claimed = await claim(queue)
    assert claimed.job.id == job.id and claimed.state == {} and claimed.context is None
    running = claimed.job
    assert (running.status, running.started_at) == ("running", format_time(clock.now))
    assert running.started_config_snapshot_id == "cfg_live"
    await queue.record_spawn(job.id, 1, 4242)
    clock.advance(2)
    done = await queue.complete(
        running, "succeeded", result='{"status":"ok"}', last_error=None, stderr="warn\n",
        exit_code=0, duration_ms=2000, outcome="success",
    )
    assert (done.status, done.completed_at) == ("succeeded", format_time(clock.now))
    [log] = await queue.log_entries(job.id)
    assert log.id == f"{job.id}-1"
    assert (log.status, log.result, log.stderr, log.exit_code, log.attempt) == (
        "succeeded", '{"status":"ok"}', "warn\n", 0, 1)
    assert log.enqueued_config_snapshot_id == log.started_config_snapshot_id == "cfg_live"
    [attempt] = await queue.attempts(job.id)
    assert (attempt.attempt, attempt.pid, attempt.duration_ms, attempt.exit_code) == (
        1, 4242, 2000, 0)
    assert (attempt.outcome, attempt.stderr_tail) == ("success", "warn\n")
    assert (attempt.started_at, attempt.finished_at) == (running.started_at, done.completed_at)
    history = await queue.transitions(job.id)
    assert [(t.from_status, t.to_status, t.reason) for t in history] == [
        (None, "queued", "enqueued by api"), ("queued", "running", "claimed"),
        ("running", "succeeded", "success")]
    assert done.to_api(log.result) == {
        "job_id": job.id, "status": "succeeded", "plugin": "echo", "command": "poll",
        "result": {"status": "ok"}, "started_at": running.started_at,
        "completed_at": done.completed_at, "attempt": 1, "max_attempts": 4,
        "submitted_by": "api", "created_at": job.created_at,
    }


async def test_claim_is_fifo_and_an_empty_queue_claims_nothing(
    queue: QueueCore, clock: Clock
) -> None:
    assert await queue.claim_next() is None
    jobs = [await enqueue(queue, clock, payload={"i": i}) for i in range(5)]
    claimed = [(await claim(queue)).job.id for _ in range(5)]
    assert claimed == [job.id for job in jobs]
    assert await queue.claim_next() is None


async def test_jobs_enqueued_at_the_same_instant_are_claimed_in_insert_order(
    queue: QueueCore, clock: Clock
) -> None:
    """created_at ties (one clock reading) break by insertion order, never by id."""
    jobs = [await queue.enqueue("echo", "poll", {"i": i}, "api") for i in range(4)]
    assert len({job.created_at for job in jobs}) == 1
    assert [(await claim(queue)).job.id for _ in jobs] == [job.id for job in jobs]


async def test_a_retry_keeps_its_fifo_place_and_waits_for_its_due_time(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    later = await enqueue(queue, clock)
    running = (await claim(queue)).job
    clock.wakes.clear()
    again = (await retry(queue, running, delay=30)).job
    assert clock.wakes == ["wake"]
    assert (again.status, again.attempt, again.last_error) == ("queued", 2, "plugin said no")
    assert again.next_retry_at == format_time(clock.now + timedelta(seconds=30))
    assert again.created_at == job.created_at
    assert await queue.next_due_at() == clock.now + timedelta(seconds=30)
    assert (await claim(queue)).job.id == later.id
    clock.advance(29)
    assert await queue.claim_next() is None  # not due yet
    clock.advance(1)
    newer = await enqueue(queue, clock)
    second = await claim(queue)  # due now, and older than `newer`
    assert (second.job.id, second.job.attempt) == (job.id, 2)
    assert await queue.next_due_at() is None
    assert (await claim(queue)).job.id == newer.id
    attempts = await queue.attempts(job.id)
    assert [(a.attempt, a.outcome, a.exit_code) for a in attempts] == [
        (1, "plugin_error", 1), (2, None, None)]
    assert (attempts[0].error, attempts[0].stderr_tail) == ("plugin said no", "trace\n")
    assert await queue.log_entries(job.id) == []  # no job_log row for a retried attempt


async def test_claim_skips_plugins_in_the_skip_list(queue: QueueCore, clock: Clock) -> None:
    await enqueue(queue, clock, plugin="busy")
    other = await enqueue(queue, clock, plugin="idle")
    assert (await claim(queue, ("busy",))).job.id == other.id
    assert await queue.claim_next(["busy"]) is None
    assert await queue.running_counts() == {"idle": 1}
    await claim(queue)
    assert await queue.running_counts() == {"busy": 1, "idle": 1}
    await enqueue(queue, clock, plugin="idle")
    assert await queue.outstanding_counts() == {"busy": 1, "idle": 2}


async def test_a_claim_given_caps_starts_a_capped_plugin_only_below_its_cap(
    queue: QueueCore, clock: Clock
) -> None:
    caps = {"capped": 2, "absent": 1}
    capped = [await enqueue(queue, clock, plugin="capped") for _ in range(3)]
    other = await enqueue(queue, clock, plugin="other")
    taken = [(await queue.claim_next(caps=caps)) for _ in range(4)]
    assert [found.job.id if found else None for found in taken] == [
        capped[0].id, capped[1].id, other.id, None]  # the third capped job waits for room
    assert await queue.running_counts() == {"capped": 2, "other": 1}
    await finish(queue, taken[0].job)  # type: ignore[union-attr]
    assert await queue.claim_next(["capped"], caps=caps) is None  # the skip list still holds
    assert (await queue.claim_next(caps=caps)).job.id == capped[2].id  # type: ignore[union-attr]
    await enqueue(queue, clock, plugin="paused")
    assert await queue.claim_next(caps={"paused": 0}) is None  # a cap of 0 starts nothing
    assert (await queue.claim_next()).job.plugin == "paused"  # type: ignore[union-attr]


async def test_a_bad_cap_is_refused_before_anything_is_claimed(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(StoreError, match=f"plugin 'echo' has cap {bad!r}"):
            await queue.claim_next(caps={"echo": bad})  # type: ignore[dict-item]
    assert (await current(queue, job.id)).status == "queued"


async def test_the_dedupe_key_is_a_concurrency_key_per_target(
    queue: QueueCore, clock: Clock
) -> None:
    first = await enqueue(queue, clock, dedupe_key="k")
    assert (await claim(queue)).job.id == first.id
    with pytest.raises(DedupeDropped) as caught:  # same key and target as a running job
        await enqueue(queue, clock, dedupe_key="k")
    assert (caught.value.reason, caught.value.existing_job_id) == ("outstanding", first.id)
    sibling = await enqueue(queue, clock, plugin="other", dedupe_key="k")
    assert (await claim(queue)).job.id == sibling.id
    assert await queue.claim_next() is None


async def test_a_chained_claim_reads_the_state_and_context_of_the_next_job(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock, plugin="a")
    first = await claim(queue)
    context = ContextSpec(None, "deploy", "build", {"who": "me", "ductile": {"route_depth": 0}})
    second = await enqueue(queue, clock, plugin="a", context=context)
    done = await finish(queue, first.job, state_update=("a", {"cursor": 7}), claim_next=())
    assert done.next is not None and done.next.job.id == second.id
    assert done.next.state == {"cursor": 7}
    assert done.next.context is not None
    assert (done.next.context.id, done.next.context.pipeline_name) == (
        second.event_context_id, "deploy")
    assert done.next.context.accumulated == {"who": "me", "ductile": {"route_depth": 0}}
    assert done.next.context.created_at == second.created_at
    nothing = await finish(queue, done.next.job, claim_next=())
    assert nothing.next is None


# -- the job machine --------------------------------------------------------------------------


async def test_every_change_off_the_job_machine_is_refused_and_changes_nothing(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    with pytest.raises(InvalidTransition) as caught:
        await finish(queue, job)
    assert (caught.value.from_status, caught.value.to_status) == ("queued", "succeeded")
    with pytest.raises(InvalidTransition, match="queued -> cancelled"):
        await finish(queue, job, "cancelled")  # a cancel, never a complete
    with pytest.raises(InvalidTransition, match="queued -> queued"):
        await retry(queue, job)
    with pytest.raises(InvalidTransition, match="queued -> queued"):
        await queue.interrupt(job, duration_ms=1, stderr=None)
    assert await transitions(queue, job.id) == [(None, "queued")]
    running = (await claim(queue)).job
    with pytest.raises(InvalidTransition, match="running -> dead"):
        await finish(queue, running, "dead")  # crash recovery's alone
    with pytest.raises(StoreError, match="invalid terminal status: 'queued'"):
        await finish(queue, running, "queued")
    with pytest.raises(InvalidTransition, match="running -> cancelled"):
        await queue.cancel(running.id)  # the dispatcher stops it first
    done = (await finish(queue, running)).job
    with pytest.raises(InvalidTransition, match="succeeded -> failed is not allowed"):
        await finish(queue, done, "failed")
    with pytest.raises(InvalidTransition, match="succeeded -> queued"):
        await retry(queue, done)
    with pytest.raises(InvalidTransition, match="succeeded -> cancelled"):
        await queue.cancel(done.id)
    assert await current(queue, job.id) == done
    assert await transitions(queue, job.id) == [
        (None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert len(await queue.log_entries(job.id)) == 1


async def test_a_retry_of_the_last_attempt_is_refused(queue: QueueCore, clock: Clock) -> None:
    await enqueue(queue, clock, max_attempts=2)
    await retry(queue, (await claim(queue)).job)
    second = (await claim(queue)).job
    assert second.attempt == 2
    with pytest.raises(StoreError, match="attempt 2 of 2 was the last"):
        await retry(queue, second)
    assert (await current(queue, second.id)).status == "running"
    [*_, still_open] = await queue.attempts(second.id)
    assert (still_open.attempt, still_open.finished_at) == (2, None)


async def test_an_outcome_for_a_stale_attempt_is_refused(queue: QueueCore, clock: Clock) -> None:
    await enqueue(queue, clock)
    first = (await claim(queue)).job
    await queue.recover_orphans()
    second = (await claim(queue)).job
    assert second.attempt == 2
    with pytest.raises(StoreError, match="attempt 1 is stale"):
        await finish(queue, first)
    with pytest.raises(StoreError, match="attempt 1 is stale"):
        await retry(queue, first)
    with pytest.raises(StoreError, match="attempt 1 is stale"):
        await queue.interrupt(first, duration_ms=1, stderr=None)
    assert await current(queue, first.id) == second


async def test_stderr_is_capped_in_the_log_and_tailed_in_the_attempt(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock)
    await enqueue(queue, clock)
    stderr = "a" * 70_000 + "THE END"
    first = (await claim(queue)).job
    await finish(queue, first, "failed", result=None, stderr=stderr, exit_code=2)
    [log] = await queue.log_entries(first.id)
    assert log.stderr == "a" * 65536
    [attempt] = await queue.attempts(first.id)
    assert len(attempt.stderr_tail or "") == 4096
    assert (attempt.stderr_tail or "").endswith("THE END")
    second = (await claim(queue)).job
    raw = b"bad \xff byte".decode("utf-8", "surrogateescape")
    await finish(queue, second, "failed", result=None, stderr=raw)
    [log] = await queue.log_entries(second.id)
    assert log.stderr == "bad ? byte"


async def test_a_nul_in_what_a_plugin_said_never_makes_its_outcome_unrecordable(
    queue: QueueCore, clock: Clock
) -> None:
    """PostgreSQL text cannot hold NUL: it stores `?` there (SQLite keeps the NUL). Either
    way the outcome is recorded; a refused write would leave the job unrecordable."""
    await enqueue(queue, clock)
    job = (await claim(queue)).job
    done = await finish(queue, job, "failed", result=None, last_error="bad\x00error",
                        stderr="out\x00put")
    assert (done.job.last_error or "").replace("\x00", "?") == "bad?error"
    [log] = await queue.log_entries(job.id)
    assert (log.stderr or "").replace("\x00", "?") == "out?put"
    [attempt] = await queue.attempts(job.id)
    assert (attempt.stderr_tail or "").replace("\x00", "?") == "out?put"
    assert (await current(queue, job.id)).status == "failed"


# -- plugin state and facts, inside complete_and_claim ------------------------------------------


async def test_a_state_update_is_merged_in_the_completing_transaction(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock)
    await finish(queue, (await claim(queue)).job, state_update=("echo", {"keep": 1, "c": "a"}))
    await enqueue(queue, clock)
    found = await claim(queue)
    assert found.state == {"keep": 1, "c": "a"}
    await finish(queue, found.job, state_update=("echo", {"c": "b", "nested": {"x": 1}}))
    assert await state_of(queue, clock, "echo") == {"keep": 1, "c": "b", "nested": {"x": 1}}
    assert await state_of(queue, clock, "other") == {}


async def test_an_oversized_state_update_writes_nothing_at_all(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock)
    await finish(queue, (await claim(queue)).job, state_update=("echo", {"small": 1}))
    await enqueue(queue, clock)
    job = (await claim(queue)).job
    clock.wakes.clear()
    with pytest.raises(StoreError, match=r"plugin state exceeds max size \(1048576 bytes\)"):
        await finish(queue, job, state_update=("echo", {"blob": "x" * (1024 * 1024)}),
                     successors=[successor("next")], claim_next=())
    assert (await current(queue, job.id)).status == "running"
    assert await queue.log_entries(job.id) == []
    assert [a.finished_at for a in await queue.attempts(job.id)] == [None]
    assert await queue.queue_depth() == 0 and clock.wakes == []
    failed = await finish(queue, job, "failed", last_error="plugin state exceeds max size",
                          outcome="state_error")
    assert failed.job.status == "failed"
    assert await state_of(queue, clock, "echo") == {"small": 1}


RULES = (FactOutput(command="handle", source="state_updates", fact_type="seen",
                    compatibility_view="mirror_object"),)


async def test_facts_commit_with_the_success_and_mirror_the_state(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock, "first", command="handle")
    await finish(queue, (await claim(queue)).job, state_update=("first", {"old": 1}))
    await enqueue(queue, clock, "first", command="handle")
    job = (await claim(queue)).job
    plan = plan_facts("first", "handle", RULES, {"cursor": 5})
    assert plan is not None
    with pytest.raises(StoreError, match="only for a succeeded job"):
        await finish(queue, job, "failed", facts=plan)
    with pytest.raises(StoreError, match="facts or state_update, not both"):
        await finish(queue, job, facts=plan, state_update=("first", {"x": 1}))
    done = await finish(queue, job, facts=plan, successors=[successor("next")])
    assert done.job.status == "succeeded" and len(done.successors) == 1
    with pytest.raises(InvalidTransition):  # a refused completion writes no facts
        await finish(queue, job, facts=plan_facts("first", "handle", RULES, {"cursor": 9}))
    assert (await claim(queue)).job.id == done.successors[0].id
    assert await state_of(queue, clock, "first") == {"cursor": 5}  # replaced wholesale


# -- dedupe and redelivery --------------------------------------------------------------------


async def test_dedupe_drops_a_duplicate_of_an_outstanding_job(
    queue: QueueCore, clock: Clock
) -> None:
    first = await enqueue(queue, clock, dedupe_key="echo:poll:s1", dedupe_ttl=60)
    clock.wakes.clear()
    for ttl in (None, 60, 0):
        with pytest.raises(DedupeDropped) as caught:
            await enqueue(queue, clock, dedupe_key=" echo:poll:s1 ", dedupe_ttl=ttl)
        assert (caught.value.reason, caught.value.existing_job_id) == ("outstanding", first.id)
        assert caught.value.dedupe_key == "echo:poll:s1"
    assert clock.wakes == []
    await enqueue(queue, clock, command="health", dedupe_key="echo:poll:s1")
    assert (await queue.list())[1] == 2


async def test_dedupe_drops_a_recent_success_within_the_ttl(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock, dedupe_key="k")
    done = (await finish(queue, (await claim(queue)).job)).job
    with pytest.raises(DedupeDropped) as caught:
        await enqueue(queue, clock, dedupe_key="k")
    assert (caught.value.reason, caught.value.existing_job_id) == ("recent_success", done.id)
    await enqueue(queue, clock, plugin="other", dedupe_key="k")  # scoped by target
    clock.advance(3601)
    again = await enqueue(queue, clock, dedupe_key="k")  # expired
    assert (await claim(queue)).job.plugin == "other"
    claimed = await claim(queue)
    assert claimed.job.id == again.id
    await finish(queue, claimed.job)
    with pytest.raises(DedupeDropped):
        await enqueue(queue, clock, dedupe_key="k", dedupe_ttl=10)  # the override applies
    await enqueue(queue, clock, dedupe_key="k", dedupe_ttl=0)  # a zero TTL disables it


async def test_a_failed_job_does_not_dedupe(queue: QueueCore, clock: Clock) -> None:
    await enqueue(queue, clock, dedupe_key="k")
    await finish(queue, (await claim(queue)).job, "failed")
    await enqueue(queue, clock, dedupe_key="k")


async def test_a_redelivered_routed_event_is_a_source_event_conflict(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock, parent_job_id="p1", source_event_id="ev1")
    await enqueue(queue, clock, plugin="b", parent_job_id="p1", source_event_id="ev1")
    await enqueue(queue, clock, source_event_id="ev1")  # no parent: never a conflict
    await enqueue(queue, clock, source_event_id="ev1")
    clock.wakes.clear()
    with pytest.raises(SourceEventConflict, match=r"parent 'p1', source_event 'ev1'.*echo/poll"):
        await enqueue(queue, clock, parent_job_id="p1", source_event_id="ev1")
    assert (await queue.list())[1] == 4 and clock.wakes == []


# -- successors -------------------------------------------------------------------------------


async def running(queue: QueueCore, clock: Clock, plugin: str = "first", **kwargs: Any) -> Job:
    """Enqueue a job and claim it: the parent whose completion carries successors."""
    job = await enqueue(queue, clock, plugin, command="handle", **kwargs)
    clock.advance(0.001)
    found = await claim(queue)
    assert found.job.id == job.id
    clock.advance(0.001)
    return found.job


async def test_successors_are_queued_children_with_their_context(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    clock.wakes.clear()
    context = ContextSpec(None, "deploy", "second", {"ductile": {"route_depth": 1}, "b": 1})
    done = await finish(
        queue, parent, successors=[successor("second", context=context), successor("third")])
    assert done.job.status == "succeeded" and done.dropped == ()
    second, third = done.successors
    for child in (second, third):
        assert (child.status, child.attempt, child.max_attempts) == ("queued", 1, 3)
        assert (child.parent_job_id, child.source_event_id) == (parent.id, "ev1")
        assert child.submitted_by == "route" and child.enqueued_config_snapshot_id == "cfg_live"
        assert child.created_at == done.job.completed_at
        assert await queue.get(child.id) == child
        [first] = await queue.transitions(child.id)
        assert (first.from_status, first.to_status, first.reason) == (
            None, "queued", "enqueued by route")
    assert third.event_context_id is None
    assert clock.wakes == ["wake"]
    found = await claim(queue)
    assert found.job.id == second.id and found.context is not None
    assert found.context.accumulated == {"ductile": {"route_depth": 1}, "b": 1}
    assert (found.context.step_id, found.context.created_at) == ("second", second.created_at)


async def test_the_chained_claim_can_take_a_successor_at_once(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    done = await finish(queue, parent, successors=[successor("second")], claim_next=())
    assert done.next is not None and done.next.job.id == done.successors[0].id
    assert done.next.job.status == "running"


async def test_a_completion_without_successors_does_not_wake(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    clock.wakes.clear()
    assert (await finish(queue, parent)).successors == ()
    assert clock.wakes == []


async def test_a_refused_completion_inserts_no_successor(queue: QueueCore, clock: Clock) -> None:
    parent = await running(queue, clock)
    await finish(queue, parent)
    clock.wakes.clear()
    with pytest.raises(InvalidTransition, match="succeeded -> succeeded"):
        await finish(queue, parent, successors=[successor("second")])
    assert await queue.queue_depth() == 0 and clock.wakes == []


async def test_a_bad_successor_context_rolls_back_the_whole_completion(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    orphan = ContextSpec("no-such-context", "deploy", "second", {})
    with pytest.raises(StoreError, match="parent context no-such-context not found"):
        await finish(queue, parent, successors=[successor("ok"), successor("x", context=orphan)],
                     state_update=("first", {"x": 1}))
    assert (await current(queue, parent.id)).status == "running"
    assert await queue.queue_depth() == 0
    assert await queue.log_entries(parent.id) == []
    await finish(queue, parent, "failed")
    assert await state_of(queue, clock, "first") == {}


async def test_an_invalid_successor_is_refused_before_anything_is_written(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    with pytest.raises(StoreError, match="plugin is empty"):
        await finish(queue, parent, successors=[successor(" ")])
    assert (await current(queue, parent.id)).status == "running"


async def test_a_redelivered_or_deduped_successor_is_skipped_and_reported(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    earlier = await queue.enqueue(
        "second", "handle", {}, "route", parent_job_id=parent.id, source_event_id="ev1")
    keyed = await enqueue(queue, clock, "fourth", command="handle", dedupe_key="k1")
    clock.wakes.clear()
    context = ContextSpec(None, "deploy", "fourth", {"n": 1})
    done = await finish(queue, parent, successors=[
        successor("second"), successor("third"), successor("third"),
        successor("fourth", event="ev2", context=context, dedupe_key="k1"),
    ])
    assert [job.plugin for job in done.successors] == ["third"]
    assert [d.successor.plugin for d in done.dropped] == ["second", "third", "fourth"]
    conflict, again, deduped = (d.error for d in done.dropped)
    assert isinstance(conflict, SourceEventConflict) and isinstance(again, SourceEventConflict)
    assert conflict.parent_job_id == parent.id
    assert isinstance(deduped, DedupeDropped)
    assert (deduped.reason, deduped.existing_job_id) == ("outstanding", keyed.id)
    assert done.job.status == "succeeded" and clock.wakes == ["wake"]
    assert await queue.queue_depth() == 3  # `earlier`, `keyed` and the one new third
    assert (await current(queue, earlier.id)).status == "queued"


async def test_a_skipped_job_records_its_decision_and_still_has_successors(
    queue: QueueCore, clock: Clock
) -> None:
    parent = await running(queue, clock)
    done = await queue.complete_and_claim(
        parent, "skipped", result=None, last_error=None, stderr=None, exit_code=None,
        duration_ms=None, outcome="skipped", decision="if false: payload.kind eq 'video'",
        successors=[successor("next")],
    )
    [*_, last] = await queue.transitions(parent.id)
    assert (last.from_status, last.to_status, last.reason) == (
        "running", "skipped", "if false: payload.kind eq 'video'")
    assert [log.status for log in await queue.log_entries(parent.id)] == ["skipped"]
    assert [job.plugin for job in done.successors] == ["next"]
    assert done.job.status == "skipped"


# -- cancel, interrupt, recovery ---------------------------------------------------------------


async def test_cancel_ends_a_queued_job_and_a_stopped_running_one(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    clock.wakes.clear()
    done = await queue.cancel(job.id, reason="cancelled by scheduler (if_running=cancel)")
    assert (done.status, done.last_error, done.completed_at) == (
        "cancelled", "cancelled by scheduler (if_running=cancel)", format_time(clock.now))
    assert [(e.status, e.attempt) for e in await queue.log_entries(job.id)] == [("cancelled", 1)]
    [*_, last] = await queue.transitions(job.id)
    assert (last.from_status, last.to_status, last.reason) == (
        "queued", "cancelled", "cancelled by scheduler (if_running=cancel)")
    assert await queue.claim_next() is None and clock.wakes == []
    with pytest.raises(JobNotFound, match="job nope not found"):
        await queue.cancel("nope")
    await enqueue(queue, clock)
    stopped = (await claim(queue)).job
    ended = await finish(queue, stopped, "cancelled", result=None,
                         last_error="cancelled by operator", stderr="bye\n", exit_code=None,
                         duration_ms=12, outcome="cancelled")
    assert (ended.job.status, ended.job.last_error) == ("cancelled", "cancelled by operator")
    [attempt] = await queue.attempts(stopped.id)
    assert (attempt.outcome, attempt.stderr_tail) == ("cancelled", "bye\n")
    [*_, last] = await queue.transitions(stopped.id)
    assert (last.to_status, last.reason) == ("cancelled", "cancelled: cancelled by operator")


async def test_an_interrupt_requeues_without_spending_an_attempt_or_a_poison_strike(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock, max_attempts=2)
    first = (await claim(queue)).job
    clock.wakes.clear()
    again = await queue.interrupt(first, duration_ms=30_000, stderr="cut\n")
    assert (again.status, again.attempt, again.max_attempts, again.last_error) == (
        "queued", 2, 3, None)
    assert again.next_retry_at is None
    [cut] = await queue.attempts(job.id)
    assert (cut.attempt, cut.outcome, cut.duration_ms, cut.error) == (
        1, "interrupted", 30_000, INTERRUPTED_REASON)
    [*_, last] = await queue.transitions(job.id)
    assert (last.from_status, last.to_status, last.reason) == (
        "running", "queued", INTERRUPTED_REASON)
    await queue.interrupt((await claim(queue)).job, duration_ms=1, stderr=None)
    await claim(queue)
    [recovered] = await queue.recover_orphans()  # the first crash it ever saw: no quarantine
    assert (recovered.status, recovered.attempt, recovered.max_attempts) == ("queued", 4, 4)


async def test_recover_orphans_requeues_or_buries_by_attempts(
    queue: QueueCore, clock: Clock
) -> None:
    fresh = await enqueue(queue, clock, max_attempts=3)
    spent = await enqueue(queue, clock, max_attempts=1)
    waiting = await enqueue(queue, clock)
    await claim(queue)
    await claim(queue)
    clock.wakes.clear()
    recovered = {job.id: job for job in await queue.recover_orphans()}
    assert set(recovered) == {fresh.id, spent.id}
    again = recovered[fresh.id]
    assert (again.status, again.attempt, again.last_error, again.next_retry_at) == (
        "queued", 2, None, None)
    assert [t.reason for t in await queue.transitions(fresh.id)][-1] == RECOVERED_REASON
    dead = recovered[spent.id]
    message = "Job marked dead during crash recovery: max attempts (1) reached"
    assert (dead.status, dead.attempt, dead.last_error) == ("dead", 2, message)
    [log] = await queue.log_entries(spent.id)
    assert (log.id, log.status, log.last_error) == (f"{spent.id}-2", "dead", message)
    [crashed] = await queue.attempts(spent.id)
    assert (crashed.outcome, crashed.error) == ("crashed", RECOVERED_REASON)
    assert crashed.finished_at == format_time(clock.now)
    assert (await current(queue, waiting.id)).status == "queued"
    assert clock.wakes == ["wake"]
    assert await queue.recover_orphans() == [] and clock.wakes == ["wake"]


async def test_a_job_running_during_two_crashes_is_quarantined_as_poison(
    queue: QueueCore, clock: Clock
) -> None:
    job = await enqueue(queue, clock, max_attempts=4)
    await claim(queue)
    [first] = await queue.recover_orphans()
    assert (first.status, first.attempt) == ("queued", 2)
    await claim(queue)
    clock.wakes.clear()
    [second] = await queue.recover_orphans()
    message = POISON_ERROR.format(2)
    assert (second.status, second.attempt, second.last_error) == ("dead", 2, message)
    assert clock.wakes == []  # nothing became claimable
    [log] = await queue.log_entries(job.id)
    assert (log.id, log.status, log.attempt) == (f"{job.id}-2", "dead", 2)
    assert await transitions(queue, job.id) == [
        (None, "queued"), ("queued", "running"), ("running", "queued"), ("queued", "running"),
        ("running", "dead")]
    assert await queue.claim_next() is None


# -- operator links ---------------------------------------------------------------------------


async def test_a_retry_links_both_ways_and_only_once(queue: QueueCore, clock: Clock) -> None:
    old = await enqueue(queue, clock, dedupe_key="k", parent_job_id="p")
    with pytest.raises(JobStateConflict, match=r"is queued: only a job that is failed, "):
        await enqueue(queue, clock, retry_of=old.id)
    await finish(queue, (await claim(queue)).job, "failed")
    clock.wakes.clear()
    new = await enqueue(queue, clock, dedupe_key="k", retry_of=old.id)
    assert new.retry_of == old.id and (await current(queue, new.id)).retry_of == old.id
    assert clock.wakes == ["wake"]
    [enqueued] = await queue.transitions(new.id)
    assert enqueued.reason == f"enqueued by api: retry of {old.id}"
    assert (await queue.links(await current(queue, old.id))).as_dict() == {"retried_as": new.id}
    assert (await queue.links(new)).as_dict() == {"retry_of": old.id}
    with pytest.raises(JobStateConflict, match=f"already retried as job {new.id}"):
        await enqueue(queue, clock, retry_of=old.id)
    with pytest.raises(JobNotFound):
        await enqueue(queue, clock, retry_of="missing")
    assert (await queue.list())[1] == 2


async def test_reruns_link_to_the_run_they_repeat(queue: QueueCore, clock: Clock) -> None:
    root = await enqueue(queue, clock)
    await finish(queue, (await claim(queue)).job)
    first = await enqueue(queue, clock, rerun_of=root.id)
    second = await enqueue(queue, clock, rerun_of=root.id)
    [enqueued] = await queue.transitions(first.id)
    assert enqueued.reason == f"enqueued by api: rerun of the run rooted at {root.id}"
    assert (await queue.links(root)).as_dict() == {"rerun_as": [first.id, second.id]}
    assert (await queue.links(second)).as_dict() == {"rerun_of": root.id}


# -- reads ------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_filters_and_a_total(
    queue: QueueCore, clock: Clock
) -> None:
    a = await enqueue(queue, clock)
    b = await enqueue(queue, clock, plugin="other")
    c = await enqueue(queue, clock, command="health")
    await claim(queue)
    jobs, total = await queue.list(limit=2)
    assert [j.id for j in jobs] == [c.id, b.id] and total == 3
    jobs, total = await queue.list(plugin="echo")
    assert [j.id for j in jobs] == [c.id, a.id] and total == 2
    jobs, total = await queue.list(status="running")
    assert [j.id for j in jobs] == [a.id] and total == 1
    jobs, total = await queue.list(plugin="echo", command="health", status="queued")
    assert [j.id for j in jobs] == [c.id] and total == 1
    assert await queue.queue_depth() == 2
    with pytest.raises(StoreError, match="limit must be a positive integer"):
        await queue.list(limit=0)


async def test_search_logs_filters_terminal_attempts_newest_first(
    queue: QueueCore, clock: Clock
) -> None:
    await enqueue(queue, clock, "a")
    await enqueue(queue, clock, "b", command="sync")
    await enqueue(queue, clock, "a")
    first = (await claim(queue)).job
    clock.advance(1)
    await finish(queue, first, result='{"found":"needle"}')
    second = (await claim(queue)).job
    clock.advance(1)
    await finish(queue, second, "failed", result=None, last_error="disk full",
                 stderr="trace: needle\n")
    third = (await claim(queue)).job
    clock.advance(1)
    await finish(queue, third, result=None)
    entries, total = await queue.search_logs(LogFilter())
    assert [e.job_id for e in entries] == [third.id, second.id, first.id] and total == 3
    entries, total = await queue.search_logs(LogFilter(plugin="a", limit=1))
    assert [e.job_id for e in entries] == [third.id] and total == 2
    entries, total = await queue.search_logs(LogFilter(query="needle"))
    assert [e.job_id for e in entries] == [second.id, first.id] and total == 2
    entries, _ = await queue.search_logs(LogFilter(status="failed", command="sync"))
    assert [e.last_error for e in entries] == ["disk full"]
    since = format_time(START + timedelta(seconds=2))
    entries, total = await queue.search_logs(LogFilter(since=since))
    assert [e.job_id for e in entries] == [third.id, second.id] and total == 2
    entries, total = await queue.search_logs(LogFilter(until=since, submitted_by="api"))
    assert [e.job_id for e in entries] == [first.id] and total == 1
    entries, total = await queue.search_logs(LogFilter(job_id=second.id, query="%"))
    assert (entries, total) == ([], 0)  # the query is a plain substring, not a pattern
    assert (await queue.search_logs(LogFilter(query="_isk")))[1] == 0


# -- pipeline runs and trees ------------------------------------------------------------------


def step(plugin: str, event: str, baggage: dict[str, Any] | None = None) -> Successor:
    context = ContextSpec(None, "deploy", plugin, baggage) if baggage is not None else None
    return Successor(plugin=plugin, command="handle", payload={}, submitted_by="route",
                     source_event_id=event, context=context, max_attempts=4)


async def run_step(
    queue: QueueCore, clock: Clock, job: Job, *successors: Successor, status: str = "succeeded",
    result: str | None = '{"ok":true}', decision: str | None = None,
) -> tuple[Job, ...]:
    """Claim `job` (it must be the next eligible), end it and return its successors."""
    clock.advance(0.001)
    found = await claim(queue)
    assert found.job.id == job.id
    clock.advance(0.25)
    done = await queue.complete_and_claim(
        found.job, status, result=result, last_error="boom" if status == "failed" else None,
        stderr=None, exit_code=0, duration_ms=250, outcome="success", decision=decision,
        successors=successors,
    )
    return done.successors


async def test_a_tree_nests_children_in_creation_order_with_their_context(
    queue: QueueCore, clock: Clock
) -> None:
    root = await enqueue(queue, clock, "first", command="handle",
                         payload={"ductile_decision": "after start: go"})
    left, right = await run_step(
        queue, clock, root,
        step("left", "e1", {"ductile": {"route_depth": 1, "pipeline_instance_id": "i1"},
                            "user": "ann"}),
        step("right", "e1"),
    )
    [leaf] = await run_step(queue, clock, left, step("leaf", "e2"), result="plain text")
    await run_step(queue, clock, right, status="skipped", result=None, decision="if false: x")
    tree = await queue.tree(root.id)
    assert tree is not None
    assert (tree["job_id"], tree["truncated"], tree["route"]) == (root.id, False,
                                                                   "after start: go")
    assert tree["result"] == {"ok": True} and tree["context"] is None
    assert (tree["duration_ms"], tree["attempt"], tree["status"]) == (250, 1, "succeeded")
    assert [c["job_id"] for c in tree["children"]] == [left.id, right.id]
    left_node, right_node = tree["children"]
    assert left_node["context"] == {
        "context_id": left.event_context_id, "pipeline": "deploy", "step_id": "left",
        "baggage": {"user": "ann"}, "ductile": {"route_depth": 1, "pipeline_instance_id": "i1"},
    }
    assert left_node["result"] == "plain text" and left_node["route"] is None
    [leaf_node] = left_node["children"]
    assert leaf_node["job_id"] == leaf.id and leaf_node["status"] == "queued"
    assert leaf_node["decision"] == "enqueued by route"
    assert leaf_node["started_at"] is None and leaf_node["duration_ms"] is None
    assert leaf_node["children"] == [] and "truncated" not in leaf_node
    assert (right_node["status"], right_node["decision"], right_node["result"]) == (
        "skipped", "if false: x", None)
    subtree = await queue.tree(left.id)
    assert subtree is not None and [c["job_id"] for c in subtree["children"]] == [leaf.id]
    assert await queue.tree("nope") is None
    assert await queue.pipeline_run(leaf.id) == PipelineRun(root_id=root.id)
    plain = await queue.pipeline_run(root.id)
    assert plain is not None and plain.routed and plain.live == 1
    assert [entry.job.id for entry in plain.entries] == [root.id]
    assert await queue.pipeline_run("nope") is None


def split_run(instance: str = "i9") -> tuple[Successor, list[Successor]]:
    """A `core.split` root and two branches sharing one pipeline-instance root row, shaped
    the way `POST /pipeline/{name}` builds them."""
    shared = ContextSpec(None, "fan", "", {"tenant": "t1", "ductile": {
        "pipeline_instance_id": instance, "route_depth": 0}}, id=f"ctx-{instance}")
    branches = [
        Successor(plugin=plugin, command="handle", payload={"type": "go", "payload": {}},
                  submitted_by="api", source_event_id="ev",
                  context=ContextSpec(None, "fan", step_id, {"tenant": "t1"}, parent=shared),
                  max_attempts=3)
        for plugin, step_id in (("left", "l"), ("right", "r"))
    ]
    root = Successor(plugin=SPLIT_ROOT_PLUGIN, command="handle",
                     payload={"type": "go", "payload": {}}, submitted_by="api",
                     source_event_id=None, context=shared, max_attempts=1)
    return root, branches


async def test_a_split_run_is_one_succeeded_root_with_its_branches_in_one_write(
    queue: QueueCore, clock: Clock
) -> None:
    root, branches = split_run()
    started = await queue.start_run(root, branches, result='{"branches":["fan/l","fan/r"]}',
                                    reason="split into 2 branches", rerun_of="old-root")
    run = started.job
    assert (run.plugin, run.status, run.parent_job_id, run.rerun_of) == (
        SPLIT_ROOT_PLUGIN, "succeeded", None, "old-root")
    assert run.event_context_id == "ctx-i9" and clock.wakes == ["wake"]
    left, right = started.successors
    assert [j.parent_job_id for j in started.successors] == [run.id, run.id]
    assert await transitions(queue, run.id) == [
        (None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert (await queue.transitions(run.id))[-1].reason == "split into 2 branches"
    assert await queue.attempts(run.id) == []
    [log] = await queue.log_entries(run.id)
    assert (log.status, log.result) == ("succeeded", '{"branches":["fan/l","fan/r"]}')
    found = await claim(queue)
    assert found.job.id == left.id and found.context is not None
    assert found.context.parent_id == "ctx-i9"
    whole = await queue.tree(run.id)
    assert whole is not None and [c["job_id"] for c in whole["children"]] == [left.id, right.id]
    assert whole["decision"] == "split into 2 branches"
    assert whole["context"]["step_id"] == "" and whole["context"]["baggage"] == {"tenant": "t1"}
    assert await queue.tree(right.id) == whole  # any job of a split run: the whole run
    info = await queue.pipeline_run(run.id)
    assert info is not None and info.routed and info.live == 2
    assert [entry.job.id for entry in info.entries] == [run.id]
    assert (await queue.links(run)).as_dict() == {"rerun_of": "old-root"}


async def test_a_split_branch_dropped_by_its_dedupe_key_is_reported(
    queue: QueueCore, clock: Clock
) -> None:
    keyed = await enqueue(queue, clock, "left", command="handle", dedupe_key="k")
    root, branches = split_run()
    branches[0] = replace(branches[0], dedupe_key="k")
    started = await queue.start_run(root, branches, result=None, reason="split")
    assert [job.plugin for job in started.successors] == ["right"]
    [dropped] = started.dropped
    assert isinstance(dropped.error, DedupeDropped)
    assert dropped.error.existing_job_id == keyed.id


async def test_a_pipeline_run_lists_every_entry_of_one_start(
    queue: QueueCore, clock: Clock
) -> None:
    """Entries of one start share the trigger event (`<event>` and `<event>@<pipeline>/<step>`)
    and one pipeline-instance root context; other jobs of the event are not entries."""
    instance = ContextSpec(None, "flow", "", {"ductile": {"pipeline_instance_id": "i1"}},
                           id="inst-1")
    payload = {"event_id": "ev1", "type": "go"}
    first = await enqueue(queue, clock, "a", command="handle", payload=payload,
                          source_event_id="ev1",
                          context=ContextSpec(None, "flow", "a", {}, parent=instance))
    second = await enqueue(queue, clock, "b", command="handle", payload=payload,
                           source_event_id="ev1@flow/b",
                           context=ContextSpec(None, "flow", "b", {}, parent=instance))
    await enqueue(queue, clock, "c", command="handle", payload=payload, source_event_id="ev10",
                  context=ContextSpec(None, "flow", "c", {}, parent=instance))
    await enqueue(queue, clock, "d", command="handle", payload=payload,
                  source_event_id="ev1@other")
    [child] = await run_step(queue, clock, first, step("next", "e2"))
    info = await queue.pipeline_run(first.id)
    assert info is not None
    assert [entry.job.id for entry in info.entries] == [first.id, second.id]
    assert [entry.context.step_id for entry in info.entries if entry.context] == ["a", "b"]
    assert info.instance_root is not None and info.instance_root.id == "inst-1"
    assert (info.root_id, info.routed, info.live) == (first.id, True, 2)
    assert await queue.pipeline_run(child.id) == PipelineRun(root_id=first.id)


# -- one scenario, both backends, every answer equal ---------------------------------------------


async def scenario(queue: QueueCore, clock: Clock) -> list[Any]:
    """Drive a bit of everything, then collect every read answer."""
    parent = await enqueue(queue, clock, "first", command="handle", payload={"x": "é"},
                           dedupe_key="d1")
    retried = await enqueue(queue, clock, "other", max_attempts=2)
    await enqueue(queue, clock, "later")
    found = await claim(queue)
    context = ContextSpec(None, "deploy", "second", {"ductile": {"route_depth": 1}, "b": [1]})
    done = await finish(queue, found.job, successors=[
        successor("second", context=context), successor("third", event="ev2")],
        state_update=("first", {"n": 1}), claim_next=())
    assert done.next is not None and done.next.job.id == retried.id
    clock.advance(1)
    await retry(queue, done.next.job, delay=60)
    mid = await claim(queue)
    await queue.record_spawn(mid.job.id, mid.job.attempt, 77)
    await finish(queue, mid.job, "failed", result="not json", stderr="oops\n")
    await queue.interrupt((await claim(queue)).job, duration_ms=3, stderr=None)
    await claim(queue)
    await queue.recover_orphans()
    clock.advance(1)  # distinct completed_at: the log search breaks ties by (random) id
    await queue.cancel((await queue.list(status="queued"))[0][0].id, reason="stop")
    again = await enqueue(queue, clock, "later", retry_of=mid.job.id)
    clock.advance(1)
    root, branches = split_run()
    started = await queue.start_run(root, branches, result=None, reason="split")
    answers: list[Any] = []
    for job_id in (parent.id, retried.id, mid.job.id, again.id, started.job.id,
                   *(j.id for j in done.successors)):
        job = await current(queue, job_id)
        answers += [job, await queue.links(job), await queue.pipeline_run(job_id),
                    await queue.tree(job_id), await queue.log_entries(job_id),
                    await queue.attempts(job_id), await queue.transitions(job_id)]
    for status in (None, "queued", "running", "succeeded", "failed", "cancelled"):
        answers.append(await queue.list(status=status, limit=3))
    answers += [await queue.search_logs(LogFilter()),
                await queue.search_logs(LogFilter(query="oops")),
                await queue.queue_depth(), await queue.next_due_at(),
                await queue.running_counts(), await queue.outstanding_counts()]
    return answers


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(value: Any, names: dict[str, str]) -> Any:
    """`value` as plain data with each uuid renamed in order of first appearance, and the
    integer row ids of attempts and transitions dropped (a sequence may skip numbers)."""
    if is_dataclass(value) and not isinstance(value, type):
        kind = type(value).__name__
        fields = {k: v for k, v in asdict(value).items()
                  if not (k == "id" and kind in ("Attempt", "Transition"))}
        return (kind, normalised(fields, names))
    if isinstance(value, dict):
        return {k: normalised(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalised(v, names) for v in value]
    if isinstance(value, str):
        return _UUID.sub(lambda m: names.setdefault(m.group(0), f"<id{len(names)}>"), value)
    return value


async def test_both_backends_give_the_same_answers(tmp_path: Path, pg_dsn: str) -> None:
    results = []
    for backend, where in (("sqlite", str(tmp_path / "ductile.db")), ("postgresql", pg_dsn)):
        clock = Clock()
        db = await open_store(backend, where)
        try:
            results.append(normalised(await scenario(new_queue(backend, db, clock), clock), {}))
        finally:
            await db.close()
    sqlite, postgresql = results
    assert len(sqlite) == len(postgresql)
    for index, (left, right) in enumerate(zip(sqlite, postgresql)):
        assert left == right, f"answer {index} differs"
