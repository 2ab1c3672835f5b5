"""states/breaker.yaml, driven through store/breakers.py on a real SQLite file, against a model.

Hypothesis writes terminal job_log rows (scheduler successes and failures, and noise the breaker
must ignore: other submitters, skipped jobs, the scheduler's own cancellations), folds them into
the breaker, moves the clock, asks for the cooldown and resets. A plain-Python model predicts the
state and failure count. After every step:

- the circuit_breakers row has the model's state and failure count (a breaker's first fold
  looks only at the newest `threshold` outcomes, so an old history is not replayed);
- every circuit_breaker_transitions row is an edge of states/breaker.yaml, the history chains
  (each from_state is the previous to_state, starting at closed) and ends at the current state;
- the breaker is open only with failure_count >= threshold, and open_circuit_count agrees.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ductile.store import breakers as brk
from ductile.store.db import schema_sql
from ductile.store.jobs import format_time

SERVICE = "ductile"
MACHINE = brk.breaker_machine()
START = datetime(2026, 6, 1, tzinfo=timezone.utc)


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="breaker-machine-")
        self.conn = sqlite3.connect(str(Path(self.dir) / "state.db"), isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        # Durability is not under test here; skipping fsync keeps each example fast.
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA journal_mode=MEMORY")
        self.conn.executescript(schema_sql())
        self.now = START
        self.threshold = 3
        self.reset_after = 60.0
        self.state = brk.CLOSED
        self.count = 0
        self.opened_at: datetime | None = None
        self.pending: list[bool] = []  # outcomes written but not folded yet (True = success)
        # Until a fold has counted an outcome (the breaker has no last_job_id), a fold looks at
        # the newest `threshold` outcomes only.
        self.has_cursor = False

    @initialize(threshold=st.integers(1, 4), reset_after=st.sampled_from([0.0, 30.0, 600.0]))
    def configure(self, threshold: int, reset_after: float) -> None:
        self.threshold, self.reset_after = threshold, reset_after

    def _log(self, status: str, *, submitted_by: str = SERVICE, error: str | None = "x") -> None:
        self.now += timedelta(milliseconds=1)
        job_id = str(uuid.uuid4())
        self.conn.execute(
            "INSERT INTO job_log (id, job_id, plugin, command, status, attempt, submitted_by, "
            "created_at, completed_at, last_error) VALUES (?, ?, 'p', 'poll', ?, 1, ?, ?, ?, ?)",
            (f"{job_id}-1", job_id, status, submitted_by, format_time(self.now),
             format_time(self.now), error),
        )

    def _write(self, fn):  # type: ignore[no-untyped-def]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
            self.conn.execute("COMMIT")
            return result
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    @rule()
    def job_succeeded(self) -> None:
        self._log("succeeded", error=None)
        self.pending.append(True)

    @rule(status=st.sampled_from(["failed", "timed_out", "dead"]))
    def job_failed(self, status: str) -> None:
        self._log(status)
        self.pending.append(False)

    @rule(kind=st.sampled_from(["api", "skipped", "cancelled", "legacy_cancel"]))
    def noise(self, kind: str) -> None:
        if kind == "api":
            self._log("failed", submitted_by="api")
        elif kind == "skipped":
            self._log("skipped")
        elif kind == "cancelled":
            self._log("cancelled", error=brk.CANCELLED_BY_SCHEDULER)
        else:  # a row from before `cancelled` existed: the scheduler's cancel was `dead`
            self._log("dead", error=brk.CANCELLED_BY_SCHEDULER)

    @rule()
    def fold(self) -> None:
        now = format_time(self.now)
        self._write(lambda c: brk.fold_outcomes(c, MACHINE, "p", "poll", threshold=self.threshold,
                                                submitted_by=SERVICE, now=now))
        if not self.has_cursor:
            self.pending = self.pending[-self.threshold:]
            self.has_cursor = bool(self.pending)
        for success in self.pending:
            if success:
                self.state, self.count, self.opened_at = brk.CLOSED, 0, None
                continue
            self.count += 1
            if self.state == brk.HALF_OPEN or (
                    self.state == brk.CLOSED and self.count >= self.threshold):
                self.state, self.opened_at = brk.OPEN, self.now
        self.pending = []

    @rule(seconds=st.sampled_from([1, 29, 30, 59, 61, 3600]))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def cool_down(self) -> None:
        now = format_time(self.now)
        self._write(lambda c: brk.cool_down_if_due(c, MACHINE, "p", "poll",
                                                   reset_after=self.reset_after, now=now))
        if self.state == brk.OPEN and self.opened_at is not None and (
                (self.now - self.opened_at).total_seconds() >= self.reset_after):
            self.state = brk.HALF_OPEN

    @rule()
    def reset(self) -> None:
        now = format_time(self.now)
        self._write(lambda c: brk.reset_breaker(c, MACHINE, "p", "poll", now))
        self.state, self.count, self.opened_at = brk.CLOSED, 0, None

    @invariant()
    def row_matches_model(self) -> None:
        row = brk.fetch_breaker(self.conn, "p", "poll")
        if row is None:
            assert (self.state, self.count) == (brk.CLOSED, 0)
            return
        assert (row.state, row.failure_count) == (self.state, self.count)
        if row.state == brk.OPEN:
            assert row.failure_count >= self.threshold and row.opened_at is not None
        assert brk.open_circuit_count(self.conn) == (1 if row.state == brk.OPEN else 0)

    @invariant()
    def history_is_a_walk_of_the_machine(self) -> None:
        history = list(reversed(brk.fetch_breaker_history(self.conn, "p", "poll", 10_000)))
        current = MACHINE.initial
        for t in history:
            assert t.from_state == current
            assert MACHINE.allowed(t.from_state, t.to_state)
            assert t.to_state != t.from_state
            current = t.to_state
        assert current == self.state

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestBreakerMachine = BreakerMachine.TestCase
