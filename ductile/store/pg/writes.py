"""The queue's writer-side statements on PostgreSQL: the twins of store/writes.py.

The decisions are store/writes.py's own functions (the job machine checks, the stale-attempt
and last-attempt refusals, the retry-link refusal, the recovery fate, the job_log and attempt
rows); only the SQL is here, and the part SQLite gets for free from having one writer:

- Claims lock the row they take with `SELECT ... FOR UPDATE SKIP LOCKED`: two gateways
  claiming at once take different jobs, and neither waits for the other.
- A status change first locks the row (`FOR UPDATE`), checks it, then updates it guarded by
  what it checked (`WHERE id AND status AND attempt`); a row another node changed in between
  is refused (StoreError), never overwritten.
- The dedupe check-and-insert runs under a transaction-scoped advisory lock on a hash of
  (plugin, command, dedupe key), so the "no two outstanding jobs share a key" rule holds
  across nodes; a redelivered routed event is refused by the unique index itself
  (`ON CONFLICT ... DO NOTHING`), so a concurrent redelivery cannot slip past a pre-check.
- An operator's retry locks the job it repeats, so two concurrent retries of one job cannot
  both land.
- Every transaction that makes a job claimable NOTIFYs JOBS_CHANNEL (delivered at commit
  only), so the other gateways' dispatchers wake.

Node ownership (the statements take `owner`, the node life of a node-aware PgQueue; None is
a lone gateway and skips all of this). A claim records its owner on the row
(`claimed_by`, `claimed_incarnation`). Each claim, complete, retry and interrupt first reads the
owner's node row FOR SHARE and refuses the write (NodeFenced) unless that life is alive
(cluster.py `is_live`); an outcome for a running row another life claimed is refused even when
its attempt matches. Lock order is always node row, then job rows: a declaration of death
(`recover_dead` after cluster.py `declare_dead`) takes them in the same order, so the two
never deadlock. Recovery takes only the running rows of lives that are over: at boot this
node's earlier incarnations (and rows no node owns), after a declaration the dead lives'.

Cluster-wide caps. A claim given caps, on meeting a candidate of a capped plugin, takes a
transaction-scoped advisory lock on that plugin with `pg_try_advisory_xact_lock` (never
waiting: a claimer may hold one plugin's lock while meeting another's, and waiting there could
deadlock), counts the plugin's running rows and claims only below the cap. Every capped claim
of a plugin counts and claims under that lock, and the lock is released only at commit, after
the claim is visible: two claimers can never both see room for the last slot. A plugin whose
lock another claimer holds is passed over for this claim. No counter is stored.

PostgreSQL text cannot hold NUL; a NUL in a value we store (a plugin's stderr, an error
message) is written as `?`, as values.py already does for a lone surrogate, instead of failing
the write (which would leave the job unrecordable).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ductile.errors import (
    DedupeDropped,
    JobNotFound,
    NodeFenced,
    SourceEventConflict,
    StoreError,
)
from ductile.machines import MachineSpec
from ductile.store.jobs import Job
from ductile.store.pg.cluster import NodeIdentity, is_live
from ductile.store.pg.db import ENDED_CHANNEL, JOBS_CHANNEL, notify
from ductile.store.pg.reads import JOB_COLUMNS, retried_as
from ductile.store.pg.records import apply_state_update, write_prepared
from ductile.store.writes import (
    RECOVERED_REASON,
    _check_attempt,
    _check_edge,
    _check_transition,
    _Dedupe,
    _Ending,
    _NewJob,
    attempt_ending,
    crashed_ending,
    enqueue_each,
    enqueue_reason,
    log_row,
    recovery_fate,
    refuse_retry_past_last,
    refuse_retry_target,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

#: The first key of every dedupe advisory lock ("duct"): keeps them apart from other users of
#: two-key advisory locks in the same database.
DEDUPE_LOCK_SPACE = 0x64756374
#: The first key of every per-plugin cap lock ("caps").
CAP_LOCK_SPACE = 0x63617073


def clean(value: Any) -> Any:
    """A text value PostgreSQL accepts: NUL becomes `?` (see the module docstring)."""
    return value.replace("\x00", "?") if isinstance(value, str) else value


def _cleaned(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: clean(value) for name, value in values.items()}


# -- enqueue ----------------------------------------------------------------------------------


def insert_job(conn: Conn, machine: MachineSpec, job: Job, dedupe: _Dedupe) -> None:
    """Insert a queued job after the machine, retry-link, dedupe and redelivery checks."""
    _check_edge(machine, "enqueue", job.id, None, job.status)
    if job.retry_of is not None:
        old = _locked(conn, job.retry_of)
        refuse_retry_target(machine, job.retry_of, old, retried_as(conn, job.retry_of))
    if job.dedupe_key is not None:
        _lock_dedupe_target(conn, job)
        _check_dedupe(conn, job, dedupe)
    values = _cleaned(job.as_dict())
    inserted = conn.execute(
        f"INSERT INTO job_queue ({', '.join(values)}) VALUES ({', '.join('%s' for _ in values)}) "
        "ON CONFLICT (parent_job_id, source_event_id, plugin, command) "
        "WHERE source_event_id IS NOT NULL DO NOTHING RETURNING id",
        tuple(values.values()),
    ).fetchone()
    if inserted is None:  # the unique index refused a redelivered routed event
        raise SourceEventConflict(str(job.parent_job_id), str(job.source_event_id), job.plugin,
                                  job.command)
    _append_transition(conn, job.id, None, job.status, enqueue_reason(job), job.created_at)
    notify(conn, JOBS_CHANNEL)


def _dedupe_lock_key(job: Job) -> int:
    """The second advisory-lock key of a job's dedupe target: a stable 32-bit hash of
    (plugin, command, key), the same on every node. A collision only serialises two keys."""
    return _lock_key("\x1f".join((job.plugin, job.command, job.dedupe_key or "")))


def _lock_key(text: str) -> int:
    """A stable signed 32-bit hash of `text`: the second key of a two-key advisory lock."""
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_dedupe_target(conn: Conn, job: Job) -> None:
    """Serialise every dedupe check-and-insert of one (plugin, command, key) across nodes,
    until this transaction ends (taking a lock this transaction holds already is a no-op)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                 (DEDUPE_LOCK_SPACE, _dedupe_lock_key(job)))


def _check_dedupe(conn: Conn, job: Job, dedupe: _Dedupe) -> None:
    target = (clean(job.dedupe_key), job.plugin, job.command)
    if dedupe.check_outstanding:
        row = conn.execute(
            "SELECT id FROM job_queue WHERE dedupe_key = %s AND plugin = %s AND command = %s "
            "AND status IN ('queued', 'running') ORDER BY created_at, seq LIMIT 1",
            target,
        ).fetchone()
        if row is not None:
            raise DedupeDropped(str(job.dedupe_key), "outstanding", row["id"])
    if dedupe.success_cutoff is not None:
        row = conn.execute(
            "SELECT id FROM job_queue WHERE dedupe_key = %s AND plugin = %s AND command = %s "
            "AND status = 'succeeded' AND completed_at >= %s "
            "ORDER BY completed_at DESC, seq DESC LIMIT 1",
            (*target, dedupe.success_cutoff),
        ).fetchone()
        if row is not None:
            raise DedupeDropped(str(job.dedupe_key), "recent_success", row["id"])


def insert_successors(
    conn: Conn, machine: MachineSpec, pending: Sequence[_NewJob], dedupe: _Dedupe
) -> tuple[tuple[Job, ...], tuple[tuple[Any, DedupeDropped | SourceEventConflict], ...]]:
    """Enqueue each successor and its context; skip (and report) redeliveries and dedupe
    drops, which are refused before anything of theirs is written."""

    def insert(item: _NewJob) -> None:
        insert_job(conn, machine, item.job, dedupe)
        if item.context is not None:
            write_prepared(conn, item.context, item.job.created_at)

    # Take every dedupe lock up front, in one global order: two completions whose successors
    # share keys then queue behind each other instead of deadlocking (k1 then k2 against k2
    # then k1).
    for key in sorted({_dedupe_lock_key(item.job) for item in pending if item.job.dedupe_key}):
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (DEDUPE_LOCK_SPACE, key))
    return enqueue_each(pending, insert)


def insert_run_root(
    conn: Conn, machine: MachineSpec, job: Job, *, now: str, reason: str, result: str | None
) -> Job:
    """A split run's synthetic root job, inserted and ended `succeeded` at once (see
    store/writes.py `_insert_run_root`)."""
    insert_job(conn, machine, job, _Dedupe(check_outstanding=False, success_cutoff=None))
    _check_edge(machine, "claim", job.id, "queued", "running")
    running = _change_status(conn, job, "running", reason="started in-process (no plugin runs)",
                             now=now, started_at=now,
                             started_config_snapshot_id=job.enqueued_config_snapshot_id)
    _check_edge(machine, "complete", job.id, "running", "succeeded")
    done = _change_status(conn, running, "succeeded", reason=reason, now=now, completed_at=now)
    _insert_log(conn, done, result=result, stderr=None, exit_code=None)
    return done


# -- claim ------------------------------------------------------------------------------------

# The oldest eligible queued row (FIFO by created_at, then insert order; a retry keeps its
# created_at), locked for this transaction. SKIP LOCKED passes over a row another node is
# claiming right now instead of waiting for it; after the lock PostgreSQL re-checks the WHERE
# clause against the row's latest version, so a row claimed and committed meanwhile is skipped.
_CLAIM_SQL = """
SELECT q.id, q.plugin FROM job_queue AS q
WHERE q.status = 'queued'
  AND (q.next_retry_at IS NULL OR q.next_retry_at <= %(now)s)
  AND NOT (q.plugin = ANY(%(skip)s::text[]))
  AND (q.dedupe_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM job_queue AS r
        WHERE r.status = 'running' AND r.dedupe_key = q.dedupe_key
          AND r.plugin = q.plugin AND r.command = q.command))
ORDER BY q.created_at, q.seq
LIMIT 1
FOR UPDATE OF q SKIP LOCKED
"""


def claim(
    conn: Conn, machine: MachineSpec, *, now: str, snapshot: str | None, skip: Sequence[str],
    caps: Mapping[str, int] | None = None, owner: NodeIdentity | None = None,
) -> Job | None:
    """Move the oldest eligible queued job to running, owned by `owner`, and open its
    attempt row; a plugin at its cap (or whose cap lock is taken) is passed over."""
    _check_edge(machine, "claim", "(next eligible job)", "queued", "running")
    if owner is not None:
        _require_live(conn, owner, "a claim")
    passed = set(skip)
    while True:  # at most once per capped plugin: each pass adds one to `passed`
        found = conn.execute(_CLAIM_SQL, {"now": now, "skip": sorted(passed)}).fetchone()
        if found is None:
            return None
        cap = caps.get(found["plugin"]) if caps else None
        if cap is None or _below_cap(conn, found["plugin"], cap):
            break
        # The candidate stays row-locked until this transaction ends; other claimers pass
        # over it meanwhile, which costs nothing: its plugin has no room now.
        passed.add(found["plugin"])
    row = conn.execute(
        "UPDATE job_queue SET status = 'running', started_at = %s, "
        "started_config_snapshot_id = %s, claimed_by = %s, claimed_incarnation = %s "
        f"WHERE id = %s AND status = 'queued' RETURNING {JOB_COLUMNS}",
        (now, clean(snapshot), owner.node_id if owner else None,
         owner.incarnation if owner else None, found["id"]),
    ).fetchone()
    if row is None:  # cannot happen under the row lock; refuse rather than guess
        raise StoreError(f"job {found['id']}: status is no longer queued")
    job = Job.from_row(row)
    _append_transition(conn, job.id, "queued", "running", "claimed", now)
    conn.execute(
        "INSERT INTO job_attempts (job_id, attempt, created_at, started_at) "
        "VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at, "
        "finished_at = NULL, duration_ms = NULL, exit_code = NULL, outcome = NULL, "
        "error = NULL, stderr_tail = NULL, pid = NULL",
        (job.id, job.attempt, now, now),
    )
    return job


def _below_cap(conn: Conn, plugin: str, cap: int) -> bool:
    """Whether a job of `plugin` may start under its cluster-wide `cap`: False when another
    claimer holds the plugin's cap lock right now (never waited for) or `cap` are running."""
    locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS granted",
                          (CAP_LOCK_SPACE, _lock_key(plugin))).fetchone()
    if not locked["granted"]:
        return False
    running = conn.execute(
        "SELECT count(*) AS n FROM job_queue WHERE plugin = %s AND status = 'running'",
        (plugin,),
    ).fetchone()
    return int(running["n"]) < cap


def record_spawn(conn: Conn, job_id: str, attempt: int, pid: int) -> None:
    """Note the plugin's pid on the attempt row (for the ledger)."""
    conn.execute("UPDATE job_attempts SET pid = %s WHERE job_id = %s AND attempt = %s",
                 (pid, job_id, attempt))


# -- outcomes ---------------------------------------------------------------------------------


def complete(
    conn: Conn,
    machine: MachineSpec,
    job: Job,
    status: str,
    end: _Ending,
    result: str | None,
    state_update: tuple[str, Mapping[str, Any]] | None,
    *,
    owner: NodeIdentity | None = None,
) -> Job:
    """End a running job in terminal `status` (see store/writes.py `_complete`)."""
    current = _owned(conn, job, owner, "the completion")
    _check_transition(machine, "stop" if status == "cancelled" else "complete", current, status)
    _check_attempt(current, job)
    if state_update is not None:
        apply_state_update(conn, state_update[0], state_update[1], end.now)
    done = _change_status(
        conn, current, status, reason=end.reason(), now=end.now, completed_at=end.now,
        last_error=end.last_error, next_retry_at=None,
    )
    _insert_log(conn, done, result=result, stderr=end.stderr, exit_code=end.exit_code)
    _finish_attempt(conn, current, end)
    return done


def retry(conn: Conn, machine: MachineSpec, job: Job, end: _Ending, due: str, *,
          owner: NodeIdentity | None = None) -> Job:
    """Send a running job back to the queue as attempt + 1, due at `due`."""
    current = _owned(conn, job, owner, "the retry")
    _check_transition(machine, "retry", current, "queued")
    _check_attempt(current, job)
    refuse_retry_past_last(current)
    _finish_attempt(conn, current, end)
    again = _change_status(
        conn, current, "queued", reason=end.reason(), now=end.now,
        attempt=current.attempt + 1, next_retry_at=due, last_error=end.last_error,
        completed_at=None,
    )
    notify(conn, JOBS_CHANNEL)
    return again


def cancel(conn: Conn, machine: MachineSpec, job_id: str, reason: str, now: str) -> Job:
    """End a queued job `cancelled` before it runs; JobNotFound for an unknown id."""
    current = _locked(conn, job_id)
    if current is None:
        raise JobNotFound(job_id)
    _check_transition(machine, "cancel", current, "cancelled")
    done = _change_status(
        conn, current, "cancelled", reason=reason, now=now, completed_at=now, last_error=reason,
        next_retry_at=None,
    )
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


def interrupt(conn: Conn, machine: MachineSpec, job: Job, end: _Ending, *,
              owner: NodeIdentity | None = None) -> Job:
    """A running job cut short by a clean stop goes back to the queue, its attempt not
    counted and no poison-job strike (see store/writes.py `_interrupt`)."""
    current = _owned(conn, job, owner, "the interrupt")
    _check_transition(machine, "interrupt", current, "queued")
    _check_attempt(current, job)
    _finish_attempt(conn, current, end)
    again = _change_status(
        conn, current, "queued", reason=end.last_error, now=end.now,
        attempt=current.attempt + 1, max_attempts=current.max_attempts + 1,
        next_retry_at=None, last_error=None,
    )
    notify(conn, JOBS_CHANNEL)  # another gateway, still running, may take it at once
    return again


def recover(conn: Conn, machine: MachineSpec, now: str, *,
            owner: NodeIdentity | None = None) -> list[Job]:
    """Requeue or bury the jobs a crash left `running` (boot, before dispatching): every one
    for a lone gateway (`owner` None); for a node, those its earlier incarnations claimed and
    those no node claimed, never a row of its current life or of another node."""
    if owner is None:
        where, params = "status = 'running'", ()
    else:
        where = ("status = 'running' AND (claimed_by IS NULL OR "
                 "(claimed_by = %s AND claimed_incarnation < %s))")
        params = (owner.node_id, owner.incarnation)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM job_queue WHERE {where} ORDER BY created_at, seq FOR UPDATE",
        params,
    ).fetchall()
    return _recover_rows(conn, machine, [Job.from_row(row) for row in rows], now,
                         crashed_ending(now))


def recover_dead(
    conn: Conn, machine: MachineSpec, now: str, dead: Sequence[NodeIdentity]
) -> list[Job]:
    """Requeue or bury the running jobs of node lives just declared dead (cluster.py
    `declare_dead`, in this same transaction), with crash recovery's rules: each is a crash
    of the gateway that ran it, counted towards the poison quarantine. Their attempts end
    `crashed`, naming the dead node."""
    jobs: list[Job] = []
    for life in dead:
        if is_live(conn, life):
            raise StoreError(
                f"node {life.node_id} (incarnation {life.incarnation}) is alive: its running "
                "jobs are not recovered (declare it dead first: it must have stopped "
                "heartbeating)"
            )
        rows = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM job_queue WHERE status = 'running' "
            "AND claimed_by = %s AND claimed_incarnation = %s ORDER BY created_at, seq "
            "FOR UPDATE",
            (life.node_id, life.incarnation),
        ).fetchall()
        ending = replace(crashed_ending(now), last_error=(
            f"{RECOVERED_REASON}: node {life.node_id} (incarnation {life.incarnation}) "
            "stopped heartbeating and was declared dead"))
        jobs += _recover_rows(conn, machine, [Job.from_row(row) for row in rows], now, ending)
    return jobs


def _recover_rows(
    conn: Conn, machine: MachineSpec, orphans: Sequence[Job], now: str, ending: _Ending
) -> list[Job]:
    jobs = [_recover_one(conn, machine, job, now, ending) for job in orphans]
    if any(job.status == "queued" for job in jobs):
        notify(conn, JOBS_CHANNEL)
    return jobs


def _recover_one(conn: Conn, machine: MachineSpec, job: Job, now: str, ending: _Ending) -> Job:
    _finish_attempt(conn, job, ending)
    crashes = conn.execute(
        "SELECT count(*) AS n FROM job_transitions WHERE job_id = %s AND reason = %s",
        (job.id, RECOVERED_REASON),
    ).fetchone()
    fate = recovery_fate(job, int(crashes["n"]) + 1)
    _check_transition(machine, fate.trigger, job, fate.status)
    if fate.status == "queued":
        return _change_status(conn, job, "queued", reason=RECOVERED_REASON, now=now,
                              attempt=fate.attempt, last_error=None, next_retry_at=None)
    done = _change_status(conn, job, "dead", reason=fate.message, now=now, attempt=fate.attempt,
                          last_error=fate.message, completed_at=now, next_retry_at=None)
    _insert_log(conn, done, result=None, stderr=None, exit_code=None)
    return done


# -- shared steps -----------------------------------------------------------------------------


def _locked(conn: Conn, job_id: str) -> Job | None:
    """The job's row, locked until this transaction ends (None when unknown)."""
    row = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM job_queue WHERE id = %s FOR UPDATE", (job_id,)
    ).fetchone()
    return Job.from_row(row) if row is not None else None


def _current(conn: Conn, job_id: str) -> Job:
    job = _locked(conn, job_id)
    if job is None:
        raise StoreError(f"job {job_id} not found")
    return job


def _require_live(conn: Conn, owner: NodeIdentity, doing: str) -> None:
    """Refuse a write of a node life that is no longer alive (NodeFenced); otherwise hold its
    node row FOR SHARE, so it cannot be declared dead before this transaction ends."""
    if not is_live(conn, owner):
        raise NodeFenced(owner.node_id, owner.incarnation, doing)


def _owned(conn: Conn, job: Job, owner: NodeIdentity | None, doing: str) -> Job:
    """The job's row, locked, for an outcome reported by `owner`: refused when `owner` is
    fenced, or when the row is running under another node life's claim (whatever the
    attempt). A row that is not running is left to the machine and attempt checks."""
    if owner is None:
        return _current(conn, job.id)
    _require_live(conn, owner, f"{doing} of job {job.id}")
    row = conn.execute(
        f"SELECT {JOB_COLUMNS}, claimed_by, claimed_incarnation FROM job_queue "
        "WHERE id = %s FOR UPDATE", (job.id,)
    ).fetchone()
    if row is None:
        raise StoreError(f"job {job.id} not found")
    current = Job.from_row(row)
    holder = (row["claimed_by"], row["claimed_incarnation"])
    if current.status == "running" and holder != (owner.node_id, owner.incarnation):
        by = (f"node {holder[0]} (incarnation {holder[1]})" if holder[0] is not None
              else "a gateway without a node identity")
        raise StoreError(
            f"job {job.id}: {doing} from node {owner.node_id} (incarnation "
            f"{owner.incarnation}) is refused: attempt {current.attempt} is claimed by {by}, "
            "so only that node may record its outcome"
        )
    return current


def _change_status(
    conn: Conn, current: Job, to_status: str, *, reason: str | None, now: str, **columns: Any
) -> Job:
    """Update the row only if it is still what the caller checked (status and attempt), and
    record the change; a row changed by another node is refused (StoreError)."""
    values = _cleaned({"status": to_status, **columns})
    assignments = ", ".join(f"{name} = %s" for name in values)
    row = conn.execute(
        f"UPDATE job_queue SET {assignments} WHERE id = %s AND status = %s AND attempt = %s "
        f"RETURNING {JOB_COLUMNS}",
        (*values.values(), current.id, current.status, current.attempt),
    ).fetchone()
    if row is None:
        raise StoreError(f"job {current.id}: status is no longer {current.status}")
    _append_transition(conn, current.id, current.status, to_status, reason, now)
    return Job.from_row(row)


def _append_transition(
    conn: Conn, job_id: str, from_status: str | None, to_status: str, reason: str | None,
    now: str,
) -> None:
    conn.execute(
        "INSERT INTO job_transitions (job_id, from_status, to_status, reason, created_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        (job_id, from_status, to_status, clean(reason), now),
    )


def _insert_log(
    conn: Conn, job: Job, *, result: str | None, stderr: str | None, exit_code: int | None
) -> None:
    """The job_log row of a terminal attempt; the first one is kept. Every terminal status
    change writes one, so this is also where every node hears that the job ended (a sync
    request waiting on one node for a job a peer ran)."""
    row = _cleaned(log_row(job, result=result, stderr=stderr, exit_code=exit_code))
    conn.execute(
        f"INSERT INTO job_log ({', '.join(row)}) VALUES ({', '.join('%s' for _ in row)}) "
        "ON CONFLICT (id) DO NOTHING",
        tuple(row.values()),
    )
    notify(conn, ENDED_CHANNEL, job.id)


def _finish_attempt(conn: Conn, job: Job, end: _Ending) -> None:
    values = _cleaned(attempt_ending(end))
    conn.execute(
        f"UPDATE job_attempts SET {', '.join(f'{name} = %s' for name in values)} "
        "WHERE job_id = %s AND attempt = %s",
        (*values.values(), job.id, job.attempt),
    )
