"""A gateway among peers on one PostgreSQL store: opening it, joining, and staying honest.

Opening (at boot's open_state): the DSN from `state:` with the password from the vault, the
pool with the configured timeouts, the schema migrated once across every node booting at
once, then this node's new incarnation registered.

Staying honest, for as long as the process lives (`run_cluster`, one task per process):

- heartbeat every `state.heartbeat_interval`; a heartbeat that finds this life no longer
  alive means a peer declared it dead and recovered its jobs (it was frozen, or cut off from
  the database, for longer than `state.dead_after`). Continuing would run work it no longer
  owns, so the node raises NodeFenced: the supervisor's nursery ends, every plugin process
  group is killed on the way out (no outcome is written: the store would refuse it anyway),
  and systemd starts a new life, which joins as a new incarnation;
- declare peers silent for longer than `state.dead_after` dead and recover their running
  jobs (`reap_dead_nodes`: one transaction; two nodes doing it at once recover each job once);
- take or renew the scheduler lease (`ClusterLeadership`): only its holder's scheduler fires;
- listen for the queue's NOTIFY, so a job enqueued on any node wakes this node's dispatcher
  within milliseconds, without polling (and wake it once per heartbeat anyway, so a
  notification lost with a dropped connection costs one interval at most).

A heartbeat the database cannot take (it is restarting, the network is down) is not a
fencing: the node keeps working and retries, and fencing, if it comes, comes from the peers'
side of the same clock. A clean stop retires the node (status `stopped`, its lease released)
so the peers take over at once instead of waiting `dead_after`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ductile.errors import NodeFenced, StoreError

if TYPE_CHECKING:
    from ductile.boot.gates import BootFacts
    from ductile.dispatch.completions import Completions
    from ductile.config.schema import Config
    from ductile.logs import Logger
    from ductile.store.pg.cluster import Lease, PgCluster
    from ductile.store.pg.db import Listener, PgDatabase


def node_id_for(cfg: Config) -> str:
    """`state.node_id`, or this host's name (lower-cased, domain kept)."""
    return cfg.state.node_id or socket.gethostname().lower() or "localhost"


async def open_postgresql(cfg: Config, facts: BootFacts, version: str) -> tuple[PgDatabase,
                                                                                  PgCluster]:
    """Open the shared store and register this node's new life. Raises what PgDatabase.open
    raises (StoreUnavailable naming the database, SchemaTooNew, ...)."""
    from ductile.store.pg.cluster import PgCluster
    from ductile.store.pg.db import PgDatabase, with_password

    state = cfg.state
    password = facts.secrets.get(state.secret_ref) if state.secret_ref else None
    # A session idle inside a transaction is a frozen gateway holding row locks (its node
    # row among them): the server must end it well before peers would declare that node
    # dead, or the frozen node would hold back its own declaration.
    idle = min(state.statement_timeout, state.dead_after / 2)
    db = await PgDatabase.open(
        with_password(state.dsn, password), pool_size=state.pool_size,
        connect_timeout=state.connect_timeout,
        statement_timeout_ms=max(1, round(state.statement_timeout * 1000)),
        lock_timeout_ms=max(1, round(state.lock_timeout * 1000)),
        idle_in_transaction_ms=max(1, round(idle * 1000)),
    )
    try:
        cluster = await PgCluster.join(db, node_id_for(cfg), hostname=socket.gethostname(),
                                       pid=os.getpid(), version=version)
    except BaseException:
        with trio.CancelScope(shield=True):
            await db.close()
        raise
    return db, cluster


class ClusterLeadership:
    """The scheduler's Leadership (schedule/leadership.py) on the shared store: the lease the
    heartbeat loop last took or renewed, and guards that re-check it in the store's own
    transactions. One per process; `on_change` (the scheduler's wake) runs when this node
    gains the lease, so it fires at once instead of at its next tick."""

    def __init__(self, interval: Callable[[], tuple[float, float]]) -> None:
        self._interval = interval
        self.current: Lease | None = None
        self.on_change: Callable[[], None] = lambda: None

    def lease(self) -> Lease | None:
        return self.current

    def retry_in(self) -> float:
        return self._interval()[0]

    def fire_guard(self, lease: Lease, schedule: str, instant: str) -> Callable[[Any, Any], None]:
        from ductile.store.pg.cluster import fire_or_refuse

        return lambda conn, job: fire_or_refuse(conn, lease, schedule, instant)

    def write_guard(self, lease: Lease) -> Callable[[Any], None]:
        from ductile.store.pg.cluster import check_leader

        return lambda conn: check_leader(conn, lease)

    def update(self, lease: Lease | None, log: Logger) -> None:
        before, self.current = self.current, lease
        if lease is not None and (before is None or before.term != lease.term):
            log.info("leading the scheduler", node=lease.holder.node_id, term=lease.term)
            self.on_change()
        elif lease is None and before is not None:
            log.warn("no longer leading the scheduler", node=before.holder.node_id,
                     term=before.term)


async def run_cluster(
    cluster: PgCluster,
    queue: Callable[[], Any],
    interval: Callable[[], tuple[float, float]],
    wake: Callable[[], None],
    log: Logger,
    *,
    leadership: ClusterLeadership | None = None,
    completions: Completions | None = None,
    cancel_local: Callable[[str, str], Awaitable[bool]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Heartbeat, reap dead peers and relay NOTIFY wake-ups until cancelled; raise NodeFenced
    when a peer has declared this life dead. `interval()` gives (heartbeat_interval,
    dead_after) in seconds, read each round so a reload's values apply. `completions` hears
    of every job that ends on any node (a sync request here for a job a peer ran);
    `cancel_local(job_id, reason)` stops a job this node runs when an operator's cancel
    reached a peer (`request_cancel`)."""
    from ductile.store.pg.db import CANCEL_CHANNEL, ENDED_CHANNEL, JOBS_CHANNEL

    listeners = [await cluster.db.listen(channel)
                 for channel in (JOBS_CHANNEL, ENDED_CHANNEL, CANCEL_CHANNEL)]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wake_on_notify, listeners[0], wake, log)
            if completions is not None:
                nursery.start_soon(_relay_ended, listeners[1], completions, log)
            if cancel_local is not None:
                nursery.start_soon(_relay_cancels, listeners[2], cancel_local, log)
            task_status.started()
            await _beat(cluster, queue, wake, interval, log, leadership)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def retire(cluster: PgCluster, log: Logger) -> None:
    """A clean stop: this life is `stopped` and its leases are released."""
    try:
        with trio.move_on_after(5):
            await cluster.retire()
    except StoreError as exc:
        log.warn("could not retire this node; peers will declare it dead after "
                 "state.dead_after", error=str(exc))


async def _beat(cluster: PgCluster, queue: Callable[[], Any], wake: Callable[[], None],
                interval: Callable[[], tuple[float, float]], log: Logger,
                leadership: ClusterLeadership | None) -> None:
    me = cluster.me
    failing = False
    while True:
        every, dead_after = interval()
        try:
            alive = await cluster.heartbeat()
        except StoreError as exc:
            if not failing:
                log.warn("heartbeat failed; retrying", node=me.node_id, error=str(exc))
            failing = True
        else:
            if failing:
                log.info("heartbeat restored", node=me.node_id)
            failing = False
            if not alive:
                raise NodeFenced(me.node_id, me.incarnation, "its heartbeat")
            await _reap(queue(), dead_after, log)
            if leadership is not None:
                await _lead(cluster, leadership, dead_after, log)
        # A safety net under NOTIFY: a wake-up lost with a dropped connection costs at most
        # one heartbeat interval of latency.
        wake()
        await trio.sleep(every)


async def _lead(cluster: PgCluster, leadership: ClusterLeadership, dead_after: float,
                log: Logger) -> None:
    """Take or renew the scheduler lease for `dead_after` seconds: renewed every heartbeat,
    it outlives a few missed beats, and a dead or frozen leader loses it by the database's
    clock (or at once when a peer declares it dead)."""
    from ductile.store.pg.cluster import SCHEDULER_LEASE

    try:
        lease = await cluster.acquire(SCHEDULER_LEASE, dead_after)
    except StoreError as exc:
        log.warn("could not renew the scheduler lease", error=str(exc))
        lease = None
    leadership.update(lease, log)


async def _reap(queue: Any, dead_after: float, log: Logger) -> None:
    try:
        reaped = await queue.reap_dead_nodes(dead_after)
    except StoreError as exc:
        log.warn("could not check for dead peers", error=str(exc))
        return
    if reaped.dead:
        log.warn("peers declared dead; their running jobs were recovered",
                 nodes=[f"{node.node_id}#{node.incarnation}" for node in reaped.dead],
                 jobs=[job.id for job in reaped.jobs])


async def _wake_on_notify(listener: Listener, wake: Callable[[], None], log: Logger) -> None:
    while True:
        try:
            await listener.wait()
        except StoreError as exc:
            log.warn("job notifications lost; the dispatcher polls until they return",
                     error=str(exc))
            await trio.sleep(1)
        wake()


async def request_cancel(cluster: PgCluster, job_id: str, reason: str) -> None:
    """Ask every node to stop `job_id` (the one running it does; the others ignore it)."""
    from ductile.store.pg.db import CANCEL_CHANNEL, notify

    payload = json.dumps({"job_id": job_id, "reason": reason})
    await cluster.db.write(lambda conn: notify(conn, CANCEL_CHANNEL, payload))


async def _relay_ended(listener: Listener, completions: Completions, log: Logger) -> None:
    """Wake this node's waiters for jobs that ended anywhere. When notifications were lost
    (more than the listener keeps between two waits, or a reconnect), every waiter is woken
    to re-read its job: a spurious wake costs a read, a missed one a request's timeout."""
    seen, reconnects = listener.received, listener.reconnects
    while True:
        ids = await _next_payloads(listener, log, "job-end notifications lost; waiters re-check")
        arrived, seen = listener.received - seen, listener.received
        if ids is None or arrived > len(ids) or listener.reconnects != reconnects:
            reconnects = listener.reconnects
            completions.notify_all()
            continue
        for job_id in ids:
            completions.notify(job_id)


async def _relay_cancels(listener: Listener,
                         cancel_local: Callable[[str, str], Awaitable[bool]],
                         log: Logger) -> None:
    while True:
        for text in await _next_payloads(listener, log, "cancel notifications lost") or ():
            try:
                asked = json.loads(text)
                job_id, reason = str(asked["job_id"]), str(asked["reason"])
            except (ValueError, KeyError, TypeError):
                continue  # not ours: the channel takes only what request_cancel sends
            if await cancel_local(job_id, reason):
                log.info("job cancelled at a peer's request", job_id=job_id)


async def _next_payloads(listener: Listener, log: Logger, lost: str) -> list[str] | None:
    """The payloads of the next wake-up, taken from the listener; None when the listener
    failed (logged as `lost`, retried after a second)."""
    try:
        await listener.wait()
    except StoreError as exc:
        log.warn(lost, error=str(exc))
        await trio.sleep(1)
        return None
    payloads = list(listener.payloads)
    listener.payloads.clear()
    return payloads
