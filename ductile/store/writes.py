"""The queue's writer-side statements: each takes the writer connection, inside a savepoint.

This is the only code that inserts or updates rows of job_queue, job_attempts, job_transitions
and job_log (retention.py only deletes old ones). Every status change is checked against
`states/job.yaml` before it is made and recorded in job_transitions in the same transaction, so
the transition history can always explain the cached `status` column (`ductile job inspect`
relies on that). Each attempt gets a job_attempts row at claim time and is finished by
`_complete`, `_retry`, `_interrupt` (a clean stop) or crash recovery: that row is our execution
ledger (duration, exit code, outcome, stderr tail). Enqueue's dedupe and source-event checks,
the retry link check, the claim statement and crash recovery (with its poison-job quarantine)
live here too.

`Queue` (queue.py) builds the arguments on the caller's side and runs these through
`Database.write`, the one writer; nothing here awaits, so two of them never interleave. They
are separate from queue.py so the SQL can be read, and its query plans tested
(tests/test_store_query_plans.py), without the async facade. The statements keep their
leading underscore: store internals, called by queue.py, never by the layers above it; only
`burial_reason` (boot routes recovery hooks with it) and the recovery messages are public.

The decisions that need no SQL are public functions here (`enqueue_reason`,
`refuse_retry_target`, `refuse_retry_past_last`, `recovery_fate`, `log_row`,
`attempt_ending`, `enqueue_each`), and the machine and attempt checks (`_check_edge`,
`_check_transition`, `_check_attempt`) are plain functions too: the PostgreSQL statements
(store/pg/writes.py) call the same ones, so both backends decide alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ductile.errors import (
    DedupeDropped,
    InvalidTransition,
    JobNotFound,
    JobStateConflict,
    SourceEventConflict,
    StoreError,
)
from ductile.machines import MachineSpec
from ductile.store.context import PreparedContext, write_prepared
from ductile.store.jobs import Job
from ductile.store.ledger import fetch_job
from ductile.store.state import apply_state_update
from ductile.store.values import DEFAULT_MAX_ATTEMPTS, truncate_head, truncate_tail

STDERR_LOG_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 4 * 1024
RECOVERED_REASON = "recovered after crash"
INTERRUPTED_REASON = (
    "interrupted by shutdown: the gateway stopped before the attempt ended "
    "(service.shutdown_grace ran out); it runs again after the next start, and this attempt is "
    "not counted against its retries"
)
RECOVERY_DEAD_ERROR = "Job marked dead during crash recovery: max attempts ({}) reached"
POISON_ERROR = (
    "poison job quarantined: it was running during {} crashes of the gateway, so it is not "
    "run again (it may be what crashes it); see its attempts with ductile job inspect, fix "
    "the cause, then enqueue it anew"
)
POISON_CRASHES = 2  # a job running during this many crashes is never claimed again

_JOB_COLUMNS = Job.select_list()


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
    if job.retry_of is not None:
        _check_retry_target(conn, machine, job.retry_of)
    _check_dedupe(conn, job, dedupe)
    _check_source_event(conn, job)
    values = job.as_dict()
    conn.execute(
        f"INSERT INTO job_queue ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()),
    )
    _append_transition(conn, job.id, None, job.status, enqueue_reason(job), job.created_at)


def enqueue_reason(job: Job) -> str:
    """The reason of a new job's first transition: who enqueued it, and the job or run it
    repeats (an operator's retry or rerun)."""
    reason = f"enqueued by {job.submitted_by}"
    if job.retry_of is not None:
        reason += f": retry of {job.retry_of}"
    if job.rerun_of is not None:
        reason += f": rerun of the run rooted at {job.rerun_of}"
    return reason


def _check_retry_target(conn: sqlite3.Connection, machine: MachineSpec, old_id: str) -> None:
    """A retry runs again a job that did not do its work, once: checked in the inserting
    transaction, so two concurrent retries of one job cannot both land."""
    old = fetch_job(conn, old_id)
    row = conn.execute(
        "SELECT id FROM job_queue WHERE retry_of = ? ORDER BY created_at, rowid LIMIT 1",
        (old_id,),
    ).fetchone()
    refuse_retry_target(machine, old_id, old, row[0] if row is not None else None)


def refuse_retry_target(
    machine: MachineSpec, old_id: str, old: Job | None, retried_as: str | None
) -> None:
    """Refuse an operator's retry of `old` (JobNotFound, JobStateConflict) unless it exists,
    is in a `retryable` status and was never retried (`retried_as` is the job that did)."""
    if old is None:
        raise JobNotFound(old_id)
    if old.status not in machine.retryable:
        allowed = ", ".join(machine.retryable)
        raise JobStateConflict(old_id, old.status,
                               f"job {old_id} is {old.status}: only a job that is {allowed} "
                               "can be retried")
    if retried_as is not None:
        raise JobStateConflict(old_id, old.status,
                               f"job {old_id} was already retried as job {retried_as}; retry "
                               "that job instead (ductile job inspect shows it)")


class _NewJob(Protocol):
    """A job row to insert with its encoded context (queue.py's `_Pending`, a successor)."""

    @property
    def job(self) -> Job: ...

    @property
    def context(self) -> PreparedContext | None: ...


_P = TypeVar("_P", bound=_NewJob)


def _insert_successors(
    conn: sqlite3.Connection, machine: MachineSpec, pending: Sequence[_P], dedupe: _Dedupe
) -> tuple[tuple[Job, ...], tuple[tuple[_P, DedupeDropped | SourceEventConflict], ...]]:
    """Enqueue each successor and its context; skip (and report, with its error) redeliveries
    and dedupe drops. `_insert_job` raises those before writing anything, so a skip leaves no
    trace. Returns the inserted jobs and the skipped items, each in the order given."""

    def insert(item: _P) -> None:
        _insert_job(conn, machine, item.job, dedupe)
        if item.context is not None:
            write_prepared(conn, item.context, item.job.created_at)

    return enqueue_each(pending, insert)


def enqueue_each(
    pending: Sequence[_P], insert: Callable[[_P], None]
) -> tuple[tuple[Job, ...], tuple[tuple[_P, DedupeDropped | SourceEventConflict], ...]]:
    """Run `insert` (a backend's job insert, then its context) for each item in order; an
    item refused as a redelivery or by its dedupe key is skipped and reported with its error.
    The insert raises those before writing anything, so a skip leaves no trace; any other
    error propagates and aborts the caller's transaction."""
    inserted: list[Job] = []
    dropped: list[tuple[_P, DedupeDropped | SourceEventConflict]] = []
    for item in pending:
        try:
            insert(item)
        except (SourceEventConflict, DedupeDropped) as exc:
            dropped.append((item, exc))
            continue
        inserted.append(item.job)
    return tuple(inserted), tuple(dropped)


def _insert_run_root(
    conn: sqlite3.Connection, machine: MachineSpec, job: Job, *, now: str, reason: str,
    result: str | None,
) -> Job:
    """Insert a split run's synthetic root job and end it `succeeded` in the same transaction.

    No plugin runs for it, so it takes the machine's ordinary edges (enqueue, claim, complete)
    at once, each recorded as a transition; `reason` (what it did, e.g. `split into 2
    branches`) ends the history and `result` is its job_log row. It opens no attempt row: there
    was no attempt. Its branches are inserted after it by the caller, as its successors.
    """
    _insert_job(conn, machine, job, _Dedupe(check_outstanding=False, success_cutoff=None))
    _check_edge(machine, "claim", job.id, "queued", "running")
    running = _change_status(conn, job, "running", reason="started in-process (no plugin runs)",
                             now=now, started_at=now,
                             started_config_snapshot_id=job.enqueued_config_snapshot_id)
    _check_edge(machine, "complete", job.id, "running", "succeeded")
    done = _change_status(conn, running, "succeeded", reason=reason, now=now, completed_at=now)
    _insert_log(conn, done, result=result, stderr=None, exit_code=None)
    return done


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


def at_cap(conn: sqlite3.Connection, caps: Mapping[str, int]) -> list[str]:
    """The capped plugins with at least their cap of jobs running (the claim skips them)."""
    if not caps:
        return []
    counts = dict(conn.execute(
        "SELECT plugin, COUNT(*) FROM job_queue WHERE status = 'running' AND plugin IN "
        f"({', '.join('?' for _ in caps)}) GROUP BY plugin",
        tuple(caps),
    ).fetchall())
    return sorted(plugin for plugin, cap in caps.items() if counts.get(plugin, 0) >= cap)


def _record_spawn(conn: sqlite3.Connection, job_id: str, attempt: int, pid: int) -> None:
    """Note the plugin's pid on the attempt row (for the ledger)."""
    conn.execute(
        "UPDATE job_attempts SET pid = ? WHERE job_id = ? AND attempt = ?",
        (pid, job_id, attempt),
    )


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
    # The dispatcher ends a cancelled attempt like any other (log row, attempt ledger), but the
    # machine names that edge `stop`: it was asked for, not an outcome of the plugin.
    _check_transition(machine, "stop" if status == "cancelled" else "complete", current,
                      status)
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
    refuse_retry_past_last(current)
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


def refuse_retry_past_last(current: Job) -> None:
    """A retry of the job's last attempt is refused (StoreError): the caller completes it."""
    if current.attempt >= current.max_attempts:
        raise StoreError(
            f"job {current.id}: cannot retry: attempt {current.attempt} of "
            f"{current.max_attempts} was the last; complete it instead"
        )


def _cancel(
    conn: sqlite3.Connection, machine: MachineSpec, job_id: str, reason: str, now: str
) -> Job:
    """A queued job ends `cancelled` before it runs (a running one is cancelled by the
    dispatcher, which stops its plugin first: `_complete` with status `cancelled`)."""
    current = fetch_job(conn, job_id)
    if current is None:
        raise JobNotFound(job_id)
    _check_transition(machine, "cancel", current, "cancelled")
    done = _change_status(
        conn, current, "cancelled", reason=reason, now=now, completed_at=now, last_error=reason,
        next_retry_at=None,
    )
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


def _interrupt(conn: sqlite3.Connection, machine: MachineSpec, job: Job, end: _Ending) -> Job:
    """A running job the gateway stopped before its attempt ended (a clean stop whose
    shutdown_grace ran out) goes back to the queue for the next start.

    Not a crash: no poison-job strike (that counts RECOVERED_REASON transitions), and the
    attempt is not counted against the job's retries. The attempt row stays in the ledger with
    outcome `interrupted`, so the job moves to attempt + 1 and max_attempts grows by one.
    """
    current = _current(conn, job.id)
    _check_transition(machine, "interrupt", current, "queued")
    _check_attempt(current, job)
    _finish_attempt(conn, current, end)
    return _change_status(
        conn, current, "queued", reason=end.last_error, now=end.now,
        attempt=current.attempt + 1, max_attempts=current.max_attempts + 1,
        next_retry_at=None, last_error=None,
    )


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
    _finish_attempt(conn, job, crashed_ending(now))
    fate = recovery_fate(job, _crashes_survived(conn, job.id) + 1)
    _check_transition(machine, fate.trigger, job, fate.status)
    if fate.status == "queued":
        return _change_status(
            conn, job, "queued", reason=RECOVERED_REASON, now=now,
            attempt=fate.attempt, last_error=None, next_retry_at=None,
        )
    done = _change_status(
        conn, job, "dead", reason=fate.message, now=now,
        attempt=fate.attempt, last_error=fate.message, completed_at=now, next_retry_at=None,
    )
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


@dataclass(frozen=True, slots=True)
class RecoveryFate:
    """What crash recovery does with one orphan: requeue it (`retry`) or bury it (`recover`
    to dead, `message` as its last_error and transition reason)."""

    trigger: str
    status: str
    attempt: int
    message: str


def crashed_ending(now: str) -> _Ending:
    """How a crash ends the attempt an orphan was running."""
    return _Ending(now=now, last_error=RECOVERED_REASON, exit_code=None, duration_ms=None,
                   outcome="crashed", stderr=None)


def recovery_fate(job: Job, crashes: int) -> RecoveryFate:
    """Decide an orphan's fate; `crashes` counts this crash too (see `_recover_one`)."""
    attempt = job.attempt + 1
    limit = job.max_attempts if job.max_attempts > 0 else DEFAULT_MAX_ATTEMPTS
    if attempt <= limit and crashes < POISON_CRASHES:
        return RecoveryFate("retry", "queued", attempt, RECOVERED_REASON)
    if attempt > limit:
        return RecoveryFate("recover", "dead", attempt, RECOVERY_DEAD_ERROR.format(limit))
    # an attempt is left, but this job was running during every crash it saw
    return RecoveryFate("recover", "dead", job.attempt, POISON_ERROR.format(crashes))


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
    row = log_row(job, result=result, stderr=stderr, exit_code=exit_code)
    conn.execute(
        f"INSERT OR IGNORE INTO job_log ({', '.join(row)}) "
        f"VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


def log_row(
    job: Job, *, result: str | None, stderr: str | None, exit_code: int | None
) -> dict[str, Any]:
    """The job_log row of `job`'s terminal attempt, by column (id `<job_id>-<attempt>`,
    stderr capped at STDERR_LOG_BYTES)."""
    return {
        "id": f"{job.id}-{job.attempt}", "job_id": job.id, "plugin": job.plugin,
        "command": job.command, "status": job.status, "result": result,
        "attempt": job.attempt, "submitted_by": job.submitted_by,
        "created_at": job.created_at, "completed_at": job.completed_at,
        "last_error": job.last_error, "stderr": truncate_head(stderr, STDERR_LOG_BYTES),
        "parent_job_id": job.parent_job_id, "source_event_id": job.source_event_id,
        "event_context_id": job.event_context_id,
        "enqueued_config_snapshot_id": job.enqueued_config_snapshot_id,
        "started_config_snapshot_id": job.started_config_snapshot_id, "exit_code": exit_code,
    }


def _finish_attempt(conn: sqlite3.Connection, job: Job, end: _Ending) -> None:
    values = attempt_ending(end)
    conn.execute(
        f"UPDATE job_attempts SET {', '.join(f'{name} = ?' for name in values)} "
        "WHERE job_id = ? AND attempt = ?",
        (*values.values(), job.id, job.attempt),
    )


def attempt_ending(end: _Ending) -> dict[str, Any]:
    """The job_attempts columns that finish an attempt (stderr tailed to STDERR_TAIL_BYTES)."""
    return {
        "finished_at": end.now, "duration_ms": end.duration_ms, "exit_code": end.exit_code,
        "outcome": end.outcome, "error": end.last_error,
        "stderr_tail": truncate_tail(end.stderr, STDERR_TAIL_BYTES),
    }
