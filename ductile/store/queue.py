"""The durable job queue: the only module that writes job_queue.

Every status change is checked against `states/job.yaml` before it is made and recorded in
job_transitions in the same transaction, so the transition history can always explain the
cached `status` column (`ductile job inspect` relies on that). Each attempt gets a job_attempts
row at claim time and is finished by `complete`, `retry` or crash recovery: that row is our
execution ledger (duration, exit code, outcome, stderr tail).

Each public method is one `Database.write` (one savepoint in a group commit) or one
`Database.read`. The SQL lives in small synchronous functions taking a connection, so the CLI
can reuse the readers on a read-only connection without a running daemon.

Time comes from an injectable clock and is stored fixed-width (see jobs.py), so every "is it
due yet" question is a string comparison in SQL.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ductile.errors import DedupeDropped, InvalidTransition, SourceEventConflict, StoreError
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
    LogEntry,
    Transition,
    format_time,
    parse_time,
    shift_time,
    utcnow,
)
from ductile.store.joblog import LogFilter, search_logs
from ductile.store.snapshots import fetch_snapshot
from ductile.store.tree import fetch_job_tree
from ductile.store.state import apply_state_update, encode_updates, load_state

DEFAULT_MAX_ATTEMPTS = 4
STDERR_LOG_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 4 * 1024
RECOVERED_REASON = "recovered after crash"
RECOVERY_DEAD_ERROR = "Job marked dead during crash recovery: max attempts ({}) reached"
POISON_ERROR = (
    "poison job quarantined: it was running during {} crashes of the gateway, so it is not "
    "run again (it may be what crashes it); see its attempts with ductile job inspect, fix "
    "the cause, then enqueue it anew"
)
POISON_CRASHES = 2  # a job running during this many crashes is never claimed again

_JOB_COLUMNS = Job.select_list()


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


class Queue:
    """Enqueue, claim, complete, retry and inspect jobs.

    `snapshot_id()` names the config snapshot live right now (stamped on enqueue and claim).
    `dedupe_ttl` (seconds) is `service.dedupe_ttl`. `on_enqueue()` is called after a commit
    that made a job claimable (enqueue, retry, crash recovery) so the dispatcher wakes at once
    instead of polling. `clock` exists for tests.
    """

    def __init__(
        self,
        db: Database,
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
        """
        _require_text(plugin=plugin, command=command, submitted_by=submitted_by)
        if context is not None and event_context_id is not None:
            raise StoreError(
                "enqueue: give either event_context_id (a stored context) or context (a new "
                "one), not both"
            )
        prepared = prepare_context(context) if context is not None else None
        now = self._clock()
        ttl = self._dedupe_ttl if dedupe_ttl is None else dedupe_ttl
        job = self._queued_job(
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
        )
        dedupe = _Dedupe(
            check_outstanding=True,
            success_cutoff=shift_time(now, -ttl) if ttl > 0 else None,
        )

        def insert(conn: sqlite3.Connection) -> None:
            _insert_job(conn, self.machine, job, dedupe)
            if prepared is not None:
                write_prepared(conn, prepared, job.created_at)

        await self._db.write(insert)
        self._on_enqueue()
        return job

    def _queued_job(
        self,
        *,
        plugin: str,
        command: str,
        payload: Any,
        submitted_by: str,
        max_attempts: int,
        dedupe_key: str | None,
        created_at: str,
        parent_job_id: str | None,
        source_event_id: str | None,
        event_context_id: str | None,
    ) -> Job:
        """The row of a new queued job (attempt 1, stamped with the live config snapshot)."""
        key = dedupe_key.strip() if dedupe_key and dedupe_key.strip() else None
        return Job(
            id=str(uuid.uuid4()),
            plugin=plugin,
            command=command,
            payload=encode_payload(payload),
            status="queued",
            attempt=1,
            max_attempts=max_attempts if max_attempts > 0 else DEFAULT_MAX_ATTEMPTS,
            submitted_by=submitted_by,
            dedupe_key=key,
            created_at=created_at,
            started_at=None,
            completed_at=None,
            next_retry_at=None,
            last_error=None,
            parent_job_id=parent_job_id,
            source_event_id=source_event_id,
            event_context_id=event_context_id,
            enqueued_config_snapshot_id=self._snapshot_id(),
            started_config_snapshot_id=None,
        )

    def _pending(self, parent: Job, successors: Sequence[Successor], now: str) -> list[_Pending]:
        """Check and encode successors on the caller's side (bad input fails before writing)."""
        pending = []
        for successor in successors:
            _require_text(
                plugin=successor.plugin,
                command=successor.command,
                submitted_by=successor.submitted_by,
            )
            prepared = prepare_context(successor.context) if successor.context else None
            job = self._queued_job(
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
            )
            pending.append(_Pending(successor=successor, job=job, context=prepared))
        return pending

    async def claim(self, skip_plugins: Collection[str] = ()) -> Job | None:
        """Move the oldest eligible queued job to running and open its attempt row.

        Eligible: due (`next_retry_at` empty or past), plugin not in `skip_plugins` (those at
        their parallelism limit), and no running job shares its dedupe key and target (the key
        is also a concurrency key). Retries keep their created_at, hence their FIFO place.
        """
        claim = self._claimer(skip_plugins)
        found = await self._db.write(claim)
        return found.job if found is not None else None

    async def claim_next(self, skip_plugins: Collection[str] = ()) -> Claim | None:
        """`claim`, plus the plugin's stored state read in the same transaction (one hop
        instead of two on the dispatcher's hot path)."""
        return await self._db.write(self._claimer(skip_plugins))

    def _claimer(self, skip_plugins: Collection[str]) -> Callable[[sqlite3.Connection], Claim | None]:
        now = format_time(self._clock())
        snapshot = self._snapshot_id()
        skip = json.dumps(sorted(skip_plugins))

        def claim(conn: sqlite3.Connection) -> Claim | None:
            job = _claim(conn, self.machine, now=now, snapshot=snapshot, skip=skip)
            if job is None:
                return None
            try:
                context = (fetch_context(conn, job.event_context_id)
                           if job.event_context_id else None)
                return Claim(job=job, state=load_state(conn, job.plugin), context=context)
            except StoreError as exc:
                # Keep the claim: the job fails visibly instead of the claim aborting forever.
                return Claim(job=job, state={}, state_error=str(exc))

        return claim

    async def record_spawn(self, job_id: str, attempt: int, pid: int) -> None:
        """Note the plugin's pid on the attempt row (for the ledger; cheap, group-committed)."""
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE job_attempts SET pid = ? WHERE job_id = ? AND attempt = ?",
                (pid, job_id, attempt),
            )
        )

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
        dedupe = _Dedupe(
            check_outstanding=True,
            success_cutoff=(
                shift_time(now, -self._dedupe_ttl) if self._dedupe_ttl > 0 else None
            ),
        )
        end = _Ending(
            now=format_time(now),
            last_error=last_error,
            exit_code=exit_code,
            duration_ms=duration_ms,
            outcome=outcome,
            stderr=stderr,
            decision=decision,
        )
        claim = self._claimer(claim_next) if claim_next is not None else None

        def finish(conn: sqlite3.Connection) -> Finished:
            done = _complete(conn, self.machine, job, status, end, result, update)
            if facts is not None:
                apply_fact_plan(conn, facts, done.id, done.command, end.now)
            inserted, dropped = _insert_successors(conn, self.machine, pending, dedupe)
            return Finished(
                done,
                claim(conn) if claim is not None else None,
                successors=inserted,
                dropped=dropped,
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
            now=format_time(now),
            last_error=last_error,
            exit_code=exit_code,
            duration_ms=duration_ms,
            outcome=outcome,
            stderr=stderr,
        )
        due = shift_time(now, max(0.0, delay))
        claim = self._claimer(claim_next) if claim_next is not None else None

        def requeue(conn: sqlite3.Connection) -> Finished:
            updated = _retry(conn, self.machine, job, end, due)
            return Finished(updated, claim(conn) if claim is not None else None)

        finished = await self._db.write(requeue)
        self._on_enqueue()
        return finished

    async def cancel(self, job_id: str, *, reason: str = "cancelled") -> Job:
        """Mark a queued job dead before it runs (a running job cannot be cancelled here)."""
        now = format_time(self._clock())
        return await self._db.write(lambda conn: _cancel(conn, self.machine, job_id, reason, now))

    async def recover_orphans(self) -> list[Job]:
        """Deal with jobs a crash left `running` (call at boot, before dispatching).

        Each goes back to the queue as attempt + 1 (no backoff, last_error cleared) or, when
        that exceeds max_attempts, to dead with a job_log row. Returns the updated jobs.
        """
        now = format_time(self._clock())
        jobs = await self._db.write(lambda conn: _recover(conn, self.machine, now))
        if any(job.status == "queued" for job in jobs):
            self._on_enqueue()
        return jobs

    # -- reads --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return await self._db.read(lambda conn: fetch_job(conn, job_id))

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
            lambda conn: fetch_jobs(
                conn, plugin=plugin, command=command, status=status, limit=limit
            )
        )

    async def tree(self, root_id: str) -> dict[str, Any] | None:
        """The job tree under `root_id` (see store/tree.py fetch_job_tree), or None."""
        return await self._db.read(lambda conn: fetch_job_tree(conn, root_id))

    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, first first."""
        return await self._db.read(lambda conn: fetch_attempts(conn, job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        """The job's status history, oldest first."""
        return await self._db.read(lambda conn: fetch_transitions(conn, job_id))

    async def log_entries(self, job_id: str) -> list[LogEntry]:
        """The job's job_log rows (one per terminal attempt), by attempt."""
        return await self._db.read(lambda conn: fetch_log_entries(conn, job_id))

    async def search_logs(self, where: LogFilter) -> tuple[list[LogEntry], int]:
        """Job log rows matching `where`, newest first, and the total (see store/joblog.py)."""
        return await self._db.read(lambda conn: search_logs(conn, where))

    async def running_counts(self) -> dict[str, int]:
        """Running jobs per plugin (the dispatcher's parallelism skip-list input)."""
        return await self._db.read(_running_counts)

    async def queue_depth(self) -> int:
        """How many jobs are queued (due or not)."""
        return await self._db.read(
            lambda conn: int(
                conn.execute("SELECT count(*) FROM job_queue WHERE status = 'queued'").fetchone()[0]
            )
        )

    async def next_due_at(self) -> datetime | None:
        """The earliest `next_retry_at` of a queued job (possibly already past): when the
        dispatcher must wake even if nothing is enqueued. None when no queued job waits on a
        retry time."""
        text = await self._db.read(
            lambda conn: conn.execute(
                "SELECT min(next_retry_at) FROM job_queue "
                "WHERE status = 'queued' AND next_retry_at IS NOT NULL AND next_retry_at != ''"
            ).fetchone()[0]
        )
        return parse_time(text) if text else None


# -- synchronous readers (also used by the CLI on a read-only connection) ------------------


def fetch_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    """One job row, or None."""
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM job_queue WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row is not None else None


def fetch_jobs(
    conn: sqlite3.Connection,
    *,
    plugin: str | None,
    command: str | None,
    status: str | None,
    limit: int,
) -> tuple[list[Job], int]:
    """Filtered jobs newest first, plus the total ignoring `limit`."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("plugin", plugin), ("command", command), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    total = int(conn.execute(f"SELECT count(*) FROM job_queue {where}", params).fetchone()[0])
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM job_queue {where} "
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [Job.from_row(row) for row in rows], total


def fetch_attempts(conn: sqlite3.Connection, job_id: str) -> list[Attempt]:
    rows = conn.execute(
        f"SELECT {Attempt.select_list()} FROM job_attempts WHERE job_id = ? ORDER BY attempt, id",
        (job_id,),
    )
    return [Attempt.from_row(row) for row in rows]


def fetch_transitions(conn: sqlite3.Connection, job_id: str) -> list[Transition]:
    rows = conn.execute(
        f"SELECT {Transition.select_list()} FROM job_transitions WHERE job_id = ? "
        "ORDER BY created_at, id",
        (job_id,),
    )
    return [Transition.from_row(row) for row in rows]


def fetch_log_entries(conn: sqlite3.Connection, job_id: str) -> list[LogEntry]:
    rows = conn.execute(
        f"SELECT {LogEntry.select_list()} FROM job_log WHERE job_id = ? "
        "ORDER BY attempt, completed_at",
        (job_id,),
    )
    return [LogEntry.from_row(row) for row in rows]


def read_job_ledger(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """Everything recorded about one job, for `ductile job inspect`; None when unknown.

    Keys: job, attempts, transitions, logs, snapshot (the config snapshot live at enqueue, as
    a dict, or None) and started_snapshot (the one live at the last claim).
    """
    job = fetch_job(conn, job_id)
    if job is None:
        return None
    return {
        "job": job,
        "attempts": fetch_attempts(conn, job_id),
        "transitions": fetch_transitions(conn, job_id),
        "logs": fetch_log_entries(conn, job_id),
        "snapshot": fetch_snapshot(conn, job.enqueued_config_snapshot_id),
        "started_snapshot": fetch_snapshot(conn, job.started_config_snapshot_id),
    }


def _running_counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT plugin, count(*) FROM job_queue WHERE status = 'running' GROUP BY plugin"
    )
    return {str(row[0]): int(row[1]) for row in rows}


# -- payload and text helpers -----------------------------------------------------------


class RawJSON(str):
    """JSON text the caller already validated, stored byte for byte (a webhook body keeps the
    exact bytes its sender signed)."""


def encode_payload(payload: Any) -> str | None:
    """Compact JSON text of the payload (None stays NULL); refuses what JSON cannot carry."""
    if payload is None:
        return None
    if isinstance(payload, RawJSON):
        return str(payload)
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"payload is not JSON-serialisable: {exc}") from exc


def truncate_head(text: str | None, limit: int) -> str | None:
    """The first `limit` bytes of `text` as UTF-8, never splitting a character."""
    if text is None:
        return None
    data = _utf8(text)
    return data[:limit].decode("utf-8", "ignore") if len(data) > limit else data.decode("utf-8")


def truncate_tail(text: str | None, limit: int) -> str | None:
    """The last `limit` bytes of `text` as UTF-8: where a failing plugin says why."""
    if text is None:
        return None
    data = _utf8(text)
    start = max(0, len(data) - limit)
    return data[start:].decode("utf-8", "ignore")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (from undecodable process output) become `?`
    so SQLite, which refuses them, always gets valid text."""
    return text.encode("utf-8", "replace")


def _require_text(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise StoreError(f"{name} is empty")


# -- writer-side operations (run on the writer thread inside a savepoint) -------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Dedupe:
    """What enqueue must check before inserting."""

    check_outstanding: bool
    success_cutoff: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ending:
    """How an attempt ended: the fields complete, retry and the ledger share."""

    now: str
    last_error: str | None
    exit_code: int | None
    duration_ms: int | None
    outcome: str
    stderr: str | None
    decision: str | None = None  # why the job moved (e.g. attempts_exhausted); else outcome

    def reason(self) -> str:
        """The job_transitions reason: the decision code, then the error text if any."""
        code = self.decision or self.outcome
        return f"{code}: {self.last_error}" if self.last_error else code


def _insert_job(conn: sqlite3.Connection, machine: MachineSpec, job: Job, dedupe: _Dedupe) -> None:
    _check_edge(machine, "enqueue", job.id, None, job.status)
    _check_dedupe(conn, job, dedupe)
    _check_source_event(conn, job)
    values = job.as_dict()
    conn.execute(
        f"INSERT INTO job_queue ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()),
    )
    reason = f"enqueued by {job.submitted_by}"
    _append_transition(conn, job.id, None, job.status, reason, job.created_at)


def _insert_successors(
    conn: sqlite3.Connection, machine: MachineSpec, pending: list[_Pending], dedupe: _Dedupe
) -> tuple[tuple[Job, ...], tuple[DroppedSuccessor, ...]]:
    """Enqueue each successor and its context; skip (and report) redeliveries and dedupe
    drops. `_insert_job` raises those before writing anything, so a skip leaves no trace."""
    inserted: list[Job] = []
    dropped: list[DroppedSuccessor] = []
    for item in pending:
        try:
            _insert_job(conn, machine, item.job, dedupe)
        except (SourceEventConflict, DedupeDropped) as exc:
            dropped.append(DroppedSuccessor(successor=item.successor, error=exc))
            continue
        if item.context is not None:
            write_prepared(conn, item.context, item.job.created_at)
        inserted.append(item.job)
    return tuple(inserted), tuple(dropped)


def _check_dedupe(conn: sqlite3.Connection, job: Job, dedupe: _Dedupe) -> None:
    if job.dedupe_key is None:
        return
    target = (job.dedupe_key, job.plugin, job.command)
    if dedupe.check_outstanding:
        row = conn.execute(
            # `+plugin`/`+command` keep SQLite on the dedupe-key index even before ANALYZE has
            # run; otherwise it scans every outstanding job of the target.
            "SELECT id FROM job_queue WHERE dedupe_key = ? AND +plugin = ? AND +command = ? "
            "AND status IN ('queued', 'running') ORDER BY created_at LIMIT 1",
            target,
        ).fetchone()
        if row is not None:
            raise DedupeDropped(job.dedupe_key, "outstanding", row[0])
    if dedupe.success_cutoff is not None:
        row = conn.execute(
            "SELECT id FROM job_queue WHERE dedupe_key = ? AND plugin = ? AND command = ? "
            "AND status = 'succeeded' AND completed_at >= ? ORDER BY completed_at DESC LIMIT 1",
            (*target, dedupe.success_cutoff),
        ).fetchone()
        if row is not None:
            raise DedupeDropped(job.dedupe_key, "recent_success", row[0])


def _check_source_event(conn: sqlite3.Connection, job: Job) -> None:
    """Mirror the unique index job_queue_event_source_idx with a clear error (NULL parents
    never collide there, so they never collide here)."""
    if job.source_event_id is None or job.parent_job_id is None:
        return
    row = conn.execute(
        "SELECT 1 FROM job_queue WHERE parent_job_id = ? AND source_event_id = ? "
        "AND plugin = ? AND command = ?",
        (job.parent_job_id, job.source_event_id, job.plugin, job.command),
    ).fetchone()
    if row is not None:
        raise SourceEventConflict(job.parent_job_id, job.source_event_id, job.plugin, job.command)


_ELIGIBLE = """
      AND q.plugin NOT IN (SELECT value FROM json_each(:skip))
      AND (q.dedupe_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM job_queue AS r
            WHERE r.status = 'running' AND r.dedupe_key = q.dedupe_key
              AND r.plugin = q.plugin AND r.command = q.command))"""

# The oldest eligible queued row, found as the older of two candidates: the oldest fresh row
# (no retry time; partial index job_queue_fresh_idx, FIFO) and the oldest due retry (partial
# index job_queue_retry_due_idx bounds the scan to retries already due). Retries keep their
# created_at, so FIFO order across both kinds is unchanged; retries not yet due are never read.
# INDEXED BY pins the plan: without statistics SQLite would walk (status, created_at) instead.
_CLAIM_SQL = f"""
UPDATE job_queue
SET status = 'running', started_at = :now, started_config_snapshot_id = :snapshot
WHERE status = 'queued' AND id = (
    SELECT id FROM (
        SELECT * FROM (
            SELECT q.id, q.created_at, q.rowid AS rid
            FROM job_queue AS q INDEXED BY job_queue_fresh_idx
            WHERE q.status = 'queued' AND q.next_retry_at IS NULL{_ELIGIBLE}
            ORDER BY q.created_at, q.rowid LIMIT 1)
        UNION ALL
        SELECT * FROM (
            SELECT q.id, q.created_at, q.rowid AS rid
            FROM job_queue AS q INDEXED BY job_queue_retry_due_idx
            WHERE q.status = 'queued' AND q.next_retry_at IS NOT NULL
              AND q.next_retry_at <= :now{_ELIGIBLE}
            ORDER BY q.created_at, q.rowid LIMIT 1))
    ORDER BY created_at, rid
    LIMIT 1)
RETURNING {_JOB_COLUMNS}
"""


def _claim(
    conn: sqlite3.Connection, machine: MachineSpec, *, now: str, snapshot: str | None, skip: str
) -> Job | None:
    _check_edge(machine, "claim", "(next eligible job)", "queued", "running")
    row = conn.execute(_CLAIM_SQL, {"now": now, "snapshot": snapshot, "skip": skip}).fetchone()
    if row is None:
        return None
    job = Job.from_row(row)
    _append_transition(conn, job.id, "queued", "running", "claimed", now)
    conn.execute(
        "INSERT INTO job_attempts (job_id, attempt, created_at, started_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at, "
        "finished_at = NULL, duration_ms = NULL, exit_code = NULL, outcome = NULL, "
        "error = NULL, stderr_tail = NULL, pid = NULL",
        (job.id, job.attempt, now, now),
    )
    return job


def _complete(
    conn: sqlite3.Connection,
    machine: MachineSpec,
    job: Job,
    status: str,
    end: _Ending,
    result: str | None,
    state_update: tuple[str, Mapping[str, Any]] | None,
) -> Job:
    current = _current(conn, job.id)
    _check_transition(machine, "complete", current, status)
    _check_attempt(current, job)
    if state_update is not None:
        apply_state_update(conn, state_update[0], state_update[1], end.now)
    done = _change_status(
        conn,
        current,
        status,
        reason=end.reason(),
        now=end.now,
        completed_at=end.now,
        last_error=end.last_error,
        next_retry_at=None,
    )
    _insert_log(conn, done, result=result, stderr=end.stderr, exit_code=end.exit_code)
    _finish_attempt(conn, current, end)
    return done


def _retry(
    conn: sqlite3.Connection, machine: MachineSpec, job: Job, end: _Ending, due: str
) -> Job:
    current = _current(conn, job.id)
    _check_transition(machine, "retry", current, "queued")
    _check_attempt(current, job)
    if current.attempt >= current.max_attempts:
        raise StoreError(
            f"job {job.id}: cannot retry: attempt {current.attempt} of "
            f"{current.max_attempts} was the last; complete it instead"
        )
    _finish_attempt(conn, current, end)
    return _change_status(
        conn,
        current,
        "queued",
        reason=end.reason(),
        now=end.now,
        attempt=current.attempt + 1,
        next_retry_at=due,
        last_error=end.last_error,
        completed_at=None,
    )


def _cancel(
    conn: sqlite3.Connection, machine: MachineSpec, job_id: str, reason: str, now: str
) -> Job:
    current = _current(conn, job_id)
    _check_transition(machine, "cancel", current, "dead")
    done = _change_status(
        conn, current, "dead", reason=reason, now=now, completed_at=now, last_error=reason
    )
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


def _recover(conn: sqlite3.Connection, machine: MachineSpec, now: str) -> list[Job]:
    orphans = [
        Job.from_row(row)
        for row in conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM job_queue WHERE status = 'running' "
            "ORDER BY created_at, rowid"
        ).fetchall()
    ]
    return [_recover_one(conn, machine, job, now) for job in orphans]


def _recover_one(conn: sqlite3.Connection, machine: MachineSpec, job: Job, now: str) -> Job:
    """Requeue one orphaned job, or bury it: out of attempts, or a poison job.

    A job found running after a crash may simply have been unlucky; a job found running after
    a second crash is the likeliest cause of both. Requeueing it again would turn one bad
    input into a crash loop under systemd, so it is quarantined as `dead` instead. A job out
    of attempts is buried as such, whatever the count of crashes.
    """
    attempt = job.attempt + 1
    limit = job.max_attempts if job.max_attempts > 0 else DEFAULT_MAX_ATTEMPTS
    crashed = _Ending(
        now=now, last_error=RECOVERED_REASON, exit_code=None, duration_ms=None,
        outcome="crashed", stderr=None,
    )
    _finish_attempt(conn, job, crashed)
    crashes = _crashes_survived(conn, job.id) + 1
    if attempt <= limit and crashes < POISON_CRASHES:
        _check_transition(machine, "retry", job, "queued")
        return _change_status(
            conn, job, "queued", reason=RECOVERED_REASON, now=now,
            attempt=attempt, last_error=None, next_retry_at=None,
        )
    if attempt > limit:
        message = RECOVERY_DEAD_ERROR.format(limit)
    else:  # an attempt is left, but this job was running during every crash it saw
        message = POISON_ERROR.format(crashes)
        attempt = job.attempt
    _check_transition(machine, "recover", job, "dead")
    done = _change_status(
        conn, job, "dead", reason=message, now=now,
        attempt=attempt, last_error=message, completed_at=now, next_retry_at=None,
    )
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


def burial_reason(job: Job) -> str:
    """Why crash recovery buried `job` (a row `recover_orphans` returned dead).

    Told apart by the attempt counter alone: a job out of attempts is buried at attempt
    max + 1, a quarantined poison job at the attempt it was running (never past max).
    """
    return "attempts_exhausted" if job.attempt > job.max_attempts else "poison_quarantined"


def _crashes_survived(conn: sqlite3.Connection, job_id: str) -> int:
    """How many earlier crashes found this job running (each left a recovery transition)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM job_transitions WHERE job_id = ? AND reason = ?",
        (job_id, RECOVERED_REASON),
    ).fetchone()
    return int(row[0])


def _current(conn: sqlite3.Connection, job_id: str) -> Job:
    job = fetch_job(conn, job_id)
    if job is None:
        raise StoreError(f"job {job_id} not found")
    return job


def _check_transition(machine: MachineSpec, trigger: str, current: Job, to_status: str) -> None:
    """Refuse a change the machine does not allow, or allows only under another trigger
    (queued -> dead is a `cancel`, never a `complete`)."""
    _check_edge(machine, trigger, current.id, current.status, to_status)


def _check_edge(
    machine: MachineSpec, trigger: str, job_id: str, from_status: str | None, to_status: str
) -> None:
    source = machine.initial if from_status is None else from_status
    by_trigger = any(
        t.trigger == trigger and t.dest == to_status and (source in t.source or "*" in t.source)
        for t in machine.transitions
    )
    # by_trigger implies allowed(); both are asked so MachineSpec stays the final word.
    if not (by_trigger and machine.allowed(from_status, to_status)):
        raise InvalidTransition(job_id, from_status, to_status)


def _check_attempt(current: Job, job: Job) -> None:
    """Refuse an outcome reported for an attempt that is no longer the job's current one."""
    if current.attempt != job.attempt:
        raise StoreError(
            f"job {job.id}: attempt {job.attempt} is stale (the job is at attempt "
            f"{current.attempt})"
        )


def _change_status(
    conn: sqlite3.Connection,
    current: Job,
    to_status: str,
    *,
    reason: str | None,
    now: str,
    **columns: Any,
) -> Job:
    """Update the row (only if its status is still `current.status`) and log the change.

    Callers check the machine first; the status guard in the WHERE clause catches a row
    changed behind our back (another process writing the same file).
    """
    assignments = "".join(f", {name} = ?" for name in columns)
    row = conn.execute(
        f"UPDATE job_queue SET status = ?{assignments} WHERE id = ? AND status = ? "
        f"RETURNING {_JOB_COLUMNS}",
        (to_status, *columns.values(), current.id, current.status),
    ).fetchone()
    if row is None:
        raise StoreError(f"job {current.id}: status is no longer {current.status}")
    _append_transition(conn, current.id, current.status, to_status, reason, now)
    return Job.from_row(row)


def _append_transition(
    conn: sqlite3.Connection,
    job_id: str,
    from_status: str | None,
    to_status: str,
    reason: str | None,
    now: str,
) -> None:
    conn.execute(
        "INSERT INTO job_transitions (job_id, from_status, to_status, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (job_id, from_status, to_status, reason, now),
    )


def _insert_log(
    conn: sqlite3.Connection,
    job: Job,
    *,
    result: str | None,
    stderr: str | None,
    exit_code: int | None,
) -> None:
    """The job_log row of a terminal attempt; `INSERT OR IGNORE` keeps the first one."""
    conn.execute(
        "INSERT OR IGNORE INTO job_log (id, job_id, plugin, command, status, result, attempt, "
        "submitted_by, created_at, completed_at, last_error, stderr, parent_job_id, "
        "source_event_id, event_context_id, enqueued_config_snapshot_id, "
        "started_config_snapshot_id, exit_code) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            f"{job.id}-{job.attempt}", job.id, job.plugin, job.command, job.status, result,
            job.attempt, job.submitted_by, job.created_at, job.completed_at, job.last_error,
            truncate_head(stderr, STDERR_LOG_BYTES), job.parent_job_id, job.source_event_id,
            job.event_context_id, job.enqueued_config_snapshot_id,
            job.started_config_snapshot_id, exit_code,
        ),
    )


def _finish_attempt(conn: sqlite3.Connection, job: Job, end: _Ending) -> None:
    conn.execute(
        "UPDATE job_attempts SET finished_at = ?, duration_ms = ?, exit_code = ?, outcome = ?, "
        "error = ?, stderr_tail = ? WHERE job_id = ? AND attempt = ?",
        (
            end.now, end.duration_ms, end.exit_code, end.outcome, end.last_error,
            truncate_tail(end.stderr, STDERR_TAIL_BYTES), job.id, job.attempt,
        ),
    )
