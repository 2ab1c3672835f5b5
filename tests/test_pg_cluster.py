"""Several gateways on one PostgreSQL (store/pg/cluster.py), against a real cluster: node
incarnations, heartbeats and fencing, the scheduler lease and its terms, and fires recorded
once per (schedule, instant) even with two would-be leaders racing."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator

import pytest
import trio

from ductile.store.pg import cluster
from ductile.store.pg.cluster import SCHEDULER_LEASE, NodeIdentity, PgCluster
from ductile.store.pg.db import PgDatabase


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase.open(pg_dsn, pool_size=4)
    yield database
    await database.close()


async def join(db: PgDatabase, node_id: str) -> PgCluster:
    return await PgCluster.join(db, node_id, hostname="testhost", pid=4242, version="0.1.0")


async def test_a_restart_is_a_new_incarnation_and_nodes_lists_it(db: PgDatabase) -> None:
    first = await join(db, "node-a")
    again = await join(db, "node-a")
    other = await join(db, "node-b")
    assert (first.me, again.me, other.me) == (
        NodeIdentity("node-a", 1), NodeIdentity("node-a", 2), NodeIdentity("node-b", 1))
    listed = {n.node_id: n for n in await again.nodes()}
    assert listed["node-a"].incarnation == 2
    assert listed["node-a"].status == "alive"
    assert listed["node-a"].heartbeat_age_s < 5
    assert listed["node-a"].started_at.endswith("Z")
    # The old life is fenced: its heartbeat matches no live row.
    assert await first.heartbeat() is False
    assert await again.heartbeat() is True


async def test_a_silent_node_is_declared_dead_once_and_is_fenced(db: PgDatabase) -> None:
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    await trio.sleep(0.3)
    assert await b.heartbeat()
    # Only a is older than the threshold; b just beat.
    assert await b.declare_dead(0.2) == [a.me]
    assert await b.declare_dead(0.2) == []  # declared once
    assert await a.heartbeat() is False
    statuses = {n.node_id: n.status for n in await b.nodes()}
    assert statuses == {"node-a": "dead", "node-b": "alive"}
    # A dead node that restarts is alive again as a new incarnation.
    back = await join(db, "node-a")
    assert back.me.incarnation == 2 and await back.heartbeat()


async def test_a_clean_stop_is_not_death_and_frees_the_lease(db: PgDatabase) -> None:
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    assert await a.acquire(SCHEDULER_LEASE, 30) is not None
    assert await b.acquire(SCHEDULER_LEASE, 30) is None
    await a.retire()
    assert {n.node_id: n.status for n in await b.nodes()}["node-a"] == "stopped"
    assert await b.declare_dead(0.0) == [b.me]  # only live nodes can be declared dead
    taken = await join(db, "node-c")
    lease = await taken.acquire(SCHEDULER_LEASE, 30)
    assert lease is not None and lease.term == 2


async def test_lease_renewal_keeps_the_term_and_a_takeover_raises_it(db: PgDatabase) -> None:
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    first = await a.acquire(SCHEDULER_LEASE, 0.4)
    assert first is not None and first.term == 1 and 0 < first.expires_in_s <= 0.4
    assert await b.acquire(SCHEDULER_LEASE, 0.4) is None
    renewed = await a.acquire(SCHEDULER_LEASE, 0.4)
    assert renewed is not None and renewed.term == 1
    await trio.sleep(0.5)  # a stops renewing (frozen): the lease expires by the database's clock
    taken = await b.acquire(SCHEDULER_LEASE, 5)
    assert taken is not None and taken.term == 2
    # The stale leader cannot renew, fire, or take it back while b holds it.
    assert await a.acquire(SCHEDULER_LEASE, 5) is None
    assert await a.record_fire(renewed, "echo/every-second", "2026-03-01T12:00:01Z") is False
    assert await b.record_fire(taken, "echo/every-second", "2026-03-01T12:00:01Z") is True
    assert await b.record_fire(taken, "echo/every-second", "2026-03-01T12:00:01Z") is False
    rows = {r.name: r for r in await b.leases()}
    assert rows[SCHEDULER_LEASE].node_id == "node-b" and rows[SCHEDULER_LEASE].term == 2
    # node-b restarted: its old life is fenced at once (no renewal, no fire), and the new
    # life waits for the old lease to expire like anyone else.
    b2 = await join(db, "node-b")
    assert await b.acquire(SCHEDULER_LEASE, 5) is None
    assert await b.record_fire(taken, "echo/every-second", "2026-03-01T12:00:02Z") is False
    assert await b2.acquire(SCHEDULER_LEASE, 5) is None


async def test_declaring_the_leader_dead_frees_its_lease(db: PgDatabase) -> None:
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    lease = await a.acquire(SCHEDULER_LEASE, 60)
    assert lease is not None
    await trio.sleep(0.3)
    assert await b.heartbeat()
    assert await b.declare_dead(0.2) == [a.me]
    assert await a.record_fire(lease, "s", "i") is False
    taken = await b.acquire(SCHEDULER_LEASE, 60)
    assert taken is not None and taken.term == 2


async def test_a_declaration_of_death_skips_a_node_whose_write_is_in_flight(
    db: PgDatabase,
) -> None:
    """A node's write holds its node row FOR SHARE (`is_live`): a peer declaring dead skips
    it while that write runs (so one stuck node never blocks the declaration of others),
    and declares it on its next round; the node's next write finds itself no longer live."""
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    await trio.sleep(0.3)
    assert await b.heartbeat()
    inside = threading.Event()
    order: list[str] = []

    def slow_write(conn: object) -> bool:
        live = cluster.is_live(conn, a.me)  # type: ignore[arg-type]
        inside.set()
        time.sleep(0.4)
        order.append("write committed")
        return live

    async def declare() -> None:
        await trio.to_thread.run_sync(inside.wait)
        dead = await b.declare_dead(0.2)
        order.append(f"declared {[n.node_id for n in dead]}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(declare)
        assert await db.write(slow_write) is True
    assert order == ["declared []", "write committed"]
    assert await b.heartbeat()
    assert [n.node_id for n in await b.declare_dead(0.2)] == ["node-a"]
    assert await db.write(lambda conn: cluster.is_live(conn, a.me)) is False
    assert await db.write(lambda conn: cluster.is_live(conn, b.me)) is True


async def test_peers_declaring_at_once_declare_each_node_once(pg_dsn: str) -> None:
    dbs = [await PgDatabase.open(pg_dsn, pool_size=2) for _ in range(3)]
    try:
        peers = [await join(d, f"peer-{i}") for i, d in enumerate(dbs)]
        for round_ in range(5):
            silent = [await join(dbs[0], f"silent-{round_}-{n}") for n in range(3)]
            await trio.sleep(0.3)
            for peer in peers:
                assert await peer.heartbeat()
            declared: list[list[NodeIdentity]] = []

            async def declare(peer: PgCluster) -> None:
                declared.append(await peer.declare_dead(0.2))

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(declare, peer)
            found = sorted((n for d in declared for n in d), key=lambda n: n.node_id)
            assert found == [s.me for s in silent], declared
    finally:
        for d in dbs:
            await d.close()


async def test_a_takeover_waits_for_a_fire_in_flight(db: PgDatabase, pg_dsn: str) -> None:
    """The fire transaction locks the lease row FOR SHARE: a takeover that starts while it
    runs commits only after it, so a fire is never recorded under a term already replaced."""
    a = await join(db, "node-a")
    b = await join(db, "node-b")
    lease = await a.acquire(SCHEDULER_LEASE, 0.3)
    assert lease is not None
    inside = threading.Event()
    order: list[str] = []

    def slow_fire(conn: object) -> bool:
        ok = cluster.record_fire(conn, lease, "s", "i1")  # type: ignore[arg-type]
        inside.set()
        time.sleep(0.6)  # the lease expires meanwhile; b tries to take it
        order.append("fire committed")
        return ok

    async def takeover() -> None:
        await trio.to_thread.run_sync(inside.wait)
        await trio.sleep(0.35)  # past the expiry
        got = await b.acquire(SCHEDULER_LEASE, 5)
        order.append(f"takeover term {got.term if got else None}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(takeover)
        assert await db.write(slow_fire) is True
    assert order == ["fire committed", "takeover term 2"]


async def test_racing_leaders_fire_each_instant_exactly_once(pg_dsn: str) -> None:
    """Three nodes, each on its own pool, race for a short lease and fire every instant they
    believe they lead; leaders change many times. Every instant fires once, and each fire was
    made under the term that held the lease when it committed."""
    dbs = [await PgDatabase.open(pg_dsn, pool_size=2) for _ in range(3)]
    try:
        nodes = [await join(d, f"node-{i}") for i, d in enumerate(dbs)]
        fired: dict[str, list[tuple[str, int]]] = {}

        stale_refused = [0]

        async def node(c: PgCluster, rng: random.Random) -> None:
            deadline = trio.current_time() + 2.0
            while trio.current_time() < deadline:
                lease = await c.acquire(SCHEDULER_LEASE, 0.05)
                if lease is not None:
                    instant = f"{int(time.time() * 20):012d}"
                    if await c.record_fire(lease, "s", instant):
                        fired.setdefault(instant, []).append((c.me.node_id, lease.term))
                    if rng.random() < 0.2:
                        # A pause longer than the lease (a GC stall, SIGSTOP): a peer takes
                        # over, and this node's next fire under the old lease is refused.
                        await trio.sleep(0.08)
                        late = f"{int(time.time() * 20):012d}"
                        if not await c.record_fire(lease, "s", late):
                            stale_refused[0] += 1
                        else:
                            fired.setdefault(late, []).append((c.me.node_id, lease.term))
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for i, c in enumerate(nodes):
                nursery.start_soon(node, c, random.Random(i))
        assert fired, "no node ever fired"
        assert all(len(v) == 1 for v in fired.values()), fired
        stored = await dbs[0].read(lambda conn: cluster.fired(conn, "s"))
        assert stored == sorted(fired)
        terms = {t for v in fired.values() for _, t in v}
        holders = {n for v in fired.values() for n, _ in v}
        assert len(terms) >= 3 and len(holders) >= 2, (terms, holders)
        assert stale_refused[0] >= 1
    finally:
        for d in dbs:
            await d.close()


async def test_each_node_journals_and_resumes_its_own_event_stream(db: PgDatabase) -> None:
    """Two gateways number their events independently: each keeps and resumes its own, and
    an id both used is stored twice, once per node, not dropped as a duplicate."""
    from ductile.store.events import StoredEvent
    from ductile.store.pg.events import events_for

    a, b = events_for("gw-a"), events_for("gw-b")
    await db.write(lambda conn: a.append(conn, [StoredEvent(1, "job.enqueued", "t1", "{}"),
                                                StoredEvent(2, "job.started", "t2", "{}")]))
    await db.write(lambda conn: b.append(conn, [StoredEvent(1, "scheduler.tick", "t3", "{}")]))
    assert [e.type for e in await db.read(lambda conn: a.after(conn, 0))] == [
        "job.enqueued", "job.started"]
    assert [e.type for e in await db.read(lambda conn: b.after(conn, 0))] == ["scheduler.tick"]
    assert await db.read(a.max_id) == 2 and await db.read(b.max_id) == 1
    await db.write(lambda conn: a.append(conn, [StoredEvent(3, "x", "t4", "{}")], keep=1))
    assert [e.id for e in await db.read(lambda conn: a.latest(conn, 10))] == [3]
    assert [e.id for e in await db.read(lambda conn: b.latest(conn, 10))] == [1]  # untouched
