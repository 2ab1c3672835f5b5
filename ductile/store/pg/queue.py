"""`PgQueue`: the job queue on PostgreSQL, for several gateways sharing one database.

It is the same facade as SQLite's `Queue` (store/queue.py `QueueCore`: rows built and values
encoded before the write, the clock, the config snapshot, the dispatcher woken after a commit
that made a job claimable) over PostgreSQL's statements (`PG`, below): the writers in
pg/writes.py (row locks, SKIP LOCKED claims, advisory-locked dedupe, NOTIFY), the readers in
pg/reads.py and pg/tree.py, contexts, plugin state and facts in pg/records.py. So every method,
parameter, record and error is SQLite's by construction, and tests/test_store_contract.py runs
one suite over both.

Each method is one `PgDatabase.write` (one transaction) or `read` (one REPEATABLE READ
snapshot). Besides the local `on_enqueue` callback, every transaction that makes a job
claimable NOTIFYs `JOBS_CHANNEL`, so a dispatcher on another gateway listening there
(`PgDatabase.listen`) wakes too.

Node-aware (`node`, the gateway's life from cluster.py `PgCluster.join`): every claim records
the node life that made it, `recover_orphans` (boot) recovers only the running rows of this
node's earlier incarnations (and rows no node claimed), never a live peer's, and
`reap_dead_nodes` declares silent peers dead and recovers their rows in one transaction. A
fenced life's claims and outcomes are refused (NodeFenced; see cluster.py on fencing). Without
`node` the queue is a lone gateway's: `recover_orphans` requeues every running job, so it must
then only run while no other gateway is dispatching. Claims given `caps` hold them across the
cluster (pg/writes.py `claim`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from ductile.store.jobs import Job, format_time, utcnow
from ductile.store.pg import reads, records, tree, writes
from ductile.store.pg.cluster import NodeIdentity, declare_dead
from ductile.store.queue import QueueCore, Statements

if TYPE_CHECKING:
    import psycopg

    from ductile.store.pg.db import PgDatabase

PG = Statements(
    insert_job=writes.insert_job,
    write_context=records.write_prepared,
    insert_run_root=writes.insert_run_root,
    insert_successors=writes.insert_successors,
    claim=writes.claim,
    fetch_context=records.fetch_context,
    load_state=records.load_state,
    record_spawn=writes.record_spawn,
    complete=writes.complete,
    apply_fact_plan=records.apply_fact_plan,
    retry=writes.retry,
    cancel=writes.cancel,
    interrupt=writes.interrupt,
    recover=writes.recover,
    fetch_job=reads.fetch_job,
    fetch_jobs=reads.fetch_jobs,
    fetch_links=reads.fetch_links,
    fetch_pipeline_run=tree.fetch_pipeline_run,
    fetch_job_tree=tree.fetch_job_tree,
    fetch_attempts=reads.fetch_attempts,
    fetch_transitions=reads.fetch_transitions,
    fetch_log_entries=reads.fetch_log_entries,
    search_logs=reads.search_logs,
    running_counts=reads.running_counts,
    queue_depth=reads.queue_depth,
    outstanding_counts=reads.outstanding_counts,
    next_retry_at=reads.next_retry_at,
)


@dataclass(frozen=True)
class Reaped:
    """What one `reap_dead_nodes` did: the node lives it declared dead (by node_id) and their
    jobs as recovery left them (queued again or buried dead), oldest first per node."""

    dead: tuple[NodeIdentity, ...]
    jobs: tuple[Job, ...]


def node_statements(node: NodeIdentity) -> Statements:
    """PG's statements with every claim, outcome and boot recovery bound to `node`'s life."""
    return replace(
        PG,
        claim=partial(writes.claim, owner=node),
        complete=partial(writes.complete, owner=node),
        retry=partial(writes.retry, owner=node),
        interrupt=partial(writes.interrupt, owner=node),
        recover=partial(writes.recover, owner=node),
    )


class PgQueue(QueueCore):
    """The job queue on PostgreSQL (see the module docstring)."""

    _sql = PG

    def __init__(
        self,
        db: PgDatabase,
        *,
        snapshot_id: Callable[[], str | None],
        dedupe_ttl: float,
        on_enqueue: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
        node: NodeIdentity | None = None,
    ) -> None:
        super().__init__(db, snapshot_id=snapshot_id, dedupe_ttl=dedupe_ttl,
                         on_enqueue=on_enqueue, clock=clock)
        self._pg = db
        #: This gateway's node life, or None for a lone gateway (see the module docstring).
        self.node = node
        if node is not None:
            self._sql = node_statements(node)

    async def reap_dead_nodes(self, dead_after_s: float) -> Reaped:
        """Declare dead every live node silent for more than `dead_after_s` seconds (by the
        database's clock) and recover its running jobs, in one transaction: crash recovery's
        rules (attempt + 1, dead when out of attempts, a poison strike), peers woken by NOTIFY
        and this dispatcher by `on_enqueue`. Any node may call it at any time; two calling at
        once recover each job once."""
        now = format_time(self._clock())

        def reap(conn: psycopg.Connection[Any]) -> Reaped:
            dead = declare_dead(conn, dead_after_s)
            return Reaped(tuple(dead), tuple(writes.recover_dead(conn, self.machine, now, dead)))

        reaped = await self._pg.write(reap)
        self._woken(reaped.jobs)
        return reaped

    async def recover_dead(self, dead: Sequence[NodeIdentity]) -> list[Job]:
        """Recover the running jobs of node lives already declared dead (as
        `reap_dead_nodes` does right after its declaration), e.g. after a declaration made
        outside this queue. A life that is still alive is refused (StoreError), nothing
        written: its jobs are running."""
        now = format_time(self._clock())
        jobs = await self._pg.write(lambda conn: writes.recover_dead(conn, self.machine, now,
                                                                     dead))
        self._woken(jobs)
        return jobs

    def _woken(self, jobs: Sequence[Job]) -> None:
        if any(job.status == "queued" for job in jobs):
            self._on_enqueue()
