"""PgQueue across gateways: what only a shared PostgreSQL database can get wrong.

tests/test_store_contract.py holds both backends to the same answers one caller at a time.
Here two "gateways" (two PgDatabase pools, two PgQueues) work one database at once, their
writes running truly in parallel in worker threads, and the guarantees SQLite gets from its
single writer must still hold: a job is claimed once, a dedupe key or a redelivered event lets
one enqueue through, a job is retried once, state merges do not lose keys, a row another node
changed is refused, and every commit that makes a job claimable wakes the other node (NOTIFY).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from ductile.errors import DedupeDropped, JobStateConflict, SourceEventConflict, StoreError
from ductile.store.jobs import Job
from ductile.store.pg.db import JOBS_CHANNEL, PgDatabase
from ductile.store.pg.queue import PgQueue
from ductile.store.queue import Successor
from support.store import Clock, together


@pytest.fixture
async def nodes(pg_dsn: str, clock: Clock) -> AsyncIterator[tuple[PgQueue, PgQueue]]:
    """Two gateways on one database, sharing the hand-moved clock."""
    first = await PgDatabase.open(pg_dsn)
    second = await PgDatabase.open(pg_dsn)
    queues = tuple(
        PgQueue(db, snapshot_id=lambda: "cfg", dedupe_ttl=3600, clock=clock)
        for db in (first, second)
    )
    yield queues  # type: ignore[misc]
    await first.close()
    await second.close()


async def succeed(queue: PgQueue, job: Job, **extra: Any) -> Job:
    return await queue.complete(job, "succeeded", result="{}", last_error=None, stderr=None,
                                exit_code=0, duration_ms=1, outcome="success", **extra)


async def test_two_gateways_never_claim_the_same_job(
    nodes: tuple[PgQueue, PgQueue], clock: Clock
) -> None:
    a, b = nodes
    enqueued = []
    for n in range(40):
        clock.advance(0.000001)
        enqueued.append((await a.enqueue("echo", "poll", {"n": n}, "api")).id)
    claimed: list[str] = []

    async def drain(queue: PgQueue) -> None:
        while (found := await queue.claim_next()) is not None:
            claimed.append(found.job.id)

    async with trio.open_nursery() as nursery:
        for queue in (a, b, a, b):
            nursery.start_soon(drain, queue)
    assert sorted(claimed) == sorted(enqueued) and len(set(claimed)) == len(claimed)
    assert await a.queue_depth() == 0
    assert sum((await b.running_counts()).values()) == 40
    for job_id in enqueued:  # one claim each: one queued -> running edge, one attempt row
        assert [(t.from_status, t.to_status) for t in await a.transitions(job_id)] == [
            (None, "queued"), ("queued", "running")]
        assert len(await b.attempts(job_id)) == 1


async def test_one_of_two_concurrent_enqueues_with_one_dedupe_key_lands(
    nodes: tuple[PgQueue, PgQueue],
) -> None:
    a, b = nodes
    for round_ in range(10):
        key = f"k{round_}"
        results = await together(
            *(lambda q=q: q.enqueue("echo", "poll", {}, "api", dedupe_key=key)
              for q in (a, b, a, b)))
        landed = [r for r in results if isinstance(r, Job)]
        dropped = [r for r in results if isinstance(r, DedupeDropped)]
        assert len(landed) == 1 and len(dropped) == 3, results
        assert {d.existing_job_id for d in dropped} == {landed[0].id}
    assert (await a.list())[1] == 10


async def test_one_of_two_concurrent_redeliveries_lands(nodes: tuple[PgQueue, PgQueue]) -> None:
    a, b = nodes
    for round_ in range(10):
        results = await together(*(
            lambda q=q: q.enqueue("echo", "poll", {}, "route", parent_job_id="p",
                                  source_event_id=f"ev{round_}")
            for q in (a, b, a, b)))
        assert sum(isinstance(r, Job) for r in results) == 1, results
        assert sum(isinstance(r, SourceEventConflict) for r in results) == 3, results


async def test_a_failed_job_is_retried_once_across_gateways(
    nodes: tuple[PgQueue, PgQueue],
) -> None:
    a, b = nodes
    for _ in range(8):
        old = await a.enqueue("echo", "poll", {}, "api")
        found = await a.claim_next()
        assert found is not None
        await a.complete(found.job, "failed", result=None, last_error="boom", stderr=None,
                         exit_code=1, duration_ms=1, outcome="plugin_error")
        results = await together(*(
            lambda q=q: q.enqueue("echo", "poll", {}, "api", retry_of=old.id)
            for q in (a, b, a, b)))
        [new] = [r for r in results if isinstance(r, Job)]
        assert all(isinstance(r, JobStateConflict) for r in results if r is not new), results
        assert (await b.links(old)).retried_as == new.id
        await a.cancel(new.id)


async def test_concurrent_state_merges_of_one_plugin_lose_no_key(
    nodes: tuple[PgQueue, PgQueue], clock: Clock
) -> None:
    a, b = nodes
    for n in range(8):
        clock.advance(0.000001)
        await a.enqueue("echo", "poll", {"n": n}, "api")
    jobs = [found.job for found in [await (a if n % 2 else b).claim_next() for n in range(8)]
            if found is not None]
    await together(*(lambda q=q, job=job, n=n: succeed(q, job, state_update=("echo", {f"k{n}": n}))
                     for n, (q, job) in enumerate(zip([a, b] * 4, jobs))))
    await a.enqueue("echo", "probe", {}, "api")
    probe = await b.claim_next()
    assert probe is not None and probe.state == {f"k{n}": n for n in range(8)}


async def test_completions_whose_successors_share_keys_never_deadlock(
    nodes: tuple[PgQueue, PgQueue], clock: Clock
) -> None:
    """Successor keys k1, k2 on one gateway and k2, k1 on the other: both completions commit
    (one enqueues the pair, the other's are dropped as outstanding), neither is the victim of
    a deadlock."""
    a, b = nodes

    def step(key: str) -> Successor:
        return Successor(plugin="next", command="handle", payload={}, submitted_by="route",
                         source_event_id=None, context=None, max_attempts=1, dedupe_key=key)

    for round_ in range(3):
        keys = [f"r{round_}k{n}" for n in range(6)]
        for _ in range(2):
            clock.advance(0.000001)
            await a.enqueue("first", "handle", {}, "api")
        first, second = await a.claim_next(), await b.claim_next()
        assert first is not None and second is not None
        results = await together(
            lambda: succeed(a, first.job, successors=[step(k) for k in keys]),
            lambda: succeed(b, second.job, successors=[step(k) for k in reversed(keys)]),
        )
        assert all(isinstance(r, Job) and r.status == "succeeded" for r in results), results
        assert await a.queue_depth() == len(keys)
        while (found := await a.claim_next()) is not None:
            await succeed(a, found.job)


async def test_a_row_another_gateway_changed_is_refused_never_overwritten(
    nodes: tuple[PgQueue, PgQueue],
) -> None:
    """Gateway A holds a running job; gateway B's recovery requeues it and claims it again.
    A's late outcome is refused and B's attempt stands."""
    a, b = nodes
    await a.enqueue("echo", "poll", {}, "api")
    held = await a.claim_next()
    assert held is not None
    await b.recover_orphans()
    again = await b.claim_next()
    assert again is not None and again.job.attempt == 2
    with pytest.raises(StoreError, match="attempt 1 is stale"):
        await succeed(a, held.job)
    assert await a.get(held.job.id) == again.job
    done = await succeed(b, again.job)
    assert [log.attempt for log in await a.log_entries(done.id)] == [2]


async def test_every_commit_that_makes_a_job_claimable_wakes_the_other_gateway(
    pg_dsn: str, nodes: tuple[PgQueue, PgQueue], clock: Clock
) -> None:
    a, _ = nodes
    db = await PgDatabase.open(pg_dsn, pool_size=1)
    listener = await db.listen(JOBS_CHANNEL)

    async def woken() -> bool:
        with trio.move_on_after(5):
            await listener.wait()
            return True
        return False

    async def quiet() -> bool:
        with trio.move_on_after(0.3):
            await listener.wait()
            return False
        return True

    try:
        first = await a.enqueue("echo", "poll", {}, "api", dedupe_key="k")
        assert await woken()  # enqueue
        with pytest.raises(DedupeDropped):
            await a.enqueue("echo", "poll", {}, "api", dedupe_key="k")
        assert await quiet()  # nothing committed, nothing claimable
        found = await a.claim_next()
        assert found is not None
        assert await quiet()  # a claim makes nothing claimable
        await a.retry(found.job, delay=0, last_error="x", exit_code=1, duration_ms=1,
                      outcome="plugin_error", stderr=None)
        assert await woken()  # retry
        found = await a.claim_next()
        assert found is not None and found.job.id == first.id
        step = Successor(plugin="next", command="handle", payload={}, submitted_by="route",
                         source_event_id="e1", context=None, max_attempts=2)
        await succeed(a, found.job, successors=[step])
        assert await woken()  # successors
        await a.claim_next()
        [requeued] = await a.recover_orphans()
        assert requeued.status == "queued"
        assert await woken()  # recovery requeued it
    finally:
        await listener.aclose()
        await db.close()
