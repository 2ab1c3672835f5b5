"""states/job.yaml, driven through a real Queue on a real SQLite file.

Hypothesis picks sequences of enqueue / claim / complete / retry / cancel / crash recovery /
clock moves (including the illegal ones a buggy dispatcher might try) and checks after every
step that the database still tells a consistent story:

- every job's status is a state declared in states/job.yaml;
- every recorded job_transitions pair is an edge the machine allows, and each job's latest
  transition leads to its current status;
- no job is lost: the table holds exactly the jobs whose enqueue succeeded;
- `attempt` never exceeds `max_attempts + 1` (+1 only for a job killed by crash recovery).

Each rule runs its coroutine with `trio.run`; the Database and its writer thread outlive the
individual runs, which is also a test that a write only needs the caller's trio token.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ductile.errors import DedupeDropped, InvalidTransition, StoreError
from ductile.machines import load_machine
from ductile.store import Database, Job, Queue, open_readonly

SPEC = load_machine("job")
TERMINAL = list(SPEC.terminal)
T = TypeVar("T")


def has_edge(trigger: str, source: str, dest: str) -> bool:
    return any(
        t.trigger == trigger and t.dest == dest and source in t.source for t in SPEC.transitions
    )


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn)


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ductile-jobs-"))
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.db: Database = run(lambda: Database.open(str(self.dir / "ductile.db")))
        self.queue = Queue(self.db, snapshot_id=lambda: "cfg_test", dedupe_ttl=0, clock=self.clock)
        self.conn: sqlite3.Connection = open_readonly(str(self.dir / "ductile.db"))
        self.enqueued = 0
        self.running: dict[str, Job] = {}

    def clock(self) -> datetime:
        return self.now

    def teardown(self) -> None:
        self.conn.close()
        run(self.db.close)
        shutil.rmtree(self.dir, ignore_errors=True)

    def jobs(self, status: str) -> list[str]:
        return [
            row[0]
            for row in self.conn.execute(
                "SELECT id FROM job_queue WHERE status = ? ORDER BY created_at", (status,)
            )
        ]

    # -- rules ------------------------------------------------------------------------------

    @rule(
        plugin=st.sampled_from(["a", "b"]),
        max_attempts=st.integers(1, 3),
        dedupe_key=st.sampled_from([None, "k"]),
        outstanding_check=st.booleans(),
    )
    def enqueue(
        self, plugin: str, max_attempts: int, dedupe_key: str | None, outstanding_check: bool
    ) -> None:
        self.now += timedelta(microseconds=1)
        try:
            run(lambda: self.queue.enqueue(
                plugin, "poll", {"n": self.enqueued}, "test",
                max_attempts=max_attempts, dedupe_key=dedupe_key,
                dedupe_ttl=60 if outstanding_check else None,
            ))
        except DedupeDropped:
            return
        self.enqueued += 1

    @rule(skip=st.sampled_from([(), ("a",), ("b",)]))
    def claim(self, skip: tuple[str, ...]) -> None:
        job = run(lambda: self.queue.claim(skip))
        if job is not None:
            assert job.plugin not in skip
            assert job.status == "running"
            self.running[job.id] = job

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100), status=st.sampled_from(TERMINAL))
    def complete(self, index: int, status: str) -> None:
        job = self.pick_running(index)
        done = run(lambda: self.queue.complete(
            job, status, result="{}", last_error=None, stderr="", exit_code=0,
            duration_ms=1, outcome="test",
        ))
        assert done.status == status
        del self.running[job.id]

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100), delay=st.sampled_from([0.0, 5.0]))
    def retry(self, index: int, delay: float) -> None:
        job = self.pick_running(index)
        try:
            again = run(lambda: self.queue.retry(
                job, delay=delay, last_error="nope", exit_code=1, duration_ms=1,
                outcome="plugin_error", stderr="",
            ))
        except StoreError as exc:
            assert job.attempt >= job.max_attempts, exc
            assert not isinstance(exc, InvalidTransition)
            return
        assert (again.status, again.attempt) == ("queued", job.attempt + 1)
        del self.running[job.id]

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100))
    def crash_and_recover(self, index: int) -> None:
        recovered = run(self.queue.recover_orphans)
        assert {job.id for job in recovered} == set(self.running)
        for job in recovered:
            assert job.status in ("queued", "dead")
        self.running.clear()

    @rule(index=st.integers(0, 100))
    def cancel_queued(self, index: int) -> None:
        queued = self.jobs("queued")
        if queued:
            dead = run(lambda: self.queue.cancel(queued[index % len(queued)]))
            assert dead.status == "dead"

    @rule(index=st.integers(0, 100), status=st.sampled_from(TERMINAL))
    def completing_a_non_running_job_is_refused(self, index: int, status: str) -> None:
        others = [job_id for job_id in self.jobs_not_running()]
        if not others:
            return
        job = self.fetch(others[index % len(others)])
        try:
            run(lambda: self.queue.complete(
                job, status, result=None, last_error=None, stderr=None, exit_code=None,
                duration_ms=None, outcome="bogus",
            ))
        except InvalidTransition as exc:
            assert (exc.from_status, exc.to_status) == (job.status, status)
            assert not has_edge("complete", job.status, status)
        else:
            raise AssertionError(f"completing a {job.status} job was accepted")

    @rule(seconds=st.sampled_from([1.0, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def statuses_are_declared_states(self) -> None:
        for (status,) in self.conn.execute("SELECT DISTINCT status FROM job_queue"):
            assert status in SPEC.states and status != SPEC.initial, status

    @invariant()
    def every_recorded_transition_is_allowed(self) -> None:
        rows = self.conn.execute(
            "SELECT DISTINCT from_status, to_status FROM job_transitions"
        ).fetchall()
        for from_status, to_status in rows:
            assert SPEC.allowed(from_status, to_status), (from_status, to_status)

    @invariant()
    def the_latest_transition_explains_the_status(self) -> None:
        mismatched = self.conn.execute(
            "SELECT q.id FROM job_queue q WHERE q.status != ("
            " SELECT t.to_status FROM job_transitions t WHERE t.job_id = q.id"
            " ORDER BY t.id DESC LIMIT 1)"
        ).fetchall()
        assert mismatched == []

    @invariant()
    def no_job_is_lost(self) -> None:
        count = self.conn.execute("SELECT count(*) FROM job_queue").fetchone()[0]
        assert count == self.enqueued

    @invariant()
    def attempts_stay_bounded(self) -> None:
        over = self.conn.execute(
            "SELECT id, attempt, max_attempts FROM job_queue WHERE attempt > max_attempts + 1"
        ).fetchall()
        assert over == []

    @invariant()
    def the_running_set_matches_the_database(self) -> None:
        assert set(self.jobs("running")) == set(self.running)

    # -- helpers ----------------------------------------------------------------------------

    def pick_running(self, index: int) -> Job:
        """Pick by creation order: ids are random uuids, so ordering by them would make
        Hypothesis replay a different job for the same index."""
        jobs = sorted(self.running.values(), key=lambda job: job.created_at)
        return jobs[index % len(jobs)]

    def jobs_not_running(self) -> list[str]:
        return [
            row[0]
            for row in self.conn.execute(
                "SELECT id FROM job_queue WHERE status != 'running' ORDER BY created_at"
            )
        ]

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
