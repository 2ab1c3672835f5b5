"""The job queue: enqueue, dedupe, claim, complete, retry, cancel, interrupt, recovery, the
operator's retry links and the ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ductile.errors import (
    DedupeDropped,
    InvalidTransition,
    JobNotFound,
    JobStateConflict,
    SourceEventConflict,
    StoreError,
)
from ductile.machines import load_machine
from ductile.store import Database, Queue, Snapshots, StateStore, open_readonly, read_job_ledger
from ductile.store.jobs import Job, format_time
from support.store import Clock


@pytest.fixture
def queue(db: Database, clock: Clock) -> Queue:
    return Queue(
        db,
        snapshot_id=lambda: "cfg_live",
        dedupe_ttl=3600,
        on_enqueue=lambda: clock.wakes.append("wake"),
        clock=clock,
    )


async def enqueue(
    queue: Queue,
    clock: Clock,
    plugin: str = "echo",
    *,
    command: str = "poll",
    payload: Any = {"n": 1},
    **kwargs: Any,
) -> Job:
    """Enqueue one job, moving the clock a microsecond so created_at orders are distinct."""
    clock.advance(0.000001)
    return await queue.enqueue(plugin, command, payload, "api", **kwargs)


async def claim(queue: Queue) -> Job:
    """Claim the next job, which the test expects to exist."""
    job = await queue.claim()
    assert job is not None
    return job


async def current(queue: Queue, job_id: str) -> Job:
    job = await queue.get(job_id)
    assert job is not None
    return job


async def succeed(queue: Queue, job: Job, result: str = '{"ok":true}') -> Job:
    return await queue.complete(
        job, "succeeded", result=result, last_error=None, stderr=None, exit_code=0,
        duration_ms=5, outcome="success",
    )


async def fail_and_retry(queue: Queue, job: Job, *, delay: float = 0.0) -> Job:
    return await queue.retry(
        job, delay=delay, last_error="plugin said no", exit_code=1, duration_ms=7,
        outcome="plugin_error", stderr="trace\n",
    )


def test_the_job_machine_declares_the_statuses_and_edges() -> None:
    spec = load_machine("job")
    assert spec.initial == "new"
    assert set(spec.terminal) == {"succeeded", "failed", "timed_out", "dead", "skipped",
                                  "cancelled"}
    assert set(spec.failure) == {"failed", "timed_out", "dead"}
    assert set(spec.retryable) == {"failed", "timed_out", "dead", "cancelled"}
    assert spec.allowed(None, "queued")
    assert spec.allowed("queued", "running")
    assert spec.allowed("running", "queued")
    assert spec.allowed("queued", "cancelled")
    assert not spec.allowed("queued", "dead")  # dead is crash recovery's alone now
    for status in spec.terminal:
        assert spec.allowed("running", status)
        assert not spec.allowed("queued", status) or status == "cancelled"
        assert not any(spec.allowed(status, other) for other in spec.states)


async def test_a_queued_job_cannot_be_completed_as_cancelled(queue: Queue, clock: Clock) -> None:
    """queued -> cancelled is an edge, but only for `cancel`: complete needs a running job."""
    job = await enqueue(queue, clock)
    with pytest.raises(InvalidTransition, match="queued -> cancelled"):
        await queue.complete(
            job, "cancelled", result=None, last_error="x", stderr=None, exit_code=None,
            duration_ms=None, outcome="cancelled",
        )
    assert (await current(queue, job.id)).status == "queued"


async def test_the_dispatcher_can_no_longer_complete_a_job_as_dead(
    queue: Queue, clock: Clock
) -> None:
    """running -> dead is crash recovery's `recover` only: a stop that was asked for is
    `cancelled`, a failure `failed`."""
    await enqueue(queue, clock)
    running = await claim(queue)
    with pytest.raises(InvalidTransition, match="running -> dead"):
        await queue.complete(running, "dead", result=None, last_error="x", stderr=None,
                             exit_code=None, duration_ms=None, outcome="gave_up")


async def test_enqueue_stores_a_queued_job_with_the_live_snapshot(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock, payload={"b": [1, 2], "a": "é"})
    assert job.status == "queued"
    assert job.attempt == 1 and job.max_attempts == 4
    assert job.payload == '{"b":[1,2],"a":"é"}'
    assert job.payload_obj() == {"b": [1, 2], "a": "é"}
    assert job.enqueued_config_snapshot_id == "cfg_live"
    assert job.created_at == format_time(clock.now)
    assert await queue.get(job.id) == job
    assert clock.wakes == ["wake"]
    [transition] = await queue.transitions(job.id)
    assert (transition.from_status, transition.to_status) == (None, "queued")


async def test_enqueue_accepts_no_payload_and_defaults_bad_max_attempts(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock, payload=None, max_attempts=0)
    assert job.payload is None and job.payload_obj() is None
    assert job.max_attempts == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "poll", {}, "api"), "plugin is empty"),
        (("echo", " ", {}, "api"), "command is empty"),
        (("echo", "poll", {}, ""), "submitted_by is empty"),
        (("echo", "poll", {"x": float("nan")}, "api"), "payload is not JSON-serialisable"),
        (("echo", "poll", {"x": object()}, "api"), "payload is not JSON-serialisable"),
    ],
)
async def test_enqueue_refuses_bad_input(queue: Queue, args: tuple, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await queue.enqueue(*args)
    assert (await queue.list())[1] == 0


async def test_claim_complete_round_trip_writes_log_attempt_and_transitions(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    clock.advance(1)
    claimed = await claim(queue)
    assert claimed.id == job.id
    assert claimed.status == "running"
    assert claimed.started_at == format_time(clock.now)
    assert claimed.started_config_snapshot_id == "cfg_live"
    await queue.record_spawn(job.id, 1, 4242)
    clock.advance(2)
    done = await queue.complete(
        claimed, "succeeded", result='{"status":"ok"}', last_error=None, stderr="warn\n",
        exit_code=0, duration_ms=2000, outcome="success",
    )
    assert done.status == "succeeded"
    assert done.completed_at == format_time(clock.now)
    [log] = await queue.log_entries(job.id)
    assert log.id == f"{job.id}-1"
    assert (log.status, log.result, log.stderr, log.exit_code) == (
        "succeeded", '{"status":"ok"}', "warn\n", 0
    )
    assert log.enqueued_config_snapshot_id == log.started_config_snapshot_id == "cfg_live"
    [attempt] = await queue.attempts(job.id)
    assert (attempt.attempt, attempt.pid, attempt.duration_ms, attempt.exit_code) == (
        1, 4242, 2000, 0
    )
    assert attempt.outcome == "success" and attempt.stderr_tail == "warn\n"
    assert attempt.finished_at == done.completed_at
    statuses = [(t.from_status, t.to_status) for t in await queue.transitions(job.id)]
    assert statuses == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert done.to_api(log.result) == {
        "job_id": job.id, "status": "succeeded", "plugin": "echo", "command": "poll",
        "result": {"status": "ok"}, "started_at": claimed.started_at,
        "completed_at": done.completed_at, "attempt": 1, "max_attempts": 4,
        "submitted_by": "api", "created_at": job.created_at,
    }


async def test_claim_on_an_empty_queue_returns_none(queue: Queue) -> None:
    assert await queue.claim() is None


async def test_claim_is_fifo_by_created_at(queue: Queue, clock: Clock) -> None:
    jobs = [await enqueue(queue, clock, payload={"i": i}) for i in range(5)]
    claimed = [await claim(queue) for _ in range(5)]
    assert [j.id for j in claimed] == [j.id for j in jobs]
    assert await queue.claim() is None


async def test_claim_skips_plugins_at_their_limit(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock, plugin="busy")
    other = await enqueue(queue, clock, plugin="idle")
    claimed = await queue.claim(skip_plugins={"busy"})
    assert claimed is not None and claimed.id == other.id
    assert await queue.claim(skip_plugins=["busy"]) is None
    assert await queue.running_counts() == {"idle": 1}


async def test_the_dedupe_key_is_a_concurrency_key_per_target(queue: Queue, clock: Clock) -> None:
    first = await enqueue(queue, clock, dedupe_key="k")
    with pytest.raises(DedupeDropped):
        await enqueue(queue, clock, dedupe_key="k")  # same key and target: never two at once
    sibling = await enqueue(queue, clock, plugin="other", dedupe_key="k")
    assert (await claim(queue)).id == first.id
    assert (await claim(queue)).id == sibling.id
    assert await queue.claim() is None


async def test_retry_requeues_with_backoff_and_keeps_fifo_place(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    later = await enqueue(queue, clock)
    running = await claim(queue)
    retried = await fail_and_retry(queue, running, delay=30)
    assert (retried.status, retried.attempt, retried.last_error) == ("queued", 2, "plugin said no")
    assert retried.next_retry_at == format_time(clock.now + timedelta(seconds=30))
    assert retried.created_at == job.created_at
    assert await queue.next_due_at() == clock.now + timedelta(seconds=30)
    assert (await claim(queue)).id == later.id
    clock.advance(29)
    assert await queue.claim() is None  # not due yet
    clock.advance(1)
    again = await claim(queue)
    assert (again.id, again.attempt) == (job.id, 2)
    assert await queue.next_due_at() is None
    attempts = await queue.attempts(job.id)
    assert [(a.attempt, a.outcome, a.exit_code) for a in attempts] == [
        (1, "plugin_error", 1), (2, None, None)
    ]
    assert attempts[0].error == "plugin said no" and attempts[0].stderr_tail == "trace\n"
    assert await queue.log_entries(job.id) == []  # no job_log row for a retried attempt


async def test_retry_on_the_last_attempt_is_refused(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock, max_attempts=2)
    first = await claim(queue)
    await fail_and_retry(queue, first)
    second = await claim(queue)
    assert second.attempt == 2
    with pytest.raises(StoreError, match="attempt 2 of 2 was the last"):
        await fail_and_retry(queue, second)
    assert (await current(queue, second.id)).status == "running"


async def test_completing_a_queued_job_is_an_invalid_transition(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    with pytest.raises(InvalidTransition) as info:
        await succeed(queue, job)
    assert (info.value.from_status, info.value.to_status) == ("queued", "succeeded")
    assert (await current(queue, job.id)).status == "queued"
    assert len(await queue.transitions(job.id)) == 1


async def test_a_terminal_job_cannot_change_again(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock)
    job = await claim(queue)
    done = await succeed(queue, job)
    with pytest.raises(InvalidTransition, match="succeeded -> failed is not allowed"):
        await queue.complete(
            done, "failed", result=None, last_error="x", stderr=None, exit_code=1,
            duration_ms=1, outcome="plugin_error",
        )
    with pytest.raises(InvalidTransition, match="succeeded -> queued"):
        await fail_and_retry(queue, done)


async def test_complete_refuses_a_non_terminal_status(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock)
    job = await claim(queue)
    with pytest.raises(StoreError, match="invalid terminal status: 'queued'"):
        await queue.complete(
            job, "queued", result=None, last_error=None, stderr=None,
            exit_code=None, duration_ms=None, outcome="x",
        )


async def test_a_stale_attempt_cannot_complete_the_job(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock)
    first = await claim(queue)
    await queue.recover_orphans()
    await claim(queue)
    with pytest.raises(StoreError, match="attempt 1 is stale"):
        await succeed(queue, first)


async def test_stderr_is_capped_in_the_log_and_tailed_in_the_attempt(
    queue: Queue, clock: Clock
) -> None:
    await enqueue(queue, clock)
    job = await claim(queue)
    stderr = "a" * 70_000 + "THE END"
    await queue.complete(
        job, "failed", result=None, last_error="boom", stderr=stderr,
        exit_code=2, duration_ms=1, outcome="plugin_error",
    )
    [log] = await queue.log_entries(job.id)
    assert log.stderr == "a" * 65536
    [attempt] = await queue.attempts(job.id)
    assert len(attempt.stderr_tail) == 4096 and attempt.stderr_tail.endswith("THE END")


async def test_undecodable_stderr_is_stored_as_valid_text(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock)
    job = await claim(queue)
    raw = b"bad \xff byte".decode("utf-8", "surrogateescape")
    await queue.complete(
        job, "failed", result=None, last_error="boom", stderr=raw, exit_code=1,
        duration_ms=1, outcome="plugin_error",
    )
    [log] = await queue.log_entries(job.id)
    assert log.stderr == "bad ? byte"


async def test_complete_merges_state_in_the_same_transaction(
    db: Database, queue: Queue, clock: Clock
) -> None:
    states = StateStore(db)
    await states.merge("echo", {"keep": 1, "cursor": "a"})
    await enqueue(queue, clock)
    job = await claim(queue)
    await queue.complete(
        job, "succeeded", result="{}", last_error=None, stderr=None,
        exit_code=0, duration_ms=1, outcome="success",
        state_update=("echo", {"cursor": "b", "nested": {"x": 1}}),
    )
    assert await states.get("echo") == {"keep": 1, "cursor": "b", "nested": {"x": 1}}


async def test_an_oversized_state_update_writes_nothing(
    db: Database, queue: Queue, clock: Clock
) -> None:
    await enqueue(queue, clock)
    job = await claim(queue)
    with pytest.raises(StoreError, match=r"plugin state exceeds max size \(1048576 bytes\)"):
        await queue.complete(
            job, "succeeded", result="{}", last_error=None, stderr=None,
            exit_code=0, duration_ms=1, outcome="success",
            state_update=("echo", {"blob": "x" * (1024 * 1024)}),
        )
    assert (await current(queue, job.id)).status == "running"
    assert await queue.log_entries(job.id) == []
    assert await StateStore(db).get("echo") == {}
    failed = await queue.complete(
        job, "failed", result=None, last_error="plugin state exceeds max size",
        stderr=None, exit_code=0, duration_ms=1, outcome="state_error",
    )
    assert failed.status == "failed"


async def test_dedupe_drops_a_duplicate_of_an_outstanding_job(queue: Queue,
                                                               clock: Clock) -> None:
    first = await enqueue(queue, clock, dedupe_key="echo:poll:s1", dedupe_ttl=60)
    for ttl in (None, 60):  # with or without a TTL override
        with pytest.raises(DedupeDropped) as info:
            await enqueue(queue, clock, dedupe_key=" echo:poll:s1 ", dedupe_ttl=ttl)
        assert info.value.reason == "outstanding"
        assert info.value.existing_job_id == first.id
    await enqueue(queue, clock, command="health", dedupe_key="echo:poll:s1", dedupe_ttl=60)
    assert (await queue.list())[1] == 2


async def test_dedupe_recent_success_honours_the_ttl(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock, dedupe_key="k")
    job = await claim(queue)
    done = await succeed(queue, job)
    with pytest.raises(DedupeDropped) as info:
        await enqueue(queue, clock, dedupe_key="k")
    assert (info.value.reason, info.value.existing_job_id) == ("recent_success", done.id)
    await enqueue(queue, clock, plugin="other", dedupe_key="k")  # scoped by target
    clock.advance(3601)
    again = await enqueue(queue, clock, dedupe_key="k")  # expired
    assert (await claim(queue)).plugin == "other"
    claimed = await claim(queue)
    assert claimed.id == again.id
    await succeed(queue, claimed)
    await enqueue(queue, clock, dedupe_key="k", dedupe_ttl=0)  # a zero TTL disables it


async def test_a_failed_job_does_not_dedupe(queue: Queue, clock: Clock) -> None:
    await enqueue(queue, clock, dedupe_key="k")
    job = await claim(queue)
    await queue.complete(
        job, "failed", result=None, last_error="x", stderr=None,
        exit_code=1, duration_ms=1, outcome="plugin_error",
    )
    await enqueue(queue, clock, dedupe_key="k")


async def test_a_redelivered_routed_event_is_a_source_event_conflict(
    queue: Queue, clock: Clock
) -> None:
    await enqueue(queue, clock, parent_job_id="p1", source_event_id="ev1")
    await enqueue(queue, clock, plugin="b", parent_job_id="p1", source_event_id="ev1")
    with pytest.raises(SourceEventConflict, match=r"parent 'p1', source_event 'ev1'.*echo/poll"):
        await enqueue(queue, clock, parent_job_id="p1", source_event_id="ev1")
    assert (await queue.list())[1] == 2


async def test_cancel_ends_a_queued_job_cancelled(queue: Queue, clock: Clock) -> None:
    job = await enqueue(queue, clock)
    done = await queue.cancel(job.id, reason="cancelled by scheduler (if_running=cancel)")
    assert (done.status, done.last_error) == (
        "cancelled", "cancelled by scheduler (if_running=cancel)")
    assert done.completed_at is not None
    assert [e.status for e in await queue.log_entries(job.id)] == ["cancelled"]
    [*_, last] = await queue.transitions(job.id)
    assert (last.from_status, last.to_status, last.reason) == (
        "queued", "cancelled", "cancelled by scheduler (if_running=cancel)")
    assert await queue.claim() is None
    await enqueue(queue, clock)
    running = await claim(queue)
    with pytest.raises(InvalidTransition, match="running -> cancelled"):
        await queue.cancel(running.id)
    with pytest.raises(JobNotFound, match="job nope not found"):
        await queue.cancel("nope")


async def test_a_running_job_is_completed_cancelled_under_the_cancel_edge(
    queue: Queue, clock: Clock
) -> None:
    """What the dispatcher writes after stopping a plugin: a terminal attempt like any other
    (log row, finished attempt), recorded as `stop`, never `complete`."""
    await enqueue(queue, clock)
    running = await claim(queue)
    done = await queue.complete(running, "cancelled", result=None,
                                last_error="cancelled by operator", stderr="bye\n",
                                exit_code=None, duration_ms=12, outcome="cancelled")
    assert (done.status, done.last_error) == ("cancelled", "cancelled by operator")
    [attempt] = await queue.attempts(running.id)
    assert (attempt.outcome, attempt.stderr_tail) == ("cancelled", "bye\n")
    [*_, last] = await queue.transitions(running.id)
    assert (last.to_status, last.reason) == ("cancelled", "cancelled: cancelled by operator")


async def test_an_interrupted_job_is_requeued_without_spending_an_attempt(
    queue: Queue, clock: Clock
) -> None:
    """A clean stop whose grace ran out: the job waits for the next start, the cut attempt
    stays in the ledger as `interrupted`, it costs no retry (attempt and max_attempts + 1)
    and no poison-job strike: two interrupts then a crash still only requeue it."""
    job = await enqueue(queue, clock, max_attempts=2)
    running = await claim(queue)
    again = await queue.interrupt(running, duration_ms=30_000, stderr=None)
    assert (again.status, again.attempt, again.max_attempts, again.last_error) == (
        "queued", 2, 3, None)
    [cut] = await queue.attempts(job.id)
    assert (cut.attempt, cut.outcome, cut.duration_ms) == (1, "interrupted", 30_000)
    [*_, last] = await queue.transitions(job.id)
    assert (last.from_status, last.to_status) == ("running", "queued")
    assert last.reason is not None and last.reason.startswith("interrupted by shutdown")
    await queue.interrupt(await claim(queue), duration_ms=1, stderr=None)
    await claim(queue)
    [recovered] = await queue.recover_orphans()  # the first crash it ever saw: no quarantine
    assert recovered.status == "queued"
    with pytest.raises(InvalidTransition, match="queued -> queued"):
        await queue.interrupt(recovered, duration_ms=1, stderr=None)


async def test_a_retry_links_both_ways_and_only_once(queue: Queue, clock: Clock) -> None:
    old = await enqueue(queue, clock, dedupe_key="k", parent_job_id="p", event_context_id=None)
    with pytest.raises(JobStateConflict, match=r"is queued: only a job that is failed, "):
        await enqueue(queue, clock, retry_of=old.id)
    await queue.complete(await claim(queue), "failed", result=None, last_error="boom",
                         stderr=None, exit_code=1, duration_ms=1, outcome="plugin_error")
    new = await enqueue(queue, clock, dedupe_key="k", retry_of=old.id)
    assert new.retry_of == old.id and (await current(queue, new.id)).retry_of == old.id
    [enqueued] = await queue.transitions(new.id)
    assert enqueued.reason == f"enqueued by api: retry of {old.id}"
    assert (await queue.links(await current(queue, old.id))).as_dict() == {
        "retried_as": new.id}
    assert (await queue.links(new)).as_dict() == {"retry_of": old.id}
    with pytest.raises(JobStateConflict, match=f"already retried as job {new.id}"):
        await enqueue(queue, clock, retry_of=old.id)
    with pytest.raises(JobNotFound):
        await enqueue(queue, clock, retry_of="missing")


async def test_recover_orphans_requeues_or_kills_by_attempts(queue: Queue, clock: Clock) -> None:
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
        "queued", 2, None, None
    )
    dead = recovered[spent.id]
    message = "Job marked dead during crash recovery: max attempts (1) reached"
    assert (dead.status, dead.attempt, dead.last_error) == ("dead", 2, message)
    [log] = await queue.log_entries(spent.id)
    assert (log.id, log.status, log.last_error) == (f"{spent.id}-2", "dead", message)
    reasons = [t.reason for t in await queue.transitions(fresh.id)]
    assert reasons[-1] == "recovered after crash"
    [crashed] = await queue.attempts(spent.id)
    assert crashed.outcome == "crashed" and crashed.finished_at is not None
    assert (await current(queue, waiting.id)).status == "queued"
    assert clock.wakes == ["wake"]
    assert await queue.recover_orphans() == []


async def test_list_is_newest_first_with_filters_and_a_total(queue: Queue, clock: Clock) -> None:
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


async def test_the_ledger_reads_on_a_read_only_connection_with_its_snapshot(
    db: Database, clock: Clock, tmp_path: Path
) -> None:
    snapshot_id = await Snapshots(db).record(
        {"config_hash": "blake2b:abc", "semantics": {"retry_policy_owner": "core"}},
        reason="startup", version="0.1.0", binary_path="/usr/bin/ductile",
    )
    queue = Queue(db, snapshot_id=lambda: snapshot_id, dedupe_ttl=0, clock=clock)
    job = await enqueue(queue, clock)
    await succeed(queue, await claim(queue))
    conn = open_readonly(db.path)
    try:
        ledger = read_job_ledger(conn, job.id)
        assert read_job_ledger(conn, "missing") is None
    finally:
        conn.close()
    assert ledger is not None
    assert ledger["job"].status == "succeeded"
    assert [a.attempt for a in ledger["attempts"]] == [1]
    assert [t.to_status for t in ledger["transitions"]] == ["queued", "running", "succeeded"]
    assert [entry.result for entry in ledger["logs"]] == ['{"ok":true}']
    assert ledger["snapshot"]["id"] == snapshot_id
    assert ledger["snapshot"]["semantics"] == {"retry_policy_owner": "core"}
    assert ledger["started_snapshot"]["config_hash"] == "blake2b:abc"


async def test_to_api_leaves_out_absent_result_and_shows_last_error(
    queue: Queue, clock: Clock
) -> None:
    job = await enqueue(queue, clock)
    body = job.to_api()
    assert "result" not in body and "last_error" not in body
    assert body["started_at"] is None and body["completed_at"] is None
    running = await claim(queue)
    failed = await queue.complete(
        running, "failed", result="not json", last_error="boom", stderr=None,
        exit_code=1, duration_ms=1, outcome="plugin_error",
    )
    body = failed.to_api("not json")
    assert body["result"] == "not json" and body["last_error"] == "boom"
    assert json.dumps(body)
