"""Several gateways on one PostgreSQL queue: node ownership, recovery per node, fencing and
cluster-wide caps (store/pg/writes.py, store/pg/queue.py, store/pg/cluster.py).

Each "node" is its own PgDatabase pool, PgCluster registration and node-aware PgQueue, all in
this test process and on one real database, so their writes run truly in parallel in worker
threads. A node "dies" by going silent: its last heartbeat is moved an hour back in the
database (as if it had been frozen that long; real silences are timed in test_pg_cluster.py),
so a peer's `reap_dead_nodes` declares it dead by the database's clock, and no live node ever
comes near DEAD_AFTER however slow the machine running the tests.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import trio

from ductile.errors import NodeFenced, StoreError
from ductile.store.jobs import Job
from ductile.store.pg.cluster import NodeIdentity, PgCluster
from ductile.store.pg.db import JOBS_CHANNEL, PgDatabase
from ductile.store.pg.queue import PgQueue, Reaped
from ductile.store.writes import POISON_ERROR, RECOVERED_REASON
from support.store import Clock, together

#: Seconds of silence after which a node is dead in these tests; `go_silent` is far older.
DEAD_AFTER = 60.0


@dataclass
class Node:
    """One gateway: its pool, its life in the cluster and its queue."""

    db: PgDatabase
    cluster: PgCluster | None  # None: a lone gateway, not registered
    queue: PgQueue
    wakes: list[str]

    @property
    def me(self) -> NodeIdentity:
        assert self.cluster is not None
        return self.cluster.me

    async def heartbeat(self) -> bool:
        assert self.cluster is not None
        return await self.cluster.heartbeat()


class Cluster:
    """Opens nodes on one database (the same node_id again is a restart) and closes them."""

    def __init__(self, dsn: str, clock: Clock) -> None:
        self.dsn = dsn
        self.clock = clock
        self.opened: list[PgDatabase] = []

    async def node(self, node_id: str | None) -> Node:
        """A node-aware gateway, or with None a lone gateway with no node identity."""
        db = await PgDatabase.open(self.dsn, pool_size=3)
        self.opened.append(db)
        member = None
        if node_id is not None:
            member = await PgCluster.join(db, node_id, hostname="testhost", pid=1,
                                          version="0.1.0")
        wakes: list[str] = []
        queue = PgQueue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0, clock=self.clock,
                        on_enqueue=lambda: wakes.append("wake"),
                        node=member.me if member is not None else None)
        return Node(db, member, queue, wakes)

    async def close(self) -> None:
        for db in self.opened:
            await db.close()


@pytest.fixture
async def nodes(pg_dsn: str, clock: Clock) -> AsyncIterator[Cluster]:
    opened = Cluster(pg_dsn, clock)
    yield opened
    await opened.close()


async def enqueue(node: Node, clock: Clock, plugin: str = "echo", **kwargs: Any) -> Job:
    clock.advance(0.000001)  # distinct created_at: claims come in enqueue order
    return await node.queue.enqueue(plugin, "poll", {}, "api", **kwargs)


async def claim(node: Node, **kwargs: Any) -> Job:
    found = await node.queue.claim_next(**kwargs)
    assert found is not None, f"{node.me.node_id} claimed nothing"
    return found.job


async def succeed(node: Node, job: Job) -> Job:
    return await node.queue.complete(job, "succeeded", result="{}", last_error=None,
                                     stderr=None, exit_code=0, duration_ms=1, outcome="success")


async def go_silent(silent: Node, *alive: Node) -> None:
    """Make `silent`'s last heartbeat an hour old, while every node in `alive` beats."""
    await silent.db.write(lambda conn: conn.execute(
        "UPDATE cluster_nodes SET heartbeat_at = now() - interval '1 hour' "
        "WHERE node_id = %s AND incarnation = %s", (silent.me.node_id, silent.me.incarnation)))
    for node in alive:
        assert await node.heartbeat()


async def transitions(node: Node, job_id: str) -> list[tuple[str | None, str, str | None]]:
    return [(t.from_status, t.to_status, t.reason)
            for t in await node.queue.transitions(job_id)]


async def status(node: Node, job_id: str) -> str:
    job = await node.queue.get(job_id)
    assert job is not None
    return job.status


async def owner(node: Node, job_id: str) -> tuple[str | None, int | None]:
    row = await node.db.read(lambda conn: conn.execute(
        "SELECT claimed_by, claimed_incarnation FROM job_queue WHERE id = %s",
        (job_id,)).fetchone())
    return row["claimed_by"], row["claimed_incarnation"]


# -- ownership and recovery at boot -----------------------------------------------------------


async def test_a_claim_records_the_node_life_that_made_it(nodes: Cluster, clock: Clock) -> None:
    a = await nodes.node("node-a")
    lone = await nodes.node(None)
    await enqueue(a, clock)
    await enqueue(a, clock)
    mine = await claim(a)
    assert await owner(a, mine.id) == ("node-a", 1)
    assert await owner(a, (await claim(lone)).id) == (None, None)
    done = await succeed(a, mine)
    assert await owner(a, done.id) == ("node-a", 1)  # kept after the end: who ran it last


async def test_boot_recovery_takes_only_this_nodes_earlier_lives(
    nodes: Cluster, clock: Clock
) -> None:
    a1 = await nodes.node("node-a")
    b = await nodes.node("node-b")
    lone = await nodes.node(None)
    mine = await enqueue(a1, clock)
    peers = await enqueue(a1, clock)
    ownerless = await enqueue(a1, clock)
    assert (await claim(a1)).id == mine.id
    assert (await claim(b)).id == peers.id
    assert (await claim(lone)).id == ownerless.id
    a2 = await nodes.node("node-a")  # node-a restarts: a new incarnation
    assert a2.me == NodeIdentity("node-a", 2)
    recovered = {job.id: job for job in await a2.queue.recover_orphans()}
    assert set(recovered) == {mine.id, ownerless.id}
    assert (recovered[mine.id].status, recovered[mine.id].attempt) == ("queued", 2)
    assert a2.wakes == ["wake"]
    # The live peer's job was not touched, and its outcome still lands.
    assert await transitions(b, peers.id) == [
        (None, "queued", "enqueued by api"), ("queued", "running", "claimed")]
    running = await b.queue.get(peers.id)
    assert running is not None and (await succeed(b, running)).status == "succeeded"
    # What the new life claims is its own: a second recovery leaves it running.
    again = await claim(a2)
    assert again.id == mine.id and await owner(a2, mine.id) == ("node-a", 2)
    assert await a2.queue.recover_orphans() == []
    assert await status(a2, mine.id) == "running"


# -- dead nodes --------------------------------------------------------------------------------


async def test_a_dead_nodes_jobs_are_recovered_by_crash_rules_in_its_declaration(
    nodes: Cluster, clock: Clock
) -> None:
    a = await nodes.node("node-a")
    b = await nodes.node("node-b")
    spare = await enqueue(a, clock, max_attempts=3)
    spent = await enqueue(a, clock, max_attempts=1)
    waiting = await enqueue(a, clock)
    for _ in range(2):
        await claim(a)
    listener = await b.db.listen(JOBS_CHANNEL)
    received = listener.received
    await go_silent(a, b)
    reaped = await b.queue.reap_dead_nodes(DEAD_AFTER)
    assert reaped.dead == (a.me,)
    jobs = {job.id: job for job in reaped.jobs}
    assert set(jobs) == {spare.id, spent.id}
    assert (jobs[spare.id].status, jobs[spare.id].attempt, jobs[spare.id].last_error) == (
        "queued", 2, None)
    message = "Job marked dead during crash recovery: max attempts (1) reached"
    assert (jobs[spent.id].status, jobs[spent.id].attempt, jobs[spent.id].last_error) == (
        "dead", 2, message)
    [log] = await b.queue.log_entries(spent.id)
    assert (log.status, log.attempt) == ("dead", 2)
    [crashed] = await b.queue.attempts(spare.id)
    assert crashed.outcome == "crashed"
    assert crashed.error == (f"{RECOVERED_REASON}: node node-a (incarnation 1) stopped "
                             "heartbeating and was declared dead")
    assert await status(b, waiting.id) == "queued"
    assert b.wakes == ["wake"]
    with trio.fail_after(5):
        await listener.wait()  # the NOTIFY of the requeue reached the other gateways
    assert listener.received > received
    # Declared once: a second reap finds nobody, and the recovered job runs again elsewhere.
    assert await b.queue.reap_dead_nodes(DEAD_AFTER) == Reaped((), ())
    assert await a.heartbeat() is False
    assert (await claim(b)).id == spare.id


async def test_recover_dead_refuses_a_live_node_and_recovers_a_declared_one(
    nodes: Cluster, clock: Clock
) -> None:
    a = await nodes.node("node-a")
    b = await nodes.node("node-b")
    await enqueue(a, clock)
    job = await claim(a)
    with pytest.raises(StoreError, match="node node-a \\(incarnation 1\\) is alive"):
        await b.queue.recover_dead([a.me])
    assert await status(b, job.id) == "running"
    await go_silent(a, b)
    assert b.cluster is not None and await b.cluster.declare_dead(DEAD_AFTER) == [a.me]
    [recovered] = await b.queue.recover_dead([a.me])  # a declaration made outside the queue
    assert (recovered.id, recovered.status, recovered.attempt) == (job.id, "queued", 2)
    assert await b.queue.recover_dead([a.me]) == []


async def test_a_job_on_two_nodes_that_died_is_quarantined_as_poison(
    nodes: Cluster, clock: Clock
) -> None:
    a, b, c = [await nodes.node(f"node-{n}") for n in "abc"]
    job = await enqueue(a, clock, max_attempts=5)
    await claim(a)
    await go_silent(a, b, c)
    [first] = (await c.queue.reap_dead_nodes(DEAD_AFTER)).jobs
    assert (first.status, first.attempt) == ("queued", 2)
    await claim(b)
    await go_silent(b, c)
    [second] = (await c.queue.reap_dead_nodes(DEAD_AFTER)).jobs
    assert (second.status, second.attempt, second.last_error) == ("dead", 2, POISON_ERROR.format(2))
    assert [t[:2] for t in await transitions(c, job.id)] == [
        (None, "queued"), ("queued", "running"), ("running", "queued"), ("queued", "running"),
        ("running", "dead")]


async def test_two_peers_declaring_at_once_recover_each_job_once(
    nodes: Cluster, clock: Clock
) -> None:
    b = await nodes.node("node-b")
    c = await nodes.node("node-c")
    for round_ in range(4):
        victim = await nodes.node(f"victim-{round_}")
        for _ in range(5):
            await enqueue(victim, clock)
        jobs = [await claim(victim) for _ in range(5)]  # earlier rounds' recovered jobs first
        await go_silent(victim, b, c)
        first, second = await together(lambda: b.queue.reap_dead_nodes(DEAD_AFTER),
                                       lambda: c.queue.reap_dead_nodes(DEAD_AFTER))
        assert sorted([first.dead, second.dead]) == [(), (victim.me,)]
        assert sorted(job.id for job in first.jobs + second.jobs) == sorted(j.id for j in jobs)
        for job in jobs:
            # One recovery each time the job was running on a node that died, never two
            # (the second one buries it as poison).
            history = await transitions(b, job.id)
            claims = [t for t in history if t[:2] == ("queued", "running")]
            recoveries = [t for t in history if t[0] == "running"]
            assert len(recoveries) == len(claims) == job.attempt
            assert len(await b.queue.attempts(job.id)) == job.attempt


async def test_a_late_completion_racing_the_declaration_lands_or_is_refused_never_both(
    nodes: Cluster, clock: Clock
) -> None:
    """The node row is locked FOR SHARE by the completion and FOR UPDATE SKIP LOCKED by the
    declaration, before either touches a job row: the declaration either commits first (the
    completion is then refused), or finds the row locked and leaves the node to its next
    round (the completion lands; the next round recovers nothing), or runs after the
    completion committed. Never both, never a deadlock."""
    b = await nodes.node("node-b")
    for round_ in range(6):
        victim = await nodes.node(f"victim-{round_}")
        await enqueue(victim, clock)
        job = await claim(victim)
        await go_silent(victim, b)
        done, reaped = await together(lambda: succeed(victim, job),
                                      lambda: b.queue.reap_dead_nodes(DEAD_AFTER))
        if reaped.dead == ():  # skipped while the completion held the row: the next round
            assert isinstance(done, Job)
            reaped = await b.queue.reap_dead_nodes(DEAD_AFTER)
        assert reaped.dead == (victim.me,)
        final = await b.queue.get(job.id)
        assert final is not None
        if isinstance(done, Job):  # the completion committed first: nothing left to recover
            assert reaped.jobs == () and final.status == "succeeded"
        else:
            assert isinstance(done, NodeFenced), done
            assert [j.id for j in reaped.jobs] == [job.id] and final.status == "queued"
        assert len(await b.queue.log_entries(job.id)) == (1 if isinstance(done, Job) else 0)
        if final.status == "queued":  # run it elsewhere, so the next round starts afresh
            assert (await succeed(b, await claim(b))).id == job.id


# -- fencing -----------------------------------------------------------------------------------


async def test_a_fenced_nodes_late_outcomes_and_claims_are_refused(
    nodes: Cluster, clock: Clock
) -> None:
    a = await nodes.node("node-a")
    b = await nodes.node("node-b")
    job = await enqueue(a, clock, max_attempts=4)
    stale = await claim(a)
    await go_silent(a, b)
    await b.queue.reap_dead_nodes(DEAD_AFTER)
    mine = await claim(b)
    assert (mine.id, mine.attempt) == (job.id, 2)
    assert await a.heartbeat() is False  # how the fenced gateway learns it
    # Even an outcome whose attempt matches the row's is refused: a's life is over.
    late = replace(stale, attempt=mine.attempt)
    with pytest.raises(NodeFenced, match="node node-a \\(incarnation 1\\) is fenced"):
        await succeed(a, late)
    with pytest.raises(NodeFenced):
        await a.queue.retry(late, delay=0, last_error="x", exit_code=1, duration_ms=1,
                            outcome="plugin_error", stderr=None)
    with pytest.raises(NodeFenced):
        await a.queue.interrupt(late, duration_ms=1, stderr=None)
    await enqueue(b, clock, "other")
    with pytest.raises(NodeFenced, match="a claim refused"):
        await a.queue.claim_next()
    assert (await b.queue.queue_depth()) == 1  # the refused claim took nothing
    assert [t[:2] for t in await transitions(b, job.id)][-1] == ("queued", "running")
    assert (await succeed(b, mine)).status == "succeeded"


async def test_a_live_node_cannot_record_the_outcome_of_a_job_another_life_claimed(
    nodes: Cluster, clock: Clock
) -> None:
    b = await nodes.node("node-b")
    c = await nodes.node("node-c")
    await enqueue(b, clock)
    job = await claim(b)
    with pytest.raises(StoreError, match="claimed by node node-b \\(incarnation 1\\)"):
        await succeed(c, job)  # same attempt, wrong owner
    with pytest.raises(StoreError, match="claimed by node node-b"):
        await c.queue.interrupt(job, duration_ms=1, stderr=None)
    assert (await succeed(b, job)).status == "succeeded"


async def test_a_restarted_nodes_previous_life_is_fenced(nodes: Cluster, clock: Clock) -> None:
    old = await nodes.node("node-a")
    await enqueue(old, clock)
    job = await claim(old)
    new = await nodes.node("node-a")
    with pytest.raises(NodeFenced, match="incarnation 1"):
        await succeed(old, job)
    [recovered] = await new.queue.recover_orphans()
    assert (recovered.id, recovered.status) == (job.id, "queued")


# -- cluster-wide caps -------------------------------------------------------------------------


async def test_caps_hold_across_nodes_claiming_in_turn(nodes: Cluster, clock: Clock) -> None:
    a, b, c = [await nodes.node(f"node-{n}") for n in "abc"]
    caps = {"capped": 2}
    capped = [await enqueue(a, clock, "capped") for _ in range(4)]
    free = await enqueue(a, clock, "free")
    first = await claim(a, caps=caps)
    second = await claim(b, caps=caps)
    assert [first.id, second.id] == [capped[0].id, capped[1].id]
    assert (await claim(c, caps=caps)).id == free.id  # passes over the capped plugin
    assert await a.queue.claim_next(caps=caps) is None
    assert await b.queue.running_counts() == {"capped": 2, "free": 1}
    await succeed(a, first)
    assert (await claim(c, caps=caps)).id == capped[2].id
    assert await b.queue.claim_next(caps=caps) is None
    assert (await claim(b)).id == capped[3].id  # a claim without caps is not bound by them


@pytest.mark.parametrize(("cap", "plugins"), [(1, 1), (2, 1), (2, 3)],
                         ids=["cap1-one-plugin", "cap2-one-plugin", "cap2-three-plugins"])
async def test_caps_hold_with_three_nodes_claiming_concurrently(
    nodes: Cluster, clock: Clock, cap: int, plugins: int
) -> None:
    """Three nodes, two claiming tasks each, race over one capped plugin (every claim
    contends for its lock) or three (less contention). After every claim the running count of
    the claimed plugin is read back in its own snapshot: it never exceeds the cap, it does
    reach it (the race was real), and every job runs exactly once."""
    members = [await nodes.node(f"node-{n}") for n in "abc"]
    names = [f"p{n}" for n in range(plugins)]
    caps = {name: cap for name in names}
    jobs = [await enqueue(members[0], clock, names[n % plugins]) for n in range(24 * plugins)]
    samples: dict[str, list[int]] = {name: [] for name in names}
    ran: list[str] = []

    async def worker(node: Node, rng: random.Random) -> None:
        idle = 0
        while len(ran) < len(jobs) and idle < 400:
            found = await node.queue.claim_next(caps=caps)
            if found is None:
                idle += 1
                await trio.sleep(0.002)
                continue
            job = found.job
            running = await node.queue.running_counts()
            samples[job.plugin].append(running.get(job.plugin, 0))
            await trio.sleep(rng.random() * 0.01)  # the "plugin" runs
            await succeed(node, job)
            ran.append(job.id)

    async with trio.open_nursery() as nursery:
        for index, node in enumerate(members):
            for lane in range(2):
                nursery.start_soon(worker, node, random.Random(index * 10 + lane))
    assert sorted(ran) == sorted(job.id for job in jobs)  # each once, none left behind
    for name in names:
        assert max(samples[name]) <= cap, samples[name]
        assert max(samples[name]) == cap, f"{name} never reached its cap: {samples[name]}"
    assert await members[1].queue.running_counts() == {}


