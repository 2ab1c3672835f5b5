"""states/job.yaml, driven through a real Queue on a real SQLite file, against a model.

Hypothesis picks sequences of enqueue (with and without a dedupe key, with and without the
scheduler's outstanding check) / claim / succeed / retryable and permanent failure / cancel of
a queued job / a running job ended `cancelled` / a clean stop interrupting running jobs / an
operator's retry of a finished job / crash and recovery / late reports from workers lost in a
crash or a stop / clock moves, plus the illegal calls a buggy dispatcher might make. A
plain-Python model predicts every outcome (which job a claim returns, whether dedupe drops an
enqueue, what recovery does), and after every step the database must agree with the model and
tell a consistent story:

- no accepted job disappears, and each row's status, attempt and next_retry_at are the model's;
- every job_transitions pair is an edge of states/job.yaml, and each job's latest transition
  leads to its current status;
- attempts: the store refuses a retry on the last attempt, so `attempt <= max_attempts` holds
  for every row except one killed by crash recovery, which is `dead` with
  `attempt == max_attempts + 1` (recovery counts the crashed attempt, then gives up; Go does the
  same). A queued or running row is always within max_attempts. An interrupt (a clean stop)
  moves both up by one: the cut attempt is kept in the ledger but costs no retry, and it is no
  poison-job strike;
- operator retries: a job is retried at most once, only from a `retryable` status, and the
  new job names it in retry_of;
- a terminal row never changes again (snapshots of every terminal row are compared);
- dedupe: two outstanding (queued or running) jobs never share plugin+command+key: every
  enqueue with a key is dropped while a same-target job is outstanding (stricter than Go, which
  checked this only for the scheduler), and a success within the TTL drops it too;
- a job is never claimed before its next_retry_at, and a claim takes exactly the oldest
  eligible job;
- the execution ledger matches: one open job_attempts row per running job (none otherwise),
  and one job_log row per terminal job, at its final attempt.

Each rule runs its coroutine with `trio.run`; the Database and its writer thread outlive the
individual runs, which is also a test that a write only needs the caller's trio token. A crash
abandons the running jobs (their Job objects become "zombies" whose late reports must be
refused), closes the database, opens it again with a fresh Queue and runs recover_orphans.

The same machine runs against PostgreSQL (`PgJobMachine`: a PgQueue on a `pg_dsn` database,
emptied before each example; a crash closes the PgDatabase and opens a new one on the same
database). The invariants read the tables with SQL both databases accept, on a side
connection (SQLite read-only, PostgreSQL autocommit), so both stores are held to one story.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import trio
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ductile.errors import DedupeDropped, InvalidTransition, JobStateConflict, StoreError
from ductile.machines import load_machine
from ductile.store import Database, Job, Queue, format_time, open_readonly
from ductile.store.queue import QueueCore
from ductile.store.writes import POISON_CRASHES, POISON_ERROR, RECOVERY_DEAD_ERROR

SPEC = load_machine("job")
TERMINAL = list(SPEC.terminal)
# What the dispatcher may end a running job as (dead is crash recovery's alone).
PERMANENT = ["failed", "timed_out", "skipped", "cancelled"]
RETRYABLE = set(SPEC.retryable)
COMMAND = "poll"
QUEUE_DEDUPE_TTL = 30.0  # service.dedupe_ttl: recent-success dedupe for every keyed enqueue
SCHEDULER_TTL = 60.0  # the per-enqueue override: also turns the outstanding check on
T = TypeVar("T")

PLUGINS = st.sampled_from(["a", "b"])
MAX_ATTEMPTS = st.integers(1, 4)
DEDUPE_KEYS = st.sampled_from([None, "k1", "k2"])


def has_edge(trigger: str, source: str, dest: str) -> bool:
    return any(
        t.trigger == trigger and t.dest == dest and source in t.source for t in SPEC.transitions
    )


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn)


@dataclass
class ModelJob:
    """What the model expects of one accepted job."""

    id: str
    seq: int
    plugin: str
    key: str | None
    created_at: str
    max_attempts: int
    status: str = "queued"
    attempt: int = 1
    next_retry_at: str | None = None
    completed_at: str | None = None
    crashes: int = 0  # crashes this job was running during (the second quarantines it)
    retry_of: str | None = None
    retried_as: str | None = None

    @property
    def outstanding(self) -> bool:
        return self.status in ("queued", "running")

    def same_target(self, plugin: str, key: str | None) -> bool:
        return key is not None and self.key == key and self.plugin == plugin


class JobMachine(RuleBasedStateMachine):
    """The machine on SQLite; `PgJobMachine` below swaps the store."""

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.open_store()
        self.db: Any = run(self.open_db)
        self.queue = self.new_queue()
        self.model: dict[str, ModelJob] = {}
        self.running: dict[str, Job] = {}  # what live workers hold
        self.zombies: list[Job] = []  # what workers lost in a crash still hold
        self.terminal_rows: dict[str, tuple[Any, ...]] = {}

    # -- the store: what PgJobMachine overrides ------------------------------------------------

    def open_store(self) -> None:
        """A fresh, empty store for this example, and the side connection of the invariants."""
        self.dir = Path(tempfile.mkdtemp(prefix="ductile-jobs-"))
        self.path = str(self.dir / "ductile.db")
        self.conn: Any = None  # opened with the database (it needs the schema)

    async def open_db(self) -> Any:
        """Open (again, after a crash) the store this example runs on."""
        db = await Database.open(self.path)
        if self.conn is None:
            self.conn = open_readonly(self.path)
        return db

    def new_queue(self) -> QueueCore:
        return Queue(
            self.db, snapshot_id=lambda: "cfg_test", dedupe_ttl=QUEUE_DEDUPE_TTL, clock=self.clock
        )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The invariants' read: `?` placeholders, plain tuples."""
        return [tuple(row) for row in self.conn.execute(sql, params).fetchall()]

    def close_store(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def clock(self) -> datetime:
        return self.now

    @property
    def now_text(self) -> str:
        return format_time(self.now)

    def teardown(self) -> None:
        run(self.db.close)
        self.close_store()

    # -- rules: the dispatcher's normal calls ---------------------------------------------

    @initialize(
        jobs=st.lists(st.tuples(PLUGINS, MAX_ATTEMPTS, DEDUPE_KEYS, st.booleans()), max_size=4)
    )
    def seed_the_queue(self, jobs: list[tuple[str, int, str | None, bool]]) -> None:
        """Start most runs with a few jobs queued, so the 30 steps reach retries, crashes
        and recovery instead of spending themselves on enqueues."""
        for plugin, max_attempts, dedupe_key, outstanding_check in jobs:
            self.enqueue(plugin, max_attempts, dedupe_key, outstanding_check)

    @rule(
        plugin=PLUGINS,
        max_attempts=MAX_ATTEMPTS,
        dedupe_key=DEDUPE_KEYS,
        outstanding_check=st.booleans(),
    )
    def enqueue(
        self, plugin: str, max_attempts: int, dedupe_key: str | None, outstanding_check: bool
    ) -> None:
        self.now += timedelta(microseconds=1)
        expected_drop = self.predict_dedupe(plugin, dedupe_key, outstanding_check)
        try:
            job = run(lambda: self.queue.enqueue(
                plugin, COMMAND, {"n": len(self.model)}, "test",
                max_attempts=max_attempts, dedupe_key=dedupe_key,
                dedupe_ttl=SCHEDULER_TTL if outstanding_check else None,
            ))
        except DedupeDropped as exc:
            assert exc.reason == expected_drop, (exc.reason, expected_drop)
            event(f"enqueue dropped: {exc.reason}")
            return
        assert expected_drop is None, f"expected a {expected_drop} drop"
        self.model[job.id] = ModelJob(
            id=job.id, seq=len(self.model), plugin=plugin, key=dedupe_key,
            created_at=job.created_at, max_attempts=max_attempts,
        )

    @rule(skip=st.sampled_from([(), ("a",), ("b",)]))
    def claim(self, skip: tuple[str, ...]) -> None:
        expected = self.predict_claim(skip)
        job = run(lambda: self.queue.claim(skip))
        if expected is None:
            assert job is None, f"claimed {job} but nothing was eligible"
            return
        if expected.attempt > 1:
            event("claimed a retry")
        assert job is not None, f"nothing claimed but {expected.id} was eligible"
        assert job.id == expected.id, "claim did not take the oldest eligible job"
        # Never before its due time: the claimed row still carries the next_retry_at it had.
        assert not job.next_retry_at or job.next_retry_at <= self.now_text
        assert (job.status, job.started_at, job.attempt) == (
            "running", self.now_text, expected.attempt
        )
        expected.status = "running"
        self.running[job.id] = job
        self.zombies_of_a_reclaimed_job_are_refused(job)

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100))
    def succeed(self, index: int) -> None:
        self.finish(self.pick_running(index), "succeeded")

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100), delay=st.sampled_from([0.0, 5.0, 20.0]))
    def fail_retryable(self, index: int, delay: float) -> None:
        """What the dispatcher does with a retryable failure: retry while attempts remain,
        else complete as failed."""
        job = self.pick_running(index)
        if job.attempt >= job.max_attempts:
            self.finish(job, "failed")
            return
        again = self.retry(job, delay=delay)
        due = format_time(self.now + timedelta(seconds=delay))
        assert (again.status, again.attempt, again.next_retry_at) == (
            "queued", job.attempt + 1, due
        )
        model = self.model[job.id]
        model.status, model.attempt, model.next_retry_at = "queued", job.attempt + 1, due
        del self.running[job.id]

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100), status=st.sampled_from(PERMANENT))
    def fail_permanent(self, index: int, status: str) -> None:
        self.finish(self.pick_running(index), status)

    @rule(index=st.integers(0, 100))
    def cancel_queued(self, index: int) -> None:
        queued = self.model_jobs("queued")
        if not queued:
            return
        model = queued[index % len(queued)]
        done = run(lambda: self.queue.cancel(model.id))
        assert (done.status, done.completed_at) == ("cancelled", self.now_text)
        model.status, model.completed_at, model.next_retry_at = "cancelled", self.now_text, None

    @precondition(lambda self: self.running)
    @rule()
    def a_stop_interrupts_the_running_jobs(self) -> None:
        """A clean stop whose grace ran out: each running job goes back to the queue as
        interrupted, its attempt not counted; the workers' Job objects are now stale."""
        for job in self.sorted_running():
            again = run(lambda job=job: self.queue.interrupt(job, duration_ms=1, stderr=None))
            model = self.model[job.id]
            assert (again.status, again.attempt, again.max_attempts, again.next_retry_at) == (
                "queued", job.attempt + 1, model.max_attempts + 1, None)
            model.status, model.attempt, model.next_retry_at = "queued", job.attempt + 1, None
            model.max_attempts += 1
            self.zombies.append(job)
        self.running.clear()

    @rule(index=st.integers(0, 100))
    def an_operator_retries_a_finished_job(self, index: int) -> None:
        """`ductile job retry`: a new job linked to the old one, refused unless the old one
        is retryable and was never retried; dedupe applies to the new job as to any."""
        done = self.model_jobs(*TERMINAL)
        if not done:
            return
        old = done[index % len(done)]
        self.now += timedelta(microseconds=1)
        refused = old.status not in RETRYABLE or old.retried_as is not None
        expected_drop = None if refused else self.predict_dedupe(old.plugin, old.key, False)
        try:
            job = run(lambda: self.queue.enqueue(
                old.plugin, COMMAND, {"retry": old.id}, "test", max_attempts=old.max_attempts,
                dedupe_key=old.key, retry_of=old.id,
            ))
        except JobStateConflict:
            assert refused, f"a retry of {old.status} job {old.id} was refused"
            event("retry refused")
            return
        except DedupeDropped as exc:
            assert exc.reason == expected_drop, (exc.reason, expected_drop)
            return
        assert not refused and expected_drop is None, "a retry that must fail was accepted"
        assert job.retry_of == old.id
        old.retried_as = job.id
        self.model[job.id] = ModelJob(
            id=job.id, seq=len(self.model), plugin=old.plugin, key=old.key,
            created_at=job.created_at, max_attempts=old.max_attempts, retry_of=old.id,
        )
        event("retried")

    @rule(seconds=st.sampled_from([1.0, 10.0, 45.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @precondition(lambda self: self.running)
    @rule()
    def crash_and_recover(self) -> None:
        """The process dies with jobs running: their workers' Job objects are abandoned, the
        next process opens the file and recovers the orphans before dispatching. (Only with
        jobs running: a new Queue parses states/job.yaml, ~10 ms.)"""
        self.zombies.extend(self.running.values())
        orphans = {job_id: self.model[job_id] for job_id in self.running}
        self.running.clear()
        run(self.db.close)
        self.db = run(self.open_db)
        self.queue = self.new_queue()
        recovered = run(self.queue.recover_orphans)
        assert {job.id for job in recovered} == set(orphans)
        for job in recovered:
            self.expect_recovery(orphans[job.id], job)
            event(f"recovered to {job.status}")

    # -- rules: calls a buggy or late caller might make -----------------------------------

    @rule(
        kind=st.sampled_from(["zombie", "retry_past_last", "complete_not_running"]),
        index=st.integers(0, 100),
        status=st.sampled_from(TERMINAL),
    )
    def a_bad_report_is_refused(self, kind: str, index: int, status: str) -> None:
        """One rule for the three refusals, so they do not crowd out the lifecycle rules.

        zombie: a worker lost in a crash reports late; whatever the job became since, the
        store refuses (stale attempt, or not running). retry_past_last: the store refuses a
        retry on the last attempt (the caller must complete). complete_not_running: a
        queued or terminal job cannot be completed. In every case nothing changes (the
        invariants check the rows against the model).
        """
        refusals = {
            "zombie": self.refuse_zombie,
            "retry_past_last": self.refuse_retry_past_last,
            "complete_not_running": self.refuse_completing_not_running,
        }
        refusals[kind](index, status)

    def zombies_of_a_reclaimed_job_are_refused(self, job: Job) -> None:
        """The sharpest zombie case: the job runs again (a new attempt) while a worker lost
        in the crash still holds the old one; its report must not end the new attempt."""
        for zombie in [z for z in self.zombies if z.id == job.id]:
            self.refuse_zombie(self.zombies.index(zombie), "succeeded")
            self.refuse_zombie(self.zombies.index(zombie), "failed")

    def refuse_zombie(self, index: int, status: str) -> None:
        if not self.zombies:
            return
        zombie = self.zombies[index % len(self.zombies)]
        try:
            if status == "succeeded":
                self.complete(zombie, status)
            else:
                self.retry(zombie, delay=0.0)
        except StoreError as exc:
            event(f"zombie refused: {type(exc).__name__}: {str(exc).split(': ', 1)[-1][:20]}")
            return
        raise AssertionError(f"a zombie report for {zombie.id} was accepted")

    def refuse_retry_past_last(self, index: int, status: str) -> None:
        last = [j for j in self.sorted_running() if j.attempt >= j.max_attempts]
        if not last:
            return
        job = last[index % len(last)]
        try:
            self.retry(job, delay=0.0)
        except InvalidTransition as exc:
            raise AssertionError(f"running -> queued is an edge: {exc}") from exc
        except StoreError:
            event("retry past the last attempt refused")
            return
        raise AssertionError(f"retry past attempt {job.attempt}/{job.max_attempts} accepted")

    def refuse_completing_not_running(self, index: int, status: str) -> None:
        others = [m for m in self.ordered_models() if m.status != "running"]
        if not others:
            return
        job = self.fetch(others[index % len(others)].id)
        try:
            self.complete(job, status)
        except InvalidTransition as exc:
            assert (exc.from_status, exc.to_status) == (job.status, status)
            assert not has_edge("complete", job.status, status)
            return
        raise AssertionError(f"completing a {job.status} job was accepted")

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def statuses_are_declared_states(self) -> None:
        for (status,) in self.rows("SELECT DISTINCT status FROM job_queue"):
            assert status in SPEC.states and status != SPEC.initial, status

    @invariant()
    def every_recorded_transition_is_allowed(self) -> None:
        rows = self.rows("SELECT DISTINCT from_status, to_status FROM job_transitions")
        for from_status, to_status in rows:
            assert SPEC.allowed(from_status, to_status), (from_status, to_status)

    @invariant()
    def the_latest_transition_explains_the_status(self) -> None:
        mismatched = [row[0] for row in self.rows(
            "SELECT q.id FROM job_queue q WHERE q.status IS DISTINCT FROM ("
            " SELECT t.to_status FROM job_transitions t WHERE t.job_id = q.id"
            " ORDER BY t.id DESC LIMIT 1)"
        )]
        assert mismatched == []

    @invariant()
    def the_database_matches_the_model(self) -> None:
        """No accepted job disappears (and none appears); each row is where the model says."""
        rows = {
            job_id: (status, attempt, next_retry_at)
            for job_id, status, attempt, next_retry_at in self.rows(
                "SELECT id, status, attempt, next_retry_at FROM job_queue"
            )
        }
        expected = {
            m.id: (m.status, m.attempt, m.next_retry_at) for m in self.model.values()
        }
        assert rows == expected

    @invariant()
    def attempts_stay_bounded(self) -> None:
        over = self.rows(
            "SELECT id, status, attempt, max_attempts, last_error FROM job_queue "
            "WHERE attempt > max_attempts"
        )
        for row in over:
            _, status, attempt, max_attempts, last_error = row
            assert status == "dead", row
            assert attempt == max_attempts + 1, row
            assert last_error == RECOVERY_DEAD_ERROR.format(max_attempts)

    @invariant()
    def terminal_rows_never_change(self) -> None:
        placeholders = ", ".join("?" for _ in TERMINAL)
        for snapshot in self.rows(
            f"SELECT {Job.select_list()} FROM job_queue WHERE status IN ({placeholders})",
            tuple(TERMINAL),
        ):
            job_id = snapshot[0]
            assert self.terminal_rows.setdefault(job_id, snapshot) == snapshot, job_id
        assert len(self.terminal_rows) == len(self.model_jobs(*TERMINAL))

    @invariant()
    def each_retry_names_a_retryable_job_once(self) -> None:
        rows = self.rows(
            "SELECT r.retry_of, count(*), max(o.status) FROM job_queue r "
            "JOIN job_queue o ON o.id = r.retry_of GROUP BY r.retry_of"
        )
        for retry_of, count, status in rows:
            assert count == 1 and status in RETRYABLE, (retry_of, count, status)
        links = {row[0]: row[1] for row in self.rows(
            "SELECT id, retry_of FROM job_queue WHERE retry_of IS NOT NULL")}
        assert links == {m.id: m.retry_of for m in self.model.values() if m.retry_of}

    @invariant()
    def no_two_outstanding_jobs_share_a_dedupe_key(self) -> None:
        doubled = [tuple(row) for row in self.rows(
            "SELECT plugin, command, dedupe_key, count(*) FROM job_queue "
            "WHERE status IN ('queued', 'running') AND dedupe_key IS NOT NULL "
            "GROUP BY plugin, command, dedupe_key HAVING count(*) > 1"
        )]
        assert doubled == []

    @invariant()
    def the_running_set_matches_the_database(self) -> None:
        running = {
            row[0] for row in self.rows("SELECT id FROM job_queue WHERE status = 'running'")
        }
        assert running == set(self.running)

    @invariant()
    def open_attempts_are_the_running_jobs(self) -> None:
        open_rows = {
            (row[0], row[1])
            for row in self.rows(
                "SELECT job_id, attempt FROM job_attempts WHERE finished_at IS NULL"
            )
        }
        assert open_rows == {(job.id, job.attempt) for job in self.running.values()}

    @invariant()
    def each_terminal_job_has_one_log_row(self) -> None:
        logs = self.rows(
            "SELECT q.id, q.status, q.attempt, count(l.id), max(l.status), max(l.attempt) "
            "FROM job_queue q LEFT JOIN job_log l ON l.job_id = q.id GROUP BY q.id, q.status, "
            "q.attempt"
        )
        for job_id, status, attempt, count, log_status, log_attempt in logs:
            if status in TERMINAL:
                assert (count, log_status, log_attempt) == (1, status, attempt), job_id
            else:
                assert count == 0, job_id

    # -- model ------------------------------------------------------------------------------

    def predict_dedupe(self, plugin: str, key: str | None, outstanding_check: bool) -> str | None:
        """The drop reason the store must give (None: the enqueue is accepted)."""
        if key is None:
            return None
        same = [m for m in self.model.values() if m.same_target(plugin, key)]
        if any(m.outstanding for m in same):
            return "outstanding"
        ttl = SCHEDULER_TTL if outstanding_check else QUEUE_DEDUPE_TTL
        cutoff = format_time(self.now - timedelta(seconds=ttl))
        recent = [
            m for m in same
            if m.status == "succeeded" and m.completed_at is not None and m.completed_at >= cutoff
        ]
        return "recent_success" if recent else None

    def predict_claim(self, skip: tuple[str, ...]) -> ModelJob | None:
        """The oldest queued job that is due, not skipped, and whose key+target is not
        running."""
        running = [m for m in self.model.values() if m.status == "running"]
        eligible = [
            m for m in self.ordered_models()
            if m.status == "queued"
            and (not m.next_retry_at or m.next_retry_at <= self.now_text)
            and m.plugin not in skip
            and not any(r.same_target(m.plugin, m.key) for r in running)
        ]
        return eligible[0] if eligible else None

    def expect_recovery(self, model: ModelJob, job: Job) -> None:
        """Recovery: attempt + 1, back to queued (not due-delayed) or dead when used up; a
        job running during its second crash is quarantined dead at the attempt it was on."""
        attempt = model.attempt + 1
        model.crashes += 1
        if model.crashes >= POISON_CRASHES and attempt <= model.max_attempts:
            assert (job.status, job.attempt) == ("dead", model.attempt)
            assert job.last_error == POISON_ERROR.format(model.crashes)
            model.status, model.completed_at, model.next_retry_at = "dead", self.now_text, None
            return
        if attempt <= model.max_attempts:
            assert (job.status, job.attempt, job.next_retry_at, job.last_error) == (
                "queued", attempt, None, None
            )
            model.status, model.attempt, model.next_retry_at = "queued", attempt, None
            return
        assert (job.status, job.attempt) == ("dead", attempt)
        assert job.last_error == RECOVERY_DEAD_ERROR.format(model.max_attempts)
        model.status, model.attempt, model.completed_at = "dead", attempt, self.now_text
        model.next_retry_at = None

    def finish(self, job: Job, status: str) -> None:
        done = self.complete(job, status)
        assert (done.status, done.completed_at) == (status, self.now_text)
        model = self.model[job.id]
        model.status, model.completed_at, model.next_retry_at = status, self.now_text, None
        del self.running[job.id]

    # -- helpers ----------------------------------------------------------------------------

    def ordered_models(self) -> list[ModelJob]:
        """Jobs in claim order (created_at, then insertion): ids are random uuids, so ordering
        by them would make Hypothesis replay a different job for the same index."""
        return sorted(self.model.values(), key=lambda m: (m.created_at, m.seq))

    def model_jobs(self, *statuses: str) -> list[ModelJob]:
        return [m for m in self.ordered_models() if m.status in statuses]

    def sorted_running(self) -> list[Job]:
        return sorted(self.running.values(), key=lambda job: job.created_at)

    def pick_running(self, index: int) -> Job:
        jobs = self.sorted_running()
        return jobs[index % len(jobs)]

    def complete(self, job: Job, status: str) -> Job:
        return run(lambda: self.queue.complete(
            job, status, result="{}", last_error=None if status == "succeeded" else "boom",
            stderr="", exit_code=0, duration_ms=1, outcome="test",
        ))

    def retry(self, job: Job, *, delay: float) -> Job:
        return run(lambda: self.queue.retry(
            job, delay=delay, last_error="nope", exit_code=1, duration_ms=1,
            outcome="plugin_error", stderr="",
        ))

    def fetch(self, job_id: str) -> Job:
        job: Any = run(lambda: self.queue.get(job_id))
        assert job is not None
        return job


JobMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobMachine = JobMachine.TestCase


# -- the same machine on PostgreSQL ------------------------------------------------------------

#: Every table the queue writes, emptied before each example (a fresh database per example
#: would cost a CREATE DATABASE each).
PG_TABLES = ("job_queue", "job_transitions", "job_attempts", "job_log", "event_context",
             "plugin_state", "plugin_facts", "storage_sequences")


class PgJobMachine(JobMachine):
    """JobMachine on a PgQueue; `dsn` is set by the test below (a `pg_dsn` database)."""

    dsn = ""

    def open_store(self) -> None:
        self.conn = None
        db = run(self.open_db)  # migrates the schema on the first example
        run(db.close)
        assert self.conn is not None
        self.conn.execute(f"TRUNCATE {', '.join(PG_TABLES)} RESTART IDENTITY")

    async def open_db(self) -> Any:
        from ductile.store.pg.db import PgDatabase

        db = await PgDatabase.open(self.dsn, pool_size=2)
        if self.conn is None:
            import psycopg

            self.conn = psycopg.connect(self.dsn, autocommit=True)
        return db

    def new_queue(self) -> QueueCore:
        from ductile.store.pg.queue import PgQueue

        return PgQueue(
            self.db, snapshot_id=lambda: "cfg_test", dedupe_ttl=QUEUE_DEDUPE_TTL, clock=self.clock
        )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(sql.replace("?", "%s"), params)]

    def close_store(self) -> None:
        self.conn.close()


def test_the_job_machine_on_postgresql(pg_dsn: str) -> None:
    """Fewer examples than on SQLite: each step is a round trip to a server."""
    PgJobMachine.dsn = pg_dsn
    run_state_machine_as_test(PgJobMachine, settings=settings(
        max_examples=30,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    ))
