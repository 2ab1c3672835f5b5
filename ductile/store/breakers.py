"""Circuit breakers per (plugin, command): the only writer of circuit_breakers and its history.

The scheduler owns the breakers. A breaker learns about job outcomes by
reading the job log, not through a dispatcher hook: `fold_outcomes` takes every terminal attempt
of a scheduler-submitted job for the target that completed after the breaker's `last_job_id`, in
completion order, and applies each one. So an outcome is counted exactly once, even across
restarts, and nothing is lost while the scheduler sleeps.

Rules (states/breaker.yaml is checked before each state change, and every change appends a
circuit_breaker_transitions row with the reason and job id in the same transaction):

* success -> closed, failure_count 0 (a transition only when it was open or half_open);
* failure -> failure_count + 1; `threshold` consecutive failures trip closed -> open; a failed
  half-open probe trips half_open -> open again (reason failure_threshold, as in Go);
* open and `reset_after` elapsed since opened_at -> half_open (reason cooldown_elapsed): the
  next scheduled fire runs as the one probe;
* `reset_breaker` (ductile system reset) -> closed, counters cleared (reason manual_reset).

The rules above are written once (`fold_outcomes_on`, `cool_down_on`, `reset_on`) over a
`BreakerRows` table of the few statements that touch the tables; `breaker_statements` binds
them into the `BreakerStatements` a backend offers: SQLite's below (`SQLITE_BREAKERS`), and
PostgreSQL's in store/pg/breakers.py. So both backends apply the same rules by construction.

Only jobs with submitted_by = service.name count. `skipped` jobs, and jobs the scheduler itself
cancelled for `if_running: cancel` (last_error == CANCELLED_BY_SCHEDULER), say nothing about
the plugin's health and are passed over. Times written here (opened_at, updated_at) come from
the scheduler's clock, so the cooldown is measured on one clock; last_failure_at is the job's
own completion time.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from ductile.errors import InvalidBreakerChange
from ductile.machines import MachineSpec, job_statuses, load_machine
from ductile.store.jobs import _Record, parse_time

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
CANCELLED_BY_SCHEDULER = "cancelled by scheduler (if_running=cancel)"
DEFAULT_HISTORY = 20

# Which trigger of states/breaker.yaml a change uses, by (from, to).
_TRIGGERS = {
    (CLOSED, OPEN): "trip",
    (HALF_OPEN, OPEN): "trip",
    (OPEN, HALF_OPEN): "cool_down",
    (OPEN, CLOSED): "succeed",
    (HALF_OPEN, CLOSED): "succeed",
}


@dataclass(frozen=True)
class Breaker(_Record):
    """One circuit_breakers row."""

    plugin: str
    command: str
    state: str
    failure_count: int
    opened_at: str | None
    last_failure_at: str | None
    last_job_id: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.columns()}


@dataclass(frozen=True)
class BreakerTransition(_Record):
    """One append-only circuit_breaker_transitions row."""

    id: str
    plugin: str
    command: str
    from_state: str | None
    to_state: str
    failure_count: int
    reason: str
    job_id: str | None
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.columns()}


def breaker_machine() -> MachineSpec:
    """states/breaker.yaml."""
    return load_machine("breaker")


def closed_breaker(plugin: str, command: str, now: str) -> Breaker:
    """The state of a target that has no row yet."""
    return Breaker(plugin, command, CLOSED, 0, None, None, None, now)


Conn = Any  # a backend's connection: sqlite3.Connection here, psycopg's in store/pg
Outcome = tuple[str, str, str]  # (job_id, status, completed_at) of one job_log row


@dataclass(frozen=True)
class BreakerRows:
    """One backend's statements over circuit_breakers, its history and the job log: the only
    part of the breaker code that differs between backends."""

    fetch_breaker: Callable[[Conn, str, str], Breaker | None]
    fetch_breakers: Callable[..., list[Breaker]]
    fetch_breaker_history: Callable[..., list[BreakerTransition]]
    open_circuit_count: Callable[[Conn], int]
    # The terminal scheduler outcomes of the breaker's target after its last_job_id, in
    # completion order (the newest `first_look` when it has none): (conn, breaker,
    # submitted_by, first_look).
    outcomes_since: Callable[[Conn, Breaker, str, int], list[Outcome]]
    append: Callable[[Conn, BreakerTransition], None]
    save: Callable[[Conn, Breaker], None]


@dataclass(frozen=True)
class BreakerStatements:
    """What the layers above run on a connection of the backend (Backend.breakers).

    fetch_breaker(conn, plugin, command); fetch_breakers(conn, plugin=None);
    fetch_breaker_history(conn, plugin, command, limit=20); open_circuit_count(conn);
    fold_outcomes(conn, machine, plugin, command, *, threshold, submitted_by, now);
    has_new_outcomes(conn, plugin, command, *, submitted_by);
    cool_down_if_due(conn, machine, plugin, command, *, reset_after, now);
    reset_breaker(conn, machine, plugin, command, now). Each returns what the SQLite function
    of the same name in this module returns.
    """

    fetch_breaker: Callable[[Conn, str, str], Breaker | None]
    fetch_breakers: Callable[..., list[Breaker]]
    fetch_breaker_history: Callable[..., list[BreakerTransition]]
    open_circuit_count: Callable[[Conn], int]
    fold_outcomes: Callable[..., Breaker]
    has_new_outcomes: Callable[..., bool]
    cool_down_if_due: Callable[..., Breaker]
    reset_breaker: Callable[..., Breaker]


def breaker_statements(rows: BreakerRows) -> BreakerStatements:
    """The full statements table of a backend: its rows plus the shared rules."""
    return BreakerStatements(
        fetch_breaker=rows.fetch_breaker,
        fetch_breakers=rows.fetch_breakers,
        fetch_breaker_history=rows.fetch_breaker_history,
        open_circuit_count=rows.open_circuit_count,
        fold_outcomes=partial(fold_outcomes_on, rows),
        has_new_outcomes=partial(has_new_outcomes_on, rows),
        cool_down_if_due=partial(cool_down_on, rows),
        reset_breaker=partial(reset_on, rows),
    )


# -- the rules (shared by every backend) ---------------------------------------------------------


def fold_outcomes_on(
    rows: BreakerRows,
    conn: Conn,
    machine: MachineSpec,
    plugin: str,
    command: str,
    *,
    threshold: int,
    submitted_by: str,
    now: str,
) -> Breaker:
    """Apply every new terminal scheduler job of the target to its breaker; return the row.

    Without a row yet, only the newest `threshold` outcomes are considered, so a first look at
    an old database does not replay its whole history as transitions.
    """
    current = rows.fetch_breaker(conn, plugin, command)
    breaker = current or closed_breaker(plugin, command, now)
    outcomes = rows.outcomes_since(conn, breaker, submitted_by, max(1, threshold))
    for job_id, status, completed_at in outcomes:
        if status == "succeeded":
            breaker = _success(rows, conn, machine, breaker, job_id, now)
        else:
            breaker = _failure(rows, conn, machine, breaker, job_id, completed_at, threshold,
                               now)
    if outcomes or current is None:
        rows.save(conn, breaker)
    return breaker


def has_new_outcomes_on(rows: BreakerRows, conn: Conn, plugin: str, command: str, *,
                        submitted_by: str) -> bool:
    """True when `fold_outcomes` would have something to fold (a cheap read, so the scheduler
    takes the write only when a job of the target finished)."""
    breaker = rows.fetch_breaker(conn, plugin, command) or closed_breaker(plugin, command, "")
    return bool(rows.outcomes_since(conn, breaker, submitted_by, 1))


def cool_down_on(
    rows: BreakerRows,
    conn: Conn,
    machine: MachineSpec,
    plugin: str,
    command: str,
    *,
    reset_after: float,
    now: str,
) -> Breaker:
    """open -> half_open once `reset_after` seconds have passed since opened_at."""
    breaker = rows.fetch_breaker(conn, plugin, command) or closed_breaker(plugin, command, now)
    if breaker.state != OPEN or breaker.opened_at is None:
        return breaker
    elapsed = (parse_time(now) - parse_time(breaker.opened_at)).total_seconds()
    if elapsed < reset_after:
        return breaker
    changed = _change_on(rows, conn, machine, breaker, HALF_OPEN, "cooldown_elapsed", None, now)
    rows.save(conn, changed)
    return changed


def reset_on(rows: BreakerRows, conn: Conn, machine: MachineSpec, plugin: str, command: str,
             now: str) -> Breaker:
    """Close the breaker and clear its counters (operator action)."""
    breaker = rows.fetch_breaker(conn, plugin, command) or closed_breaker(plugin, command, now)
    if breaker.state != CLOSED:
        if not machine.allowed(breaker.state, CLOSED):
            raise InvalidBreakerChange(plugin, command, breaker.state, CLOSED)
        rows.append(conn, _transition(breaker, CLOSED, "manual_reset", None, now, count=0))
    reset = replace(breaker, state=CLOSED, failure_count=0, opened_at=None, updated_at=now)
    rows.save(conn, reset)
    return reset


def _success(rows: BreakerRows, conn: Conn, machine: MachineSpec, breaker: Breaker,
             job_id: str, now: str) -> Breaker:
    if breaker.state != CLOSED:
        breaker = _change_on(rows, conn, machine, breaker, CLOSED, "success", job_id, now,
                             count=0)
    return replace(breaker, state=CLOSED, failure_count=0, opened_at=None, last_job_id=job_id,
                   updated_at=now)


def _failure(rows: BreakerRows, conn: Conn, machine: MachineSpec, breaker: Breaker,
             job_id: str, completed_at: str, threshold: int, now: str) -> Breaker:
    count = breaker.failure_count + 1
    breaker = replace(breaker, failure_count=count, last_failure_at=completed_at,
                      last_job_id=job_id, updated_at=now)
    tripped = breaker.state == HALF_OPEN or (breaker.state == CLOSED and count >= threshold)
    if tripped:
        breaker = _change_on(rows, conn, machine, breaker, OPEN, "failure_threshold", job_id, now)
    return breaker


def _change_on(rows: BreakerRows, conn: Conn, machine: MachineSpec, breaker: Breaker,
               to_state: str, reason: str, job_id: str | None, now: str, *,
               count: int | None = None) -> Breaker:
    trigger = _TRIGGERS.get((breaker.state, to_state))
    allowed = trigger is not None and any(
        t.trigger == trigger and t.dest == to_state and breaker.state in t.source
        for t in machine.transitions
    )
    if not allowed:
        raise InvalidBreakerChange(breaker.plugin, breaker.command, breaker.state, to_state)
    kept = breaker.failure_count if count is None else count
    rows.append(conn, _transition(breaker, to_state, reason, job_id, now, count=kept))
    opened_at = now if to_state == OPEN else (breaker.opened_at if to_state == HALF_OPEN else None)
    return replace(breaker, state=to_state, opened_at=opened_at, updated_at=now,
                   failure_count=kept)


def _transition(breaker: Breaker, to_state: str, reason: str, job_id: str | None, now: str, *,
                count: int) -> BreakerTransition:
    """The history row of a change of `breaker` to `to_state` (a fresh uuid4 id)."""
    return BreakerTransition(id=str(uuid.uuid4()), plugin=breaker.plugin,
                             command=breaker.command, from_state=breaker.state,
                             to_state=to_state, failure_count=count, reason=reason,
                             job_id=job_id, created_at=now)


def outcome_filter() -> str:
    """The job_log condition both backends put on an outcome, after plugin, command and
    submitted_by: a success or a failure status of states/job.yaml, not cancelled by the
    scheduler (the placeholder after it is CANCELLED_BY_SCHEDULER)."""
    return (f"AND status IN ('succeeded', {job_statuses().sql('failure')[1:]} "
            "AND coalesce(last_error, '') != ")


# -- SQLite (also used by the CLI on a read-only connection) --------------------------------------


def fetch_breaker(conn: sqlite3.Connection, plugin: str, command: str) -> Breaker | None:
    row = conn.execute(
        f"SELECT {Breaker.select_list()} FROM circuit_breakers WHERE plugin = ? AND command = ?",
        (plugin, command),
    ).fetchone()
    return Breaker.from_row(row) if row is not None else None


def fetch_breakers(conn: sqlite3.Connection, plugin: str | None = None) -> list[Breaker]:
    """Every breaker row (of one plugin), by plugin and command."""
    where, params = ("WHERE plugin = ?", (plugin,)) if plugin is not None else ("", ())
    rows = conn.execute(
        f"SELECT {Breaker.select_list()} FROM circuit_breakers {where} ORDER BY plugin, command",
        params,
    )
    return [Breaker.from_row(row) for row in rows]


def fetch_breaker_history(
    conn: sqlite3.Connection, plugin: str, command: str, limit: int = DEFAULT_HISTORY
) -> list[BreakerTransition]:
    """The newest `limit` transitions of the target, newest first."""
    rows = conn.execute(
        f"SELECT {BreakerTransition.select_list()} FROM circuit_breaker_transitions "
        "WHERE plugin = ? AND command = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (plugin, command, limit),
    )
    return [BreakerTransition.from_row(row) for row in rows]


def open_circuit_count(conn: sqlite3.Connection) -> int:
    """How many breakers are open right now (for /healthz). half_open is not counted: it is
    already letting a probe through."""
    return int(
        conn.execute("SELECT count(*) FROM circuit_breakers WHERE state = ?", (OPEN,)).fetchone()[0]
    )


def _outcomes_since(
    conn: sqlite3.Connection, breaker: Breaker, submitted_by: str, first_look: int
) -> list[Outcome]:
    base = (
        "SELECT job_id, status, completed_at FROM job_log "
        "WHERE plugin = ? AND command = ? AND submitted_by = ? " + outcome_filter() + "? "
    )
    params: list[Any] = [breaker.plugin, breaker.command, submitted_by, CANCELLED_BY_SCHEDULER]
    if breaker.last_job_id is None:
        rows = conn.execute(base + "ORDER BY completed_at DESC, rowid DESC LIMIT ?",
                            (*params, first_look)).fetchall()
        return [tuple(r) for r in reversed(rows)]  # type: ignore[misc]
    cursor = conn.execute(
        "SELECT completed_at, rowid FROM job_log WHERE job_id = ? ORDER BY attempt DESC LIMIT 1",
        (breaker.last_job_id,),
    ).fetchone()
    if cursor is None:  # pruned by retention: fall back to the breaker's own clock
        rows = conn.execute(base + "AND completed_at > ? ORDER BY completed_at, rowid",
                            (*params, breaker.updated_at)).fetchall()
    else:
        rows = conn.execute(
            base + "AND (completed_at > ? OR (completed_at = ? AND rowid > ?)) "
            "ORDER BY completed_at, rowid",
            (*params, cursor[0], cursor[0], cursor[1]),
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _append_row(conn: sqlite3.Connection, row: BreakerTransition) -> None:
    values = row.as_dict()
    conn.execute(
        f"INSERT INTO circuit_breaker_transitions ({', '.join(values)}) "
        f"VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()),
    )


def _save(conn: sqlite3.Connection, breaker: Breaker) -> None:
    values = breaker.as_dict()
    names = ", ".join(values)
    updates = ", ".join(f"{n} = excluded.{n}" for n in values if n not in ("plugin", "command"))
    conn.execute(
        f"INSERT INTO circuit_breakers ({names}) VALUES ({', '.join('?' for _ in values)}) "
        f"ON CONFLICT (plugin, command) DO UPDATE SET {updates}",
        tuple(values.values()),
    )


SQLITE_BREAKER_ROWS = BreakerRows(
    fetch_breaker=fetch_breaker,
    fetch_breakers=fetch_breakers,
    fetch_breaker_history=fetch_breaker_history,
    open_circuit_count=open_circuit_count,
    outcomes_since=_outcomes_since,
    append=_append_row,
    save=_save,
)
SQLITE_BREAKERS = breaker_statements(SQLITE_BREAKER_ROWS)

# The SQLite writers under their historical names (tests and the CLI's own connection).
fold_outcomes = SQLITE_BREAKERS.fold_outcomes
has_new_outcomes = SQLITE_BREAKERS.has_new_outcomes
cool_down_if_due = SQLITE_BREAKERS.cool_down_if_due
reset_breaker = SQLITE_BREAKERS.reset_breaker


def _change(conn: sqlite3.Connection, machine: MachineSpec, breaker: Breaker, to_state: str,
            reason: str, job_id: str | None, now: str, *, count: int | None = None) -> Breaker:
    """One checked change on SQLite (kept for the tests of the machine check)."""
    return _change_on(SQLITE_BREAKER_ROWS, conn, machine, breaker, to_state, reason, job_id,
                      now, count=count)
