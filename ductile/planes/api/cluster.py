"""What the API says about the cluster (`GET /system/nodes`, the `cluster` of `/healthz`).

The supervisor hands the plane one narrow callable (ApiContext.cluster) that answers a
`ClusterSnapshot`: this node's identity plus the node and lease rows as the database last
showed them. `CachedCluster` is that callable: a probe polling `/healthz` every few hundred
milliseconds on every node would otherwise cost the shared database two reads per poll, so a
read younger than `max_age` seconds is answered again, and concurrent requests that find it
stale wait for one refresh instead of each starting their own.

The answers are shaped here by pure functions of a snapshot, so they are tested without a
database; ages and expiries come from the database's clock (store/pg/cluster.py), never ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ductile.store.pg.cluster import LeaseRow, NodeIdentity, NodeRow

#: The lease whose holder is "the leader" (store/pg/cluster.py SCHEDULER_LEASE).
LEADER_LEASE = "scheduler"
#: How long a read of the node and lease rows is answered again to /healthz.
HEALTH_MAX_AGE = 1.0

#: The answer of `GET /system/nodes` on a SQLite store: one gateway, no peers, not an error.
SINGLE_GATEWAY: dict[str, Any] = {"backend": "sqlite", "node": None, "leader": None, "nodes": []}


@dataclass(frozen=True)
class ClusterSnapshot:
    """This node, and every node and lease as one read of the database showed them."""

    me: NodeIdentity
    nodes: tuple[NodeRow, ...]
    leases: tuple[LeaseRow, ...]


def leader(snapshot: ClusterSnapshot) -> dict[str, Any] | None:
    """The holder of the scheduler lease while it is unexpired, else None (never taken,
    released at a clean stop, freed when its holder was declared dead, or lapsed)."""
    for lease in snapshot.leases:
        if (lease.name == LEADER_LEASE and lease.node_id is not None
                and lease.incarnation is not None and lease.expires_in_s > 0):
            return {"node_id": lease.node_id, "incarnation": lease.incarnation,
                    "term": lease.term, "expires_in_s": round(lease.expires_in_s, 3)}
    return None


def nodes_answer(snapshot: ClusterSnapshot) -> dict[str, Any]:
    """`GET /system/nodes` on PostgreSQL: this node, the leader, and every node row."""
    rows = []
    for row in snapshot.nodes:
        view = asdict(row)
        view["heartbeat_age_s"] = round(max(0.0, row.heartbeat_age_s), 3)
        rows.append(view)
    return {"backend": "postgresql",
            "node": {"node_id": snapshot.me.node_id, "incarnation": snapshot.me.incarnation},
            "leader": leader(snapshot), "nodes": rows}


def health_cluster(snapshot: ClusterSnapshot) -> dict[str, Any]:
    """The `cluster` of the detailed `/healthz`: who this is, how many other nodes are alive
    (this one not counted) and which node leads."""
    me = snapshot.me
    peers = sum(1 for row in snapshot.nodes if row.status == "alive"
                and (row.node_id, row.incarnation) != (me.node_id, me.incarnation))
    held = leader(snapshot)
    return {"backend": "postgresql", "node_id": me.node_id, "incarnation": me.incarnation,
            "peers_alive": peers, "leader_node_id": held["node_id"] if held else None}


class CachedCluster:
    """The node and lease rows, read at most once per `max_age` seconds by those who accept
    that age. `read` does one read of both (raises StoreError when the database cannot
    answer; nothing is cached then, so the next request tries again)."""

    def __init__(self, me: NodeIdentity,
                 read: Callable[[], Awaitable[tuple[list[NodeRow], list[LeaseRow]]]]) -> None:
        self.me = me
        self._read = read
        self._lock = trio.Lock()
        self._last: ClusterSnapshot | None = None
        self._read_at = float("-inf")
        # Reads are numbered as they start; `_last_seq` is the number of the one `_last` holds.
        self._started = 0
        self._last_seq = 0

    async def snapshot(self, max_age: float = HEALTH_MAX_AGE) -> ClusterSnapshot:
        """A snapshot read no more than `max_age` seconds ago (0: read now)."""
        seen = self._started
        async with self._lock:
            # A read that started after this request arrived is as fresh as one of its own.
            if self._last is not None and (self._last_seq > seen
                                           or trio.current_time() - self._read_at < max_age):
                return self._last
            self._started += 1
            seq, started = self._started, trio.current_time()
            nodes, leases = await self._read()
            self._last = ClusterSnapshot(self.me, tuple(nodes), tuple(leases))
            self._read_at, self._last_seq = started, seq
            return self._last
