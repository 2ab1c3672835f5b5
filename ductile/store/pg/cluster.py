"""Several gateways on one PostgreSQL: who is alive, who leads the scheduler, what fired.

Every rule here rests on PostgreSQL's own guarantees and on its clock, never on ours: a node's
liveness is the time of its last heartbeat as the database saw it (`now()`), a lease expires by
the database's clock, and "exactly once" is a unique key. Nodes' clocks may disagree by any
amount without breaking anything; only the configured timeouts have to be longer than a node's
worst pause between heartbeats.

Nodes. A gateway registers under a stable `node_id` and gets a new `incarnation` at every start
(the same id restarted is a new incarnation, so the rows its previous life left behind are
told apart from the ones it runs now). Every job it claims records that life (job_queue
`claimed_by`, `claimed_incarnation`, set by the claim: store/pg/writes.py). At boot its queue
recovers only the running rows of its own earlier incarnations (`PgQueue.recover_orphans`),
never a live peer's. Any node may declare another dead (after `dead_after` seconds of silence:
a frozen or partitioned node); the declaration and the recovery of the dead life's running
rows are one transaction (`PgQueue.reap_dead_nodes` = `declare_dead` + the queue's
`recover_dead`), so a node is never dead with its work still claimed, and two peers
declaring at once recover each row once (the second finds the node no longer alive).

Fencing, the contract a gateway keeps. Once its life is not `alive` (declared dead, or the same
node_id registered again), the store refuses everything it writes as that life: every claim,
complete, retry and interrupt of a node-aware PgQueue first reads its own node row `FOR SHARE`
and raises NodeFenced when it is not the live incarnation, and an outcome for a row claimed by
another life is refused even when the attempt number matches. The read `FOR SHARE` also orders
each of those writes against a declaration: one of them commits first, so a claim is never
left owned by a life already declared dead. The gateway learns it is fenced from `heartbeat()`
returning False (or a NodeFenced from the queue); it must then stop claiming, kill its plugins
without recording their outcomes (a peer already requeued those jobs) and exit. Its plugins
may still be running when a peer re-runs the job: delivery is at least once, and the window is
`dead_after` plus one heartbeat, so `dead_after` must be longer than the worst pause of a
healthy node.

Leases. One row per lease (`scheduler`): holder node, its incarnation, a `term` that grows by
one at every change of holder, and `expires_at`. Acquiring is one conditional upsert: it
succeeds for the current holder (a renewal, same term) or for anyone once the lease expired (a
takeover, term + 1). A stale leader cannot act after a takeover because every act re-checks
the term in its own transaction.

Fires. The scheduler records each (schedule, instant) it fires as a row keyed by both, inserted
only while the lease row still names this holder and term (read `FOR SHARE`, so a takeover's
upsert waits for the firing transaction to end, and the firing transaction sees a takeover
that committed first). Two leaders, or a leader and its stale predecessor, can therefore never
both fire one instant.

All functions take a psycopg connection inside the caller's transaction (PgDatabase.write or
read) and do one thing; PgCluster (below) is the small async facade a gateway holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ductile.errors import DedupeDropped, LeadershipLost

if TYPE_CHECKING:
    import psycopg

    from ductile.store.pg.db import PgDatabase

#: The scheduler's lease.
SCHEDULER_LEASE = "scheduler"


@dataclass(frozen=True)
class NodeIdentity:
    """One life of one node: its id and this start's incarnation."""

    node_id: str
    incarnation: int


@dataclass(frozen=True)
class NodeRow:
    """A node as `ductile system nodes` shows it; ages are by the database's clock."""

    node_id: str
    incarnation: int
    status: str  # alive | stopped | dead
    hostname: str
    pid: int
    version: str
    started_at: str
    heartbeat_at: str
    heartbeat_age_s: float


@dataclass(frozen=True)
class Lease:
    """A lease this node holds, as of the transaction that granted or renewed it."""

    name: str
    holder: NodeIdentity
    term: int
    expires_in_s: float


@dataclass(frozen=True)
class LeaseRow:
    """A lease as the status views show it (whoever holds it)."""

    name: str
    node_id: str | None
    incarnation: int | None
    term: int
    expires_in_s: float


# -- nodes -------------------------------------------------------------------------------


def register(conn: psycopg.Connection[Any], node_id: str, *, hostname: str, pid: int,
             version: str) -> NodeIdentity:
    """Start a new incarnation of `node_id` (1 for a node never seen) and mark it alive."""
    row = conn.execute(
        "INSERT INTO cluster_nodes (node_id, incarnation, status, hostname, pid, version, "
        "started_at, heartbeat_at) VALUES (%s, 1, 'alive', %s, %s, %s, now(), now()) "
        "ON CONFLICT (node_id) DO UPDATE SET incarnation = cluster_nodes.incarnation + 1, "
        "status = 'alive', hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, "
        "version = EXCLUDED.version, started_at = now(), heartbeat_at = now() "
        "RETURNING incarnation",
        (node_id, hostname, pid, version),
    ).fetchone()
    return NodeIdentity(node_id, int(_first(row)))


def heartbeat(conn: psycopg.Connection[Any], me: NodeIdentity) -> bool:
    """Renew `me`'s liveness; False when it is no longer the live incarnation (fenced)."""
    cur = conn.execute(
        "UPDATE cluster_nodes SET heartbeat_at = now() "
        "WHERE node_id = %s AND incarnation = %s AND status = 'alive'",
        (me.node_id, me.incarnation),
    )
    return cur.rowcount == 1


def is_live(conn: psycopg.Connection[Any], me: NodeIdentity) -> bool:
    """Whether `me` is the live incarnation, its node row locked FOR SHARE until the caller's
    transaction ends: a declaration of death (or a restart) waits for that transaction, so
    what the caller writes as `me` commits before `me` can be declared dead, or not at all."""
    row = conn.execute(
        "SELECT 1 FROM cluster_nodes WHERE node_id = %s AND incarnation = %s "
        "AND status = 'alive' FOR SHARE",
        (me.node_id, me.incarnation),
    ).fetchone()
    return row is not None


def retire(conn: psycopg.Connection[Any], me: NodeIdentity) -> None:
    """A clean stop: `me` is `stopped` (never declared dead) and gives up its leases."""
    conn.execute(
        "UPDATE cluster_nodes SET status = 'stopped' "
        "WHERE node_id = %s AND incarnation = %s AND status = 'alive'",
        (me.node_id, me.incarnation),
    )
    conn.execute(
        "UPDATE cluster_leases SET expires_at = now() - interval '1 microsecond' "
        "WHERE node_id = %s AND incarnation = %s",
        (me.node_id, me.incarnation),
    )


def declare_dead(conn: psycopg.Connection[Any], dead_after_s: float) -> list[NodeIdentity]:
    """Mark every live node silent for longer than `dead_after_s` dead, free the leases they
    held, and return them.

    The caller recovers their running jobs in the same transaction, so a node is never dead
    with its work still claimed. A node row locked by someone else is skipped this round
    (SKIP LOCKED): a peer declaring the same nodes, or the silent node itself frozen in the
    middle of a write (its writes hold its row FOR SHARE). The frozen node's session is ended
    by the server after idle_in_transaction_session_timeout, which boot keeps below
    `dead_after`, and the next round declares it; one stuck node never holds back the
    declaration of the others. Each row is re-checked once locked: a node that beat or
    restarted meanwhile is left alone."""
    rows = conn.execute(
        "WITH silent AS (SELECT node_id FROM cluster_nodes WHERE status = 'alive' "
        "AND heartbeat_at < now() - make_interval(secs => %(after)s) "
        "ORDER BY node_id FOR UPDATE SKIP LOCKED) "
        "UPDATE cluster_nodes AS n SET status = 'dead' FROM silent "
        "WHERE n.node_id = silent.node_id AND n.status = 'alive' "
        "AND n.heartbeat_at < now() - make_interval(secs => %(after)s) "
        "RETURNING n.node_id, n.incarnation",
        {"after": dead_after_s},
    ).fetchall()
    for r in rows:  # a dead leader's lease is free at once, not when it would have expired
        conn.execute(
            "UPDATE cluster_leases SET expires_at = now() - interval '1 microsecond' "
            "WHERE node_id = %s AND incarnation = %s", (r["node_id"], r["incarnation"]))
    return sorted((NodeIdentity(r["node_id"], int(r["incarnation"])) for r in rows),
                  key=lambda n: n.node_id)


def nodes(conn: psycopg.Connection[Any]) -> list[NodeRow]:
    """Every node the cluster has seen, newest start first."""
    rows = conn.execute(
        "SELECT node_id, incarnation, status, hostname, pid, version, "
        "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS started, "
        "to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS beat, "
        "EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age "
        "FROM cluster_nodes ORDER BY started_at DESC, node_id"
    ).fetchall()
    return [NodeRow(r["node_id"], int(r["incarnation"]), r["status"], r["hostname"],
                    int(r["pid"]), r["version"], r["started"], r["beat"], float(r["age"]))
            for r in rows]


# -- leases ------------------------------------------------------------------------------


def acquire(conn: psycopg.Connection[Any], name: str, me: NodeIdentity,
            ttl_s: float) -> Lease | None:
    """Take or renew the lease `name` for `ttl_s` seconds; None while another holds it, and
    always None for a node that is not the live incarnation (a fenced node cannot lead)."""
    row = conn.execute(
        "INSERT INTO cluster_leases (name, node_id, incarnation, term, expires_at) "
        "SELECT %(name)s, %(node)s, %(inc)s, 1, now() + make_interval(secs => %(ttl)s) "
        "WHERE EXISTS (SELECT 1 FROM cluster_nodes WHERE node_id = %(node)s "
        "AND incarnation = %(inc)s AND status = 'alive') "
        "ON CONFLICT (name) DO UPDATE SET node_id = EXCLUDED.node_id, "
        "incarnation = EXCLUDED.incarnation, expires_at = EXCLUDED.expires_at, "
        "term = CASE WHEN cluster_leases.node_id = EXCLUDED.node_id "
        "AND cluster_leases.incarnation = EXCLUDED.incarnation "
        "AND cluster_leases.expires_at > now() "
        "THEN cluster_leases.term ELSE cluster_leases.term + 1 END "
        "WHERE (cluster_leases.node_id = EXCLUDED.node_id "
        "AND cluster_leases.incarnation = EXCLUDED.incarnation) "
        "OR cluster_leases.expires_at <= now() "
        "RETURNING term, EXTRACT(EPOCH FROM expires_at - now())::float8 AS left_s",
        {"name": name, "node": me.node_id, "inc": me.incarnation, "ttl": ttl_s},
    ).fetchone()
    if row is None:
        return None
    return Lease(name, me, int(row["term"]), float(row["left_s"]))


def holds(conn: psycopg.Connection[Any], name: str, me: NodeIdentity, term: int) -> bool:
    """Whether `me` still holds `name` at `term`, unexpired, as the live incarnation. The
    lease and node rows are locked FOR SHARE for the rest of the caller's transaction, so
    neither a takeover nor a declaration of death commits in between."""
    row = conn.execute(
        "SELECT 1 FROM cluster_leases l JOIN cluster_nodes n ON n.node_id = l.node_id "
        "AND n.incarnation = l.incarnation AND n.status = 'alive' "
        "WHERE l.name = %s AND l.node_id = %s AND l.incarnation = %s AND l.term = %s "
        "AND l.expires_at > now() FOR SHARE",
        (name, me.node_id, me.incarnation, term),
    ).fetchone()
    return row is not None


def release(conn: psycopg.Connection[Any], name: str, me: NodeIdentity) -> None:
    """Give up `name` at once (a clean stop), so a peer need not wait for it to expire."""
    conn.execute(
        "UPDATE cluster_leases SET expires_at = now() - interval '1 microsecond' "
        "WHERE name = %s AND node_id = %s AND incarnation = %s",
        (name, me.node_id, me.incarnation),
    )


def leases(conn: psycopg.Connection[Any]) -> list[LeaseRow]:
    """Every lease and its holder (an expired lease is shown with its last holder)."""
    rows = conn.execute(
        "SELECT name, node_id, incarnation, term, "
        "EXTRACT(EPOCH FROM expires_at - now())::float8 AS left_s "
        "FROM cluster_leases ORDER BY name"
    ).fetchall()
    return [LeaseRow(r["name"], r["node_id"], r["incarnation"], int(r["term"]),
                     float(r["left_s"])) for r in rows]


# -- scheduler fires ---------------------------------------------------------------------


def record_fire(conn: psycopg.Connection[Any], lease: Lease, schedule: str,
                instant: str) -> bool:
    """Claim the firing of `schedule` at `instant` for `lease`'s holder; True exactly once
    per (schedule, instant) across the cluster, and only while the lease is still held.

    The caller enqueues the fired job in the same transaction, so a fire row and its job
    commit together or not at all."""
    if not holds(conn, lease.name, lease.holder, lease.term):
        return False
    row = conn.execute(
        "INSERT INTO cluster_fires (schedule, instant, node_id, incarnation, term, fired_at) "
        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (schedule, instant) DO NOTHING "
        "RETURNING 1",
        (schedule, instant, lease.holder.node_id, lease.holder.incarnation, lease.term),
    ).fetchone()
    return row is not None


def fire_or_refuse(conn: psycopg.Connection[Any], lease: Lease, schedule: str,
                   instant: str) -> None:
    """`record_fire`, raising instead of answering False, for use inside the transaction
    that enqueues the fired job (QueueCore.enqueue's `guard`): LeadershipLost when the lease
    is no longer this node's at this term, DedupeDropped (reason `already_fired`) when the
    instant was fired already. Either way nothing of the transaction is written."""
    if not holds(conn, lease.name, lease.holder, lease.term):
        raise LeadershipLost(
            f"node {lease.holder.node_id} no longer leads the scheduler (lease term "
            f"{lease.term} was taken over or expired); {schedule} at {instant} is left to the "
            "current leader")
    row = conn.execute(
        "INSERT INTO cluster_fires (schedule, instant, node_id, incarnation, term, fired_at) "
        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (schedule, instant) DO NOTHING "
        "RETURNING 1",
        (schedule, instant, lease.holder.node_id, lease.holder.incarnation, lease.term),
    ).fetchone()
    if row is None:
        raise DedupeDropped(f"{schedule}@{instant}", "already_fired")


def check_leader(conn: psycopg.Connection[Any], lease: Lease) -> None:
    """LeadershipLost unless `lease` is still held (for the scheduler's other writes: a stale
    leader must not overwrite the schedule state its successor keeps)."""
    if not holds(conn, lease.name, lease.holder, lease.term):
        raise LeadershipLost(
            f"node {lease.holder.node_id} no longer leads the scheduler (lease term "
            f"{lease.term}); its schedule state is not written")


def fired(conn: psycopg.Connection[Any], schedule: str) -> list[str]:
    """The instants of `schedule` fired so far, in order."""
    rows = conn.execute(
        "SELECT instant FROM cluster_fires WHERE schedule = %s ORDER BY instant", (schedule,)
    ).fetchall()
    return [r["instant"] for r in rows]


def _first(row: Any) -> Any:
    if row is None:
        raise LookupError("the statement returned no row")
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


# -- the facade a gateway holds -----------------------------------------------------------


class PgCluster:
    """This node's view of the cluster: register, heartbeat, leases, fires, status."""

    def __init__(self, db: PgDatabase, me: NodeIdentity) -> None:
        self.db = db
        self.me = me

    @classmethod
    async def join(cls, db: PgDatabase, node_id: str, *, hostname: str, pid: int,
                   version: str) -> PgCluster:
        me = await db.write(lambda conn: register(conn, node_id, hostname=hostname, pid=pid,
                                                   version=version))
        return cls(db, me)

    async def heartbeat(self) -> bool:
        """Renew this node's liveness; False once it is fenced (see the module docstring:
        the gateway must then stop claiming, kill its plugins and exit)."""
        return await self.db.write(lambda conn: heartbeat(conn, self.me))

    async def declare_dead(self, dead_after_s: float) -> list[NodeIdentity]:
        return await self.db.write(lambda conn: declare_dead(conn, dead_after_s))

    async def acquire(self, name: str, ttl_s: float) -> Lease | None:
        return await self.db.write(lambda conn: acquire(conn, name, self.me, ttl_s))

    async def record_fire(self, lease: Lease, schedule: str, instant: str) -> bool:
        return await self.db.write(lambda conn: record_fire(conn, lease, schedule, instant))

    async def retire(self) -> None:
        await self.db.write(lambda conn: retire(conn, self.me))

    async def nodes(self) -> list[NodeRow]:
        return await self.db.read(nodes)

    async def leases(self) -> list[LeaseRow]:
        return await self.db.read(leases)
