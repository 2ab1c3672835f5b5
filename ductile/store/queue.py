"""The durable job queue's async facade: `Queue` and the records its methods return.

Each public method is one `Database.write` (one savepoint in a group commit) or one
`Database.read`, so everything still goes through the one writer. The SQL lives in small
synchronous functions taking a connection: the writer statements in writes.py (machine checks,
dedupe, the attempt ledger, crash recovery), the readers in ledger.py (which the CLI also runs
on a read-only connection without a daemon). What stays here needs the caller's side: rows
built and values encoded before the write (values.py; bad input fails before anything is
written), the clock, the live config snapshot, and waking the dispatcher after a commit.
store/interface.py names the part of `Queue` that the layers above the store use.

The facade is `QueueCore`; the SQL it runs comes from a `Statements` table, so a second
backend (PostgreSQL: store/pg/queue.py) reuses every caller-side step and supplies only its
own statements. `Queue` is the facade on SQLite's statements (`SQLITE`).

Time comes from an injectable clock and is stored fixed-width (see jobs.py), so every "is it
due yet" question is a string comparison in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ductile.errors import DedupeDropped, SourceEventConflict, StoreError
from ductile.machines import MachineSpec, load_machine
from ductile.store.context import (
    ContextSpec,
    EventContext,
    PreparedContext,
    fetch_context,
    prepare_context,
    write_prepared,
)
from ductile.store.db import Database
from ductile.store.facts import FactPlan, apply_fact_plan
from ductile.store.jobs import (
    Attempt,
    Job,
    JobLinks,
    LogEntry,
    Transition,
    format_time,
    parse_time,
    shift_time,
    utcnow,
)
from ductile.store.joblog import LogFilter, search_logs
from ductile.store.ledger import (
    _next_retry_at,
    _outstanding_counts,
    _queue_depth,
    _running_counts,
    fetch_attempts,
    fetch_job,
    fetch_jobs,
    fetch_links,
    fetch_log_entries,
    fetch_transitions,
)
from ductile.store.state import encode_updates, load_state
from ductile.store.tree import PipelineRun, fetch_job_tree, fetch_pipeline_run
from ductile.store.values import DEFAULT_MAX_ATTEMPTS, RawJSON, queued_job, require_text
from ductile.store.writes import (
    INTERRUPTED_REASON,
    _cancel,
    _claim,
    _complete,
    _Dedupe,
    _Ending,
    _insert_job,
    _insert_run_root,
    _insert_successors,
    _interrupt,
    _record_spawn,
    _recover,
    _retry,
    at_cap,
    burial_reason,
)

# Re-exports, kept only for the modules that still import them from here: RawJSON (defined in
# values.py) for ductile/planes/webhook/payload.py, burial_reason (writes.py) for
# ductile/boot/runtime.py. Point those imports at the defining module, then drop these two.
# Everything else imports from the module that defines the name.
__all__ = ["Claim", "DroppedSuccessor", "Finished", "Queue", "QueueCore", "RawJSON", "SQLITE",
           "Statements", "Successor", "burial_reason"]


@dataclass(frozen=True)
class Claim:
    """A job just moved to running, with its plugin's stored state as of the claim."""

    job: Job
    state: dict[str, Any]
    state_error: str | None = None  # stored state unreadable: the dispatcher fails the job
    # The job's event_context row (a routed pipeline step), read in the claiming transaction
    # so routing costs no extra database hop; None for a job without one.
    context: EventContext | None = None


@dataclass(frozen=True)
class Successor:
    """A job to enqueue in the same transaction that ends its parent (a routed next step).

    It becomes a queued job with `parent_job_id` = the finished job, through the same checks as
    `enqueue` (job machine, dedupe, source-event uniqueness); `context` is written with it.
    """

    plugin: str
    command: str
    payload: Any
    submitted_by: str
    source_event_id: str | None
    context: ContextSpec | None
    max_attempts: int
    dedupe_key: str | None = None


@dataclass(frozen=True)
class DroppedSuccessor:
    """A successor that was not enqueued, and why: a redelivered event (SourceEventConflict)
    or its dedupe key (DedupeDropped). Neither fails the parent."""

    successor: Successor
    error: DedupeDropped | SourceEventConflict


@dataclass(frozen=True)
class Finished:
    """A job's new row after complete/retry, and the next job claimed in the same transaction
    (None when nothing was eligible or no claim was asked for). `successors` are the jobs
    enqueued with the completion, in the order given; `dropped` those skipped."""

    job: Job
    next: Claim | None = None
    successors: tuple[Job, ...] = ()
    dropped: tuple[DroppedSuccessor, ...] = ()


@dataclass(frozen=True)
class _Pending:
    """A successor turned into its job row and encoded context, ready for the writer."""

    successor: Successor
    job: Job
    context: PreparedContext | None


Conn = Any  # a backend's connection: sqlite3.Connection here, psycopg.Connection in store/pg
T = TypeVar("T")


class Store(Protocol):
    """What the facade needs of a database: one transaction per `write` or `read` call, `fn`
    run inside it on the backend's connection (Database here, PgDatabase in store/pg)."""

    async def write(self, fn: Callable[[Conn], T]) -> T: ...

    async def read(self, fn: Callable[[Conn], T]) -> T: ...

    async def read_point(self, fn: Callable[[Conn], T]) -> T:
        """A read of a few rows found by key; a backend may run it without a thread hop."""
        ...


@dataclass(frozen=True)
class Statements:
    """One backend's synchronous statements, each run inside the facade's transaction.

    The facade (`QueueCore`) owns everything on the caller's side: rows built and encoded
    before the write, the clock, the snapshot id, the dispatcher wake-up. A backend provides
    only these functions, with the same arguments and the same guarantees (interface.py), so
    SQLite (`SQLITE`, below) and PostgreSQL (store/pg/queue.py) share one facade and cannot
    drift apart in what they check before writing.
    """

    insert_job: Callable[[Conn, MachineSpec, Job, _Dedupe], None]
    write_context: Callable[[Conn, PreparedContext, str], str]
    insert_run_root: Callable[..., Job]
    insert_successors: Callable[..., Any]
    claim: Callable[..., Job | None]
    fetch_context: Callable[[Conn, str], EventContext | None]
    load_state: Callable[[Conn, str], dict[str, Any]]
    record_spawn: Callable[[Conn, str, int, int], None]
    complete: Callable[..., Job]
    apply_fact_plan: Callable[..., Any]
    retry: Callable[[Conn, MachineSpec, Job, _Ending, str], Job]
    cancel: Callable[[Conn, MachineSpec, str, str, str], Job]
    interrupt: Callable[[Conn, MachineSpec, Job, _Ending], Job]
    recover: Callable[[Conn, MachineSpec, str], list[Job]]
    fetch_job: Callable[[Conn, str], Job | None]
    fetch_jobs: Callable[..., tuple[list[Job], int]]
    fetch_links: Callable[[Conn, Job], JobLinks]
    fetch_pipeline_run: Callable[[Conn, str], PipelineRun | None]
    fetch_job_tree: Callable[[Conn, str], dict[str, Any] | None]
    fetch_attempts: Callable[[Conn, str], list[Attempt]]
    fetch_transitions: Callable[[Conn, str], list[Transition]]
    fetch_log_entries: Callable[[Conn, str], list[LogEntry]]
    search_logs: Callable[[Conn, LogFilter], tuple[list[LogEntry], int]]
    running_counts: Callable[[Conn], dict[str, int]]
    queue_depth: Callable[[Conn], int]
    outstanding_counts: Callable[[Conn], dict[str, int]]
    next_retry_at: Callable[[Conn], str | None]


class QueueCore:
    """Enqueue, claim, complete, retry and inspect jobs, on the statements of one backend.

    `snapshot_id()` names the config snapshot live right now (stamped on enqueue and claim).
    `dedupe_ttl` (seconds) is `service.dedupe_ttl`. `on_enqueue()` is called after a commit
    that made a job claimable (enqueue, retry, crash recovery) so the dispatcher wakes at once
    instead of polling. `clock` exists for tests. A subclass pins the backend (`_sql`): `Queue`
    (SQLite, below) and `PgQueue` (store/pg/queue.py).
    """

    # The backend's statements: a class default, which an instance may replace with the same
    # functions bound to more arguments (a PgQueue bound to its node identity).
    _sql: Statements

    def __init__(
        self,
        db: Store,
        *,
        snapshot_id: Callable[[], str | None],
        dedupe_ttl: float,
        on_enqueue: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._snapshot_id = snapshot_id
        self._dedupe_ttl = dedupe_ttl
        self._on_enqueue = on_enqueue
        self._clock = clock
        self.machine: MachineSpec = load_machine("job")
        self._terminal = frozenset(self.machine.terminal)

    # -- writes -------------------------------------------------------------------------

    async def enqueue(
        self,
        plugin: str,
        command: str,
        payload: Any,
        submitted_by: str,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        dedupe_key: str | None = None,
        dedupe_ttl: float | None = None,
        parent_job_id: str | None = None,
        event_context_id: str | None = None,
        source_event_id: str | None = None,
        context: ContextSpec | None = None,
        retry_of: str | None = None,
        rerun_of: str | None = None,
        guard: Callable[[Any, Job], None] | None = None,
    ) -> Job:
        """Insert a queued job and wake the dispatcher.

        Dedupe (scoped to plugin + command): a queued or running job with the same key drops
        this one (`outstanding`; the Go gateway checked this only for the scheduler, so two
        outstanding duplicates could coexist); with an effective TTL > 0 (`dedupe_ttl`, else
        `service.dedupe_ttl`), a job with the same key that succeeded within it drops it too
        (`recent_success`). Raises DedupeDropped or, for a redelivered routed event,
        SourceEventConflict.

        `context` (instead of `event_context_id`) writes a new event_context row in the same
        transaction and points the job at it: nothing is written if the job is dropped.
        Oversize baggage raises ContextTooLarge before anything is written.

        `retry_of` links the job to the one it runs again (`ductile job retry`): that job must
        exist (JobNotFound), be in a retryable status and not be retried already
        (JobStateConflict), checked in the inserting transaction. `rerun_of` links an entry of
        a rerun pipeline run to the root job of the run it repeats.

        `guard(conn, job)` runs first inside the inserting transaction and may refuse the
        enqueue by raising (a DuctileError; nothing is written): the scheduler's leader
        records its fire there, so the fire row and its job commit together or not at all.
        """
        require_text(plugin=plugin, command=command, submitted_by=submitted_by)
        if context is not None and event_context_id is not None:
            raise StoreError(
                "enqueue: give either event_context_id (a stored context) or context (a new "
                "one), not both"
            )
        prepared = prepare_context(context) if context is not None else None
        now = self._clock()
        ttl = self._dedupe_ttl if dedupe_ttl is None else dedupe_ttl
        job = queued_job(
            plugin=plugin,
            command=command,
            payload=payload,
            submitted_by=submitted_by,
            max_attempts=max_attempts,
            dedupe_key=dedupe_key,
            created_at=format_time(now),
            parent_job_id=parent_job_id,
            source_event_id=source_event_id,
            event_context_id=prepared.id if prepared is not None else event_context_id,
            snapshot_id=self._snapshot_id(),
        )
        if retry_of is not None or rerun_of is not None:
            job = replace(job, retry_of=retry_of, rerun_of=rerun_of)
        dedupe = _Dedupe(
            check_outstanding=True,
            success_cutoff=shift_time(now, -ttl) if ttl > 0 else None,
        )

        def insert(conn: Conn) -> None:
            if guard is not None:
                guard(conn, job)
            self._sql.insert_job(conn, self.machine, job, dedupe)
            if prepared is not None:
                self._sql.write_context(conn, prepared, job.created_at)

        await self._db.write(insert)
        self._on_enqueue()
        return job

    def _pending(self, parent: Job, successors: Sequence[Successor], now: str) -> list[_Pending]:
        """Check and encode successors on the caller's side (bad input fails before writing)."""
        pending = []
        for successor in successors:
            require_text(
                plugin=successor.plugin,
                command=successor.command,
                submitted_by=successor.submitted_by,
            )
            prepared = prepare_context(successor.context) if successor.context else None
            job = queued_job(
                plugin=successor.plugin,
                command=successor.command,
                payload=successor.payload,
                submitted_by=successor.submitted_by,
                max_attempts=successor.max_attempts,
                dedupe_key=successor.dedupe_key,
                created_at=now,
                parent_job_id=parent.id,
                source_event_id=successor.source_event_id,
                event_context_id=prepared.id if prepared is not None else None,
                snapshot_id=self._snapshot_id(),
            )
            pending.append(_Pending(successor=successor, job=job, context=prepared))
        return pending

    async def start_run(
        self,
        root: Successor,
        branches: Sequence[Successor],
        *,
        result: str | None,
        reason: str,
        rerun_of: str | None = None,
    ) -> Finished:
        """Start a pipeline run whose first step fans out: one root job and its branches.

        `root` (the router's synthetic `core.split` job, no parent) is written already
        `succeeded`: nothing runs for it, so it is enqueued, started and ended in this one
        transaction, with `result` as its job_log result and `reason` as its last transition.
        `branches` are enqueued as its successors (`parent_job_id` = the root), so the run has
        one id and one job tree. All of it commits together or not at all; a branch dropped
        by its dedupe key is reported in `Finished.dropped`, as for `complete_and_claim`.
        """
        require_text(plugin=root.plugin, command=root.command, submitted_by=root.submitted_by)
        prepared = prepare_context(root.context) if root.context is not None else None
        now = self._clock()
        stamp = format_time(now)
        job = queued_job(
            plugin=root.plugin,
            command=root.command,
            payload=root.payload,
            submitted_by=root.submitted_by,
            max_attempts=root.max_attempts,
            dedupe_key=None,
            created_at=stamp,
            parent_job_id=None,
            source_event_id=root.source_event_id,
            event_context_id=prepared.id if prepared is not None else None,
            snapshot_id=self._snapshot_id(),
        )
        if rerun_of is not None:  # `ductile pipeline rerun` of a fanned-out run
            job = replace(job, rerun_of=rerun_of)
        pending = self._pending(job, branches, stamp)
        ttl = self._dedupe_ttl
        dedupe = _Dedupe(
            check_outstanding=True, success_cutoff=shift_time(now, -ttl) if ttl > 0 else None
        )

        def write(conn: Conn) -> Finished:
            done = self._sql.insert_run_root(conn, self.machine, job, now=stamp, reason=reason,
                                             result=result)
            if prepared is not None:
                self._sql.write_context(conn, prepared, stamp)
            inserted, dropped = self._sql.insert_successors(conn, self.machine, pending, dedupe)
            return Finished(
                done,
                successors=inserted,
                dropped=tuple(
                    DroppedSuccessor(successor=item.successor, error=error)
                    for item, error in dropped
                ),
            )

        finished = await self._db.write(write)
        if finished.successors:
            self._on_enqueue()
        return finished

    async def claim(
        self, skip_plugins: Collection[str] = (), caps: Mapping[str, int] | None = None
    ) -> Job | None:
        """Move the oldest eligible queued job to running and open its attempt row.

        Eligible: due (`next_retry_at` empty or past), plugin not in `skip_plugins` (those at
        their parallelism limit), and no running job shares its dedupe key and target (the key
        is also a concurrency key). Retries keep their created_at, hence their FIFO place.

        `caps` maps a plugin to the most jobs of it that may run at once across every gateway
        sharing the store: a job of a capped plugin is claimed only while fewer are running,
        counted in the claiming transaction. The cap binds only claims that pass it, so every
        claimer must pass the same caps. On PostgreSQL a claim may also pass over a capped
        plugin whose count another gateway is taking at that moment (store/pg/writes.py): a
        None then means "nothing now", as with a skip list, and the caller looks again later.
        """
        claim = self._claimer(skip_plugins, caps)
        found = await self._db.write(claim)
        return found.job if found is not None else None

    async def claim_next(
        self, skip_plugins: Collection[str] = (), caps: Mapping[str, int] | None = None
    ) -> Claim | None:
        """`claim`, plus the plugin's stored state read in the same transaction (one hop
        instead of two on the dispatcher's hot path)."""
        return await self._db.write(self._claimer(skip_plugins, caps))

    def _claimer(
        self, skip_plugins: Collection[str], caps: Mapping[str, int] | None = None
    ) -> Callable[[Conn], Claim | None]:
        now = format_time(self._clock())
        snapshot = self._snapshot_id()
        skip = tuple(sorted(skip_plugins))
        limits = checked_caps(caps)
        sql = self._sql

        def claim(conn: Conn) -> Claim | None:
            job = sql.claim(conn, self.machine, now=now, snapshot=snapshot, skip=skip,
                            caps=limits)
            if job is None:
                return None
            try:
                context = (sql.fetch_context(conn, job.event_context_id)
                           if job.event_context_id else None)
                return Claim(job=job, state=sql.load_state(conn, job.plugin), context=context)
            except StoreError as exc:
                # Keep the claim: the job fails visibly instead of the claim aborting forever.
                return Claim(job=job, state={}, state_error=str(exc))

        return claim

    async def record_spawn(self, job_id: str, attempt: int, pid: int) -> None:
        """Note the plugin's pid on the attempt row (for the ledger; cheap, group-committed)."""
        await self._db.write(lambda conn: self._sql.record_spawn(conn, job_id, attempt, pid))

    async def complete(self, job: Job, status: str, **ending: Any) -> Job:
        """`complete_and_claim` without claiming: end the job and return its final row."""
        return (await self.complete_and_claim(job, status, **ending)).job

    async def retry(self, job: Job, **ending: Any) -> Job:
        """`retry_and_claim` without claiming: requeue the job and return its row."""
        return (await self.retry_and_claim(job, **ending)).job

    async def complete_and_claim(
        self,
        job: Job,
        status: str,
        *,
        result: str | None,
        last_error: str | None,
        stderr: str | None,
        exit_code: int | None,
        duration_ms: int | None,
        outcome: str,
        state_update: tuple[str, Mapping[str, Any]] | None = None,
        claim_next: Collection[str] | None = None,
        decision: str | None = None,
        successors: Sequence[Successor] = (),
        facts: FactPlan | None = None,
    ) -> Finished:
        """End the job in terminal `status`, write its job_log row and finish its attempt.

        `outcome` classifies the attempt (timeout, plugin_error, ...); `decision`, when the job's
        fate differs from it (attempts_exhausted), heads the transition's reason instead.

        `state_update = (plugin, updates)` is shallow-merged into plugin_state in the same
        transaction; if the merged state is over 1 MiB nothing at all is written (StoreError),
        so the dispatcher can then fail the job without a half-applied success.

        `facts` (from facts.plan_facts, for a `succeeded` job only) records plugin facts and
        their mirrored plugin_state in the same transaction, instead of `state_update`.

        `successors` are enqueued after the terminal write, before the chained claim, with
        `parent_job_id` = this job, each with its own context row: all of them commit with
        the completion or none do. A successor whose event was already delivered to that
        target (SourceEventConflict) or whose dedupe key drops it (DedupeDropped, same rules
        as `enqueue`) is skipped and reported in `Finished.dropped`; any other error aborts
        the whole completion. The dispatcher is woken after commit when one was enqueued.

        With `claim_next` (a skip list), the next eligible job is claimed in the same
        transaction, so a worker goes from one job to the next in one database hop.
        """
        if status not in self._terminal:
            raise StoreError(f"invalid terminal status: {status!r}")
        if facts is not None and status != "succeeded":
            raise StoreError(f"job {job.id}: facts are recorded only for a succeeded job")
        if facts is not None and state_update is not None:
            raise StoreError(
                f"job {job.id}: give facts or state_update, not both (a matching fact rule "
                "replaces the shallow merge)"
            )
        update = None
        if state_update is not None:
            update = (state_update[0], encode_updates(state_update[1]))
        now = self._clock()
        pending = self._pending(job, successors, format_time(now))
        ttl = self._dedupe_ttl
        dedupe = _Dedupe(
            check_outstanding=True, success_cutoff=shift_time(now, -ttl) if ttl > 0 else None
        )
        end = _Ending(
            now=format_time(now), last_error=last_error, exit_code=exit_code,
            duration_ms=duration_ms, outcome=outcome, stderr=stderr, decision=decision,
        )
        claim = self._claimer(claim_next) if claim_next is not None else None

        def finish(conn: Conn) -> Finished:
            done = self._sql.complete(conn, self.machine, job, status, end, result, update)
            if facts is not None:
                self._sql.apply_fact_plan(conn, facts, done.id, done.command, end.now)
            inserted, dropped = self._sql.insert_successors(conn, self.machine, pending, dedupe)
            return Finished(
                done,
                claim(conn) if claim is not None else None,
                successors=inserted,
                dropped=tuple(
                    DroppedSuccessor(successor=item.successor, error=error)
                    for item, error in dropped
                ),
            )

        finished = await self._db.write(finish)
        if finished.successors:
            self._on_enqueue()
        return finished

    async def retry_and_claim(
        self,
        job: Job,
        *,
        delay: float,
        last_error: str | None,
        exit_code: int | None,
        duration_ms: int | None,
        outcome: str,
        stderr: str | None,
        claim_next: Collection[str] | None = None,
    ) -> Finished:
        """Send a running job back to the queue as attempt + 1, due `delay` seconds from now.

        Refused (StoreError) when the job is on its last attempt: the caller must complete it.
        `claim_next` works as for `complete`.
        """
        now = self._clock()
        end = _Ending(
            now=format_time(now), last_error=last_error, exit_code=exit_code,
            duration_ms=duration_ms, outcome=outcome, stderr=stderr,
        )
        due = shift_time(now, max(0.0, delay))
        claim = self._claimer(claim_next) if claim_next is not None else None

        def requeue(conn: Conn) -> Finished:
            updated = self._sql.retry(conn, self.machine, job, end, due)
            return Finished(updated, claim(conn) if claim is not None else None)

        finished = await self._db.write(requeue)
        self._on_enqueue()
        return finished

    async def cancel(self, job_id: str, *, reason: str = "cancelled") -> Job:
        """End a queued job `cancelled` before it runs, `reason` as its last_error.

        A running job cannot be cancelled here (InvalidTransition): the dispatcher stops its
        plugin first, then records the cancel (`Dispatcher.cancel_running`). JobNotFound for
        an unknown id.
        """
        now = format_time(self._clock())
        return await self._db.write(
            lambda conn: self._sql.cancel(conn, self.machine, job_id, reason, now))

    async def interrupt(self, job: Job, *, duration_ms: int | None, stderr: str | None) -> Job:
        """Send a running job back to the queue because the gateway is stopping and its
        attempt did not end within service.shutdown_grace (see writes._interrupt): no crash,
        no poison-job strike, and the attempt is not counted against its retries."""
        end = _Ending(
            now=format_time(self._clock()), last_error=INTERRUPTED_REASON, exit_code=None,
            duration_ms=duration_ms, outcome="interrupted", stderr=stderr,
        )
        return await self._db.write(lambda conn: self._sql.interrupt(conn, self.machine, job, end))

    async def recover_orphans(self) -> list[Job]:
        """Deal with jobs a crash left `running` (call at boot, before dispatching).

        Each goes back to the queue as attempt + 1 (no backoff, last_error cleared) or, when
        that exceeds max_attempts, to dead with a job_log row. Returns the updated jobs.
        """
        now = format_time(self._clock())
        jobs = await self._db.write(lambda conn: self._sql.recover(conn, self.machine, now))
        if any(job.status == "queued" for job in jobs):
            self._on_enqueue()
        return jobs

    # -- reads --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return await self._db.read_point(lambda conn: self._sql.fetch_job(conn, job_id))

    async def list(
        self,
        *,
        plugin: str | None = None,
        command: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Job], int]:
        """Jobs newest first (at most `limit`) and the total matching count."""
        if limit < 1:
            raise StoreError("limit must be a positive integer")
        return await self._db.read(
            lambda conn: self._sql.fetch_jobs(
                conn, plugin=plugin, command=command, status=status, limit=limit
            )
        )

    async def links(self, job: Job) -> JobLinks:
        """The job's retry and rerun links, both ways."""
        return await self._db.read_point(lambda conn: self._sql.fetch_links(conn, job))

    async def pipeline_run(self, job_id: str) -> PipelineRun | None:
        """The pipeline run `job_id` is the root of (store/tree.py), or None when unknown."""
        return await self._db.read(lambda conn: self._sql.fetch_pipeline_run(conn, job_id))

    async def tree(self, root_id: str) -> dict[str, Any] | None:
        """The job tree under `root_id` (see store/tree.py fetch_job_tree), or None."""
        return await self._db.read(lambda conn: self._sql.fetch_job_tree(conn, root_id))

    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, first first."""
        return await self._db.read_point(lambda conn: self._sql.fetch_attempts(conn, job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        """The job's status history, oldest first."""
        return await self._db.read_point(lambda conn: self._sql.fetch_transitions(conn, job_id))

    async def log_entries(self, job_id: str) -> list[LogEntry]:
        """The job's job_log rows (one per terminal attempt), by attempt."""
        return await self._db.read_point(lambda conn: self._sql.fetch_log_entries(conn, job_id))

    async def search_logs(self, where: LogFilter) -> tuple[list[LogEntry], int]:
        """Job log rows matching `where`, newest first, and the total (see store/joblog.py)."""
        return await self._db.read(lambda conn: self._sql.search_logs(conn, where))

    async def running_counts(self) -> dict[str, int]:
        """Running jobs per plugin (the dispatcher's parallelism skip-list input)."""
        return await self._db.read_point(self._sql.running_counts)

    async def queue_depth(self) -> int:
        """How many jobs are queued (due or not)."""
        return await self._db.read(self._sql.queue_depth)

    async def outstanding_counts(self) -> dict[str, int]:
        """Jobs queued or running, per plugin (the backpressure count's seed and re-sync)."""
        return await self._db.read(self._sql.outstanding_counts)

    async def next_due_at(self) -> datetime | None:
        """The earliest `next_retry_at` of a queued job (possibly already past): when the
        dispatcher must wake even if nothing is enqueued. None when no queued job waits on a
        retry time."""
        text = await self._db.read_point(self._sql.next_retry_at)
        return parse_time(text) if text else None


def checked_caps(caps: Mapping[str, int] | None) -> dict[str, int]:
    """The claim caps as a plain dict; a cap that is not a whole number >= 0 is refused
    (StoreError naming the plugin) before anything is written."""
    limits: dict[str, int] = {}
    for plugin, cap in (caps or {}).items():
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise StoreError(
                f"claim caps: plugin {plugin!r} has cap {cap!r}; a cap is the most jobs of the "
                "plugin running at once across the cluster, a whole number >= 0"
            )
        limits[plugin] = cap
    return limits


def _sqlite_claim(
    conn: Conn, machine: MachineSpec, *, now: str, snapshot: str | None, skip: Collection[str],
    caps: Mapping[str, int],
) -> Job | None:
    """The SQLite claim takes its skip list as JSON text (read by json_each). A capped
    plugin already at its cap joins the skip list: the one writer counts and claims in one
    transaction, so nothing can start a job of it in between."""
    skipped = [*skip, *at_cap(conn, caps)] if caps else list(skip)
    return _claim(conn, machine, now=now, snapshot=snapshot, skip=json.dumps(skipped))


SQLITE = Statements(
    insert_job=_insert_job,
    write_context=write_prepared,
    insert_run_root=_insert_run_root,
    insert_successors=_insert_successors,
    claim=_sqlite_claim,
    fetch_context=fetch_context,
    load_state=load_state,
    record_spawn=_record_spawn,
    complete=_complete,
    apply_fact_plan=apply_fact_plan,
    retry=_retry,
    cancel=_cancel,
    interrupt=_interrupt,
    recover=_recover,
    fetch_job=fetch_job,
    fetch_jobs=fetch_jobs,
    fetch_links=fetch_links,
    fetch_pipeline_run=fetch_pipeline_run,
    fetch_job_tree=fetch_job_tree,
    fetch_attempts=fetch_attempts,
    fetch_transitions=fetch_transitions,
    fetch_log_entries=fetch_log_entries,
    search_logs=search_logs,
    running_counts=_running_counts,
    queue_depth=_queue_depth,
    outstanding_counts=_outstanding_counts,
    next_retry_at=_next_retry_at,
)


class Queue(QueueCore):
    """The job queue on SQLite: one writer thread, group commit (db.py)."""

    _sql = SQLITE

    def __init__(
        self,
        db: Database,
        *,
        snapshot_id: Callable[[], str | None],
        dedupe_ttl: float,
        on_enqueue: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(db, snapshot_id=snapshot_id, dedupe_ttl=dedupe_ttl,
                         on_enqueue=on_enqueue, clock=clock)
