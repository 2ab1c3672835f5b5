"""The scheduler: a task in the supervisor's nursery that enqueues scheduled jobs on time.

Each pass (at start, at each due fire, on `wake()`, and at least every `service.tick_interval`):

1. Fold the outcomes of the scheduler's own finished jobs into the circuit breakers
   (store/breakers.py reads them from the job log, so the dispatcher needs no hook).
2. For every schedule of every enabled plugin, ask `plan.plan` which slots are due, given what
   schedule_entries remembers; fire them; persist the new state.
3. Sleep until the earliest next fire (jitter included), capped by `service.tick_interval`.

Firing one slot checks, in order: backpressure (outstanding jobs at a `max_outstanding_jobs`
bound: skip `backpressure`), the breaker (open: skip `circuit_open`; cooldown elapsed:
half_open, and this fire is the probe; a probe still running: skip `probe_running`), then the
overlap policy `if_running` against the outstanding jobs of (plugin, command) (for `poll` only
the scheduler's own, as in Go): `skip` skips when any is outstanding (`already_running`),
`queue` when `max_outstanding_polls` are (`outstanding_limit`), `cancel` cancels them (queued
ones in the queue, running ones through the dispatcher, whose plugin process group gets SIGTERM
then SIGKILL; either way the job ends `cancelled`, which the breaker passes over) and enqueues. The job's dedupe key is the fire key `plugin:command:id:<scheduled instant>`, so a
fire replayed after a crash between enqueue and bookkeeping is dropped by the queue. A skipped
slot is consumed: the schedule waits for its next slot (Go instead retried at every tick).

An operator can also fire one schedule now (`fire_now`, `ductile system scheduler run`): the
job carries the schedule's command and payload, is submitted by `scheduler:manual`, goes
through the same `if_running` policy, and leaves the schedule's bookkeeping alone, so its next
regular fire does not move. It is not held by an open breaker and does not count towards one
(breakers count the scheduler's own submissions); for `poll`, regular fires count it as the
scheduler's own when they apply `if_running`.

The store functions come from the runtime's backend (`rt.backend.breakers`,
`rt.backend.schedules`), run on the connections `db.read`/`db.write` hand out; `brk` and `sch`
are imported only for their records and constants.

Several gateways on one PostgreSQL store each run a scheduler, but only the holder of the
scheduler lease passes (`leadership`, schedule/leadership.py): its fires and its schedule state
are written under a re-check of the lease's term, and each (schedule, instant) fires once
across the cluster (a fire refused because the lease moved is recorded as `not_leader`).

Times: `clock()` is the wall clock (UTC, injectable for tests); sleeping uses the trio clock, so
tests can run days of schedules under `trio.testing.MockClock`. The scheduler's start time is
the `boot` instant that `after` schedules count from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import trio

from ductile.errors import (
    DedupeDropped,
    LeadershipLost,
    Overloaded,
    SchedulerError,
    StoreError,
    StoreUnavailable,
    UnknownSchedule,
)
from ductile.events.hub import Publish, no_publish
from ductile.logs import Logger
from ductile.schedule import plan as planner
from ductile.schedule.expr import Schedule, ScheduleError, fire_key
from ductile.schedule.leadership import Leadership
from ductile.schedule.validate import Parsed, enabled_schedules
from ductile.store import breakers as brk
from ductile.store import schedules as sch
from ductile.store.jobs import format_time, parse_time, utcnow

if TYPE_CHECKING:
    from ductile.runtime import Runtime
    from ductile.store.queue import Store

CancelRunning = Callable[[str, str], Awaitable[bool]]
UNAVAILABLE_PAUSE = 1.0
#: `submitted_by` of a job an operator fired by hand (`fire_now`).
MANUAL_SUBMITTER = "scheduler:manual"
#: The skip reason of a fire over a `max_outstanding_jobs` bound (events/outstanding.py).
BACKPRESSURE = "backpressure"


@dataclass(frozen=True)
class Fired:
    """What happened to one due slot (returned for logs and tests)."""

    plugin: str
    schedule_id: str
    slot: datetime
    job_id: str | None
    skipped: str | None = None  # the skip reason, when no job was enqueued
    manual: bool = False  # fired by an operator (fire_now), not by the schedule's clock


@dataclass(frozen=True)
class ManualFire:
    """The outcome of an operator's `fire_now`: the job enqueued, or why none was.

    `skipped` is `already_running` (if_running: skip), `outstanding_limit` (if_running: queue)
    or `invalid` (the schedule cannot run; `detail` says why). `outstanding` lists the jobs that
    held the fire back; `cancelled` the jobs if_running: cancel cancelled before enqueueing."""

    plugin: str
    schedule_id: str
    command: str
    if_running: str
    job_id: str | None = None
    skipped: str | None = None
    detail: str = ""
    outstanding: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"plugin": self.plugin, "schedule_id": self.schedule_id,
                                "command": self.command, "if_running": self.if_running,
                                "submitted_by": MANUAL_SUBMITTER}
        if self.job_id is not None:
            body.update(job_id=self.job_id, status="queued")
        if self.skipped is not None:
            body.update(skipped=self.skipped, detail=self.detail)
        if self.outstanding:
            body["outstanding"] = list(self.outstanding)
        if self.cancelled:
            body["cancelled"] = list(self.cancelled)
        return body


class Scheduler:
    """Enqueue scheduled jobs; own the circuit breakers. See the module docstring."""

    def __init__(
        self,
        current: Callable[[], Runtime],
        db: Store,
        log: Logger,
        *,
        clock: Callable[[], datetime] = utcnow,
        cancel_running: CancelRunning | None = None,
        seed: bytes = b"",
        grace: float = planner.LATE_GRACE,
        publish: Publish = no_publish,
        leadership: Leadership | None = None,
    ) -> None:
        self._current = current
        # None: this gateway always leads (SQLite). Otherwise only the lease holder fires.
        self._leadership = leadership
        self._publish = publish  # the event hub (scheduler.* events)
        self._db = db
        self._log = log.child("scheduler")
        self._clock = clock
        self._cancel_running = cancel_running
        self._seed = seed
        self._grace = grace
        self._machine = brk.breaker_machine()
        self._wake = trio.Event()
        self._asleep = trio.Event()
        self.sleeping_until = 0.0
        self._stopping = False
        # A pass and a manual fire decide on the same outstanding jobs: one at a time.
        self._deciding = trio.Lock()
        self.boot: datetime | None = None
        self.fired: list[Fired] = []  # the most recent decisions (bounded), newest last

    def wake(self) -> None:
        """Look again now: a reload, a pause or a resume happened."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current pass and return from `run`."""
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.boot = self._clock()
        self._log.info("scheduler started", boot=format_time(self.boot))
        task_status.started()
        while not self._stopping:
            self._wake = trio.Event()
            try:
                async with self._deciding:
                    delay = await self.run_pass()
            except StoreUnavailable as exc:
                self._log.error("database unavailable: scheduling paused", error=str(exc),
                                retry_in_s=UNAVAILABLE_PAUSE)
                delay = UNAVAILABLE_PAUSE
            if self._stopping:
                break
            self.sleeping_until = trio.current_time() + delay
            self._asleep.set()
            with trio.move_on_at(self.sleeping_until):
                await self._wake.wait()
            self._asleep = trio.Event()
        self._log.info("scheduler stopped")

    async def idle(self) -> float:
        """Wait until the scheduler sleeps with nothing left to do before `sleeping_until` (a
        trio time, returned). For tests that drive a MockClock by hand, and for diagnostics."""
        while True:
            await self._asleep.wait()
            if self.sleeping_until > trio.current_time() and not self._wake.is_set():
                return self.sleeping_until
            await trio.lowlevel.checkpoint()

    async def run_pass(self) -> float:
        """One pass over every schedule; return the seconds until the next one is due."""
        rt = self._current()
        if self.boot is None:
            self.boot = self._clock()
        if rt.posture == "management-only":
            # No trigger plane opens in this posture; a reload that activates the gateway
            # wakes us.
            return rt.config.service.tick_interval
        lease = None
        if self._leadership is not None:
            lease = self._leadership.lease()
            if lease is None:
                # Another node leads: it fires, folds the breakers and keeps the schedule
                # state. Look again soon: leadership moves when the leader stops or dies.
                return min(rt.config.service.tick_interval, self._leadership.retry_in())
        parsed = enabled_schedules(rt.config)
        targets = sorted({(p.plugin, p.conf.command) for p in parsed if p.error is None})
        service = rt.config.service.name
        schedules, breakers_sql = rt.backend.schedules, rt.backend.breakers

        def snapshot(conn: Any) -> tuple[Any, ...]:
            # One read transaction for everything the decisions need: the pass's latency is
            # the fire's drift.
            return (
                schedules.fetch_entries(conn),
                {t: schedules.outstanding_jobs(conn, *t, None) for t in targets},
                {t: breakers_sql.fetch_breaker(conn, *t) for t in targets},
                [t for t in targets
                 if breakers_sql.has_new_outcomes(conn, *t, submitted_by=service)],
            )

        entries, outstanding, breakers, finished = await self._db.read(snapshot)
        state = _PassState(
            service=service,
            lease=lease,
            breakers={t: b for t, b in breakers.items() if b is not None},
            outstanding=outstanding,
        )
        for target, breaker in (await self._fold_outcomes(rt, finished)).items():
            self._breaker_changed(state.breakers.get(target), breaker)
            state.breakers[target] = breaker
        next_due: datetime | None = None
        # One instant for the whole pass: schedules first seen together share their anchor and
        # keep firing in the same pass, instead of a cascade of passes microseconds apart.
        now = self._clock()
        self._publish("scheduler.tick", at=format_time(now), schedules=len(parsed))
        for item in parsed:
            due = await self._process(rt, item, entries.get((item.plugin, item.schedule_id)),
                                      state, now)
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        await self._enqueue_all(rt, state)
        await self._save_all(rt, state)
        tick = rt.config.service.tick_interval
        if next_due is None:
            return tick
        return min(max((next_due - self._clock()).total_seconds(), 0.0), tick)

    # -- one schedule --------------------------------------------------------------------

    async def _process(self, rt: Runtime, item: Parsed, entry: sch.ScheduleEntry | None,
                       state: _PassState, now: datetime) -> datetime | None:
        """Plan one schedule at `now` and decide each due slot; return when it is next due."""
        invalid = self._invalid_reason(rt, item)
        if invalid is not None:
            if entry is None or entry.status != sch.PAUSED_INVALID or entry.reason != invalid:
                self._log.warn("schedule invalid: not scheduled", plugin=item.plugin,
                               schedule_id=item.schedule_id, reason=invalid)
            state.save(_row(item, entry, now, status=sch.PAUSED_INVALID, reason=invalid,
                            next_run_at=None, last_fired_at=_opt(entry, "last_fired_at")), entry)
            return None
        schedule = item.schedule
        assert schedule is not None and self.boot is not None
        try:
            decision = planner.plan(schedule, _memory(entry), now, boot=self.boot,
                                    seed=self._seed, grace=self._grace)
        except ScheduleError as exc:
            # A legal but unsatisfiable mix (not_on/only_between exclude every match): keep the
            # gateway running and show the schedule as invalid.
            self._log.warn("schedule has no reachable fire: not scheduled", plugin=item.plugin,
                           schedule_id=schedule.id, reason=str(exc))
            state.save(_row(item, entry, now, status=sch.PAUSED_INVALID, reason=str(exc),
                            next_run_at=None, last_fired_at=_opt(entry, "last_fired_at")), entry)
            return None
        if decision.status == sch.PAUSED_MANUAL:
            return None
        if decision.missed:
            self._log.warn("missed schedule slots dropped", plugin=item.plugin,
                           schedule_id=schedule.id, catch_up=schedule.catch_up,
                           oldest=_fmt(decision.missed_from), count_at_least=decision.missed)
        reason = decision.reason
        last_fired = _opt(entry, "last_fired_at")
        for slot in decision.fire:
            skipped = await self._gate(rt, item, schedule, state)
            last_fired = format_time(slot)
            if skipped is None:
                state.enqueue(_Fire(item, schedule, slot))
            else:
                self._record(Fired(item.plugin, schedule.id, slot, None, skipped), slot)
                reason = skipped
        state.save(_row(item, entry, now, status=decision.status, reason=reason,
                        next_run_at=_fmt(decision.next_run_at), last_fired_at=last_fired), entry)
        if decision.next_run_at is None:
            return None
        return planner.due_at(schedule, decision.next_run_at, self._seed)

    def _invalid_reason(self, rt: Runtime, item: Parsed) -> str | None:
        if item.error is not None:
            return item.error
        plugin = rt.plugins.get(item.plugin)
        if plugin is None:
            return f"plugin {item.plugin!r} is configured but not discoverable"
        if not plugin.supports(item.conf.command):
            return (f"plugin {item.plugin!r} schedule {item.schedule_id!r} references "
                    f"unsupported command {item.conf.command!r}")
        return None

    # -- deciding and firing -------------------------------------------------------------

    async def _gate(self, rt: Runtime, item: Parsed, schedule: Schedule,
                    state: _PassState) -> str | None:
        """The skip reason for this fire, or None to enqueue (cancelling overlaps first).

        Decided on the pass's snapshot of breakers and outstanding jobs, which `enqueue` keeps
        current, so several fires of one target in one pass see each other. First of all, a
        fire over a `max_outstanding_jobs` bound is skipped as `backpressure` (nothing is
        cancelled for it); the schedule fires again at its next slot.
        """
        try:
            rt.admit("scheduler", item.plugin)
        except Overloaded:
            return BACKPRESSURE
        conf = rt.config.plugin(item.plugin)
        target = (item.plugin, schedule.command)
        breaker = state.breakers.get(target)
        if breaker is not None and breaker.state == brk.OPEN:
            now = format_time(self._clock())
            breaker = await self._db.write(lambda conn: rt.backend.breakers.cool_down_if_due(
                conn, self._machine, item.plugin, schedule.command,
                reset_after=conf.circuit_breaker.reset_after, now=now))
            self._breaker_changed(state.breakers.get(target), breaker)
            state.breakers[target] = breaker
            if breaker.state == brk.OPEN:
                return "circuit_open"
        service = rt.config.service.name
        outstanding = [o for o in state.outstanding.get(target, [])
                       if schedule.command != "poll"
                       or o.submitted_by in (service, MANUAL_SUBMITTER)]
        if breaker is not None and breaker.state == brk.HALF_OPEN and any(
                o.submitted_by == service for o in outstanding):
            return "probe_running"
        if not outstanding:
            return None
        if schedule.if_running == "skip":
            return "already_running"
        if schedule.if_running == "queue":
            limit = max(1, conf.max_outstanding_polls)
            return "outstanding_limit" if len(outstanding) >= limit else None
        for job in outstanding:
            await self._cancel(rt, job)
        state.outstanding[target] = [o for o in state.outstanding.get(target, [])
                                     if o not in outstanding]
        return None

    async def _cancel(self, rt: Runtime, job: sch.Outstanding) -> None:
        reason = brk.CANCELLED_BY_SCHEDULER
        if job.status == "queued":
            try:
                await rt.queue.cancel(job.id, reason=reason)
                self._log.info("outstanding job cancelled", job_id=job.id, reason=reason)
                return
            except StoreError:
                pass  # claimed meanwhile: it is running now
        if self._cancel_running is not None and await self._cancel_running(job.id, reason):
            self._log.info("running job cancelled", job_id=job.id, reason=reason)
        else:
            self._log.warn("could not cancel outstanding job (not running in this process)",
                           job_id=job.id)

    async def _enqueue_all(self, rt: Runtime, state: _PassState) -> None:
        """Enqueue the pass's fires, schedules concurrently so the database writer commits them
        together (one transaction for the fires of one instant instead of one each), and each
        schedule's own fires in slot order (catch-up jobs run oldest first)."""
        by_schedule: dict[tuple[str, str], list[_Fire]] = {}
        for fire in state.fires:
            by_schedule.setdefault((fire.item.plugin, fire.schedule.id), []).append(fire)
        if not by_schedule:
            return
        async with trio.open_nursery() as nursery:
            for fires in by_schedule.values():
                nursery.start_soon(self._enqueue_in_order, rt, fires, state.lease)

    async def _enqueue_in_order(self, rt: Runtime, fires: list[_Fire], lease: Any) -> None:
        for fire in fires:
            await self._enqueue(rt, fire, lease)

    async def _enqueue(self, rt: Runtime, fire: _Fire, lease: Any = None) -> None:
        conf = rt.config.plugin(fire.item.plugin)
        payload = fire.item.conf.raw.get("payload") or {}
        guard = None
        if lease is not None and self._leadership is not None:
            guard = self._leadership.fire_guard(lease, f"{fire.item.plugin}/{fire.schedule.id}",
                                                format_time(fire.slot))
        try:
            job = await rt.queue.enqueue(
                fire.item.plugin, fire.schedule.command, payload, rt.config.service.name,
                max_attempts=conf.retry.max_attempts,
                dedupe_key=fire_key(fire.item.plugin, fire.schedule, fire.slot),
                guard=guard,
            )
        except DedupeDropped as exc:
            self._record(Fired(fire.item.plugin, fire.schedule.id, fire.slot,
                               exc.existing_job_id, "already_fired"), fire.slot)
            return
        except LeadershipLost:
            self._record(Fired(fire.item.plugin, fire.schedule.id, fire.slot, None,
                               "not_leader"), fire.slot)
            return
        except StoreUnavailable:
            raise
        except StoreError as exc:
            # One schedule whose job the store refuses (a payload JSON cannot carry) skips
            # this fire; the other schedules, and the scheduler, go on.
            self._record(Fired(fire.item.plugin, fire.schedule.id, fire.slot, None,
                               f"enqueue refused: {exc}"), fire.slot)
            return
        self._record(Fired(fire.item.plugin, fire.schedule.id, fire.slot, job.id), fire.slot)

    async def _save_all(self, rt: Runtime, state: _PassState) -> None:
        rows = list(state.rows)
        save = rt.backend.schedules.save_entry
        if not rows:
            return
        check = (self._leadership.write_guard(state.lease)
                 if state.lease is not None and self._leadership is not None else None)

        def write(conn: Any) -> None:
            if check is not None:
                check(conn)
            for row in rows:
                save(conn, row)

        try:
            await self._db.write(write)
        except LeadershipLost as exc:
            self._log.warn("schedule state not written: leadership moved", reason=str(exc))

    def _record(self, fired: Fired, slot: datetime) -> Fired:
        fields = {"plugin": fired.plugin, "schedule_id": fired.schedule_id,
                  "slot": format_time(slot)}
        if fired.manual:
            fields["trigger"] = "manual"
        self._publish("scheduler.scheduled" if fired.skipped is None else "scheduler.skipped",
                      job_id=fired.job_id, reason=fired.skipped,
                      submitted_by=MANUAL_SUBMITTER if fired.manual else None, **fields)
        if fired.skipped is None:
            self._log.info("scheduled job enqueued", job_id=fired.job_id, **fields)
        else:
            self._log.info("scheduled fire skipped", reason=fired.skipped,
                           job_id=fired.job_id, **fields)
        self.fired.append(fired)
        del self.fired[:-1000]
        return fired

    # -- an operator's manual fire -------------------------------------------------------

    async def fire_now(self, plugin: str, schedule_id: str) -> ManualFire:
        """Enqueue one run of the schedule `plugin/schedule_id` now, on an operator's request.

        The job has the schedule's command and payload and the plugin's retry policy; it is
        submitted by `scheduler:manual` with the dedupe key `plugin:command:id:manual:<now>`,
        so the ledger ties it to its schedule. `if_running` applies as for a regular fire (for
        `poll`, against the scheduler's own jobs, regular and manual). schedule_entries is not
        written, so the next regular fire stays where it was. Raises UnknownSchedule (naming the
        known schedules), SchedulerError when this generation does not schedule at all, and
        Overloaded when the plugin or the gateway is at its `max_outstanding_jobs`.
        """
        rt = self._current()
        if rt.posture == "management-only":
            raise SchedulerError("the scheduler is idle in the management-only posture; "
                                 "activate the gateway first (docs/operator.md, Postures)")
        parsed = enabled_schedules(rt.config)
        item = next((p for p in parsed
                     if p.plugin == plugin and p.schedule_id == schedule_id), None)
        if item is None:
            raise UnknownSchedule(f"{plugin}/{schedule_id}",
                                  [f"{p.plugin}/{p.schedule_id}" for p in parsed])
        command = item.conf.command
        if_running = item.schedule.if_running if item.schedule is not None else "skip"
        base = ManualFire(plugin, schedule_id, command, if_running)
        invalid = self._invalid_reason(rt, item)
        if invalid is not None or item.schedule is None:
            return replace(base, skipped="invalid", detail=invalid or "schedule not parsed")
        # An operator's fire is new work from outside: over a bound it is refused with
        # Overloaded (the API answers 429 with Retry-After), never skipped silently.
        rt.admit("api", plugin)
        async with self._deciding:
            outstanding = await self._db.read(
                lambda conn: rt.backend.schedules.outstanding_jobs(conn, plugin, command, None))
            service = rt.config.service.name
            mine = [o for o in outstanding
                    if command != "poll" or o.submitted_by in (service, MANUAL_SUBMITTER)]
            held = tuple(o.id for o in mine)
            if mine and if_running == "skip":
                return replace(base, skipped="already_running", outstanding=held,
                               detail=f"if_running: skip, and {len(mine)} job(s) of "
                                      f"{plugin}/{command} are queued or running")
            limit = max(1, rt.config.plugin(plugin).max_outstanding_polls)
            if if_running == "queue" and len(mine) >= limit:
                return replace(base, skipped="outstanding_limit", outstanding=held,
                               detail=f"if_running: queue, and {len(mine)} job(s) of "
                                      f"{plugin}/{command} are queued or running "
                                      f"(max_outstanding_polls: {limit})")
            cancelled: tuple[str, ...] = ()
            if mine and if_running == "cancel":
                for job in mine:
                    await self._cancel(rt, job)
                cancelled = held
            now = self._clock()
            stamp = format_time(now)
            job = await rt.queue.enqueue(
                plugin, command, item.conf.raw.get("payload") or {}, MANUAL_SUBMITTER,
                max_attempts=rt.config.plugin(plugin).retry.max_attempts,
                dedupe_key=f"{plugin}:{command}:{schedule_id}:manual:{stamp}")
        self._record(Fired(plugin, schedule_id, now, job.id, manual=True), now)
        return replace(base, job_id=job.id, cancelled=cancelled)

    # -- breakers ------------------------------------------------------------------------

    def _breaker_changed(self, before: brk.Breaker | None, after: brk.Breaker) -> None:
        previous = before.state if before is not None else brk.CLOSED
        if previous != after.state:
            self._publish("scheduler.circuit_state_changed", plugin=after.plugin,
                          command=after.command, previous_state=previous, state=after.state,
                          failure_count=after.failure_count)

    async def _fold_outcomes(self, rt: Runtime,
                             targets: list[tuple[str, str]]) -> dict[tuple[str, str], brk.Breaker]:
        if not targets:
            return {}
        service = rt.config.service.name
        now = format_time(self._clock())
        fold_outcomes = rt.backend.breakers.fold_outcomes

        def fold(conn: Any) -> list[brk.Breaker]:
            return [
                fold_outcomes(conn, self._machine, plugin, command,
                                  threshold=rt.config.plugin(plugin).circuit_breaker.threshold,
                                  submitted_by=service, now=now)
                for plugin, command in targets
            ]

        folded = await self._db.write(fold)
        for breaker in folded:
            if breaker.state != brk.CLOSED and breaker.updated_at == now:
                self._log.warn("circuit breaker state", plugin=breaker.plugin,
                               command=breaker.command, state=breaker.state,
                               failure_count=breaker.failure_count)
        return {(b.plugin, b.command): b for b in folded}


@dataclass(frozen=True)
class _Fire:
    """A slot cleared to be enqueued in this pass."""

    item: Parsed
    schedule: Schedule
    slot: datetime


@dataclass
class _PassState:
    """What one pass knows and decides: breakers and outstanding jobs per (plugin, command),
    the fires to enqueue and the schedule_entries rows to write."""

    service: str
    breakers: dict[tuple[str, str], brk.Breaker]
    outstanding: dict[tuple[str, str], list[sch.Outstanding]]
    lease: Any = None  # the scheduler lease this pass acts under (PostgreSQL), else None
    fires: list[_Fire] = field(default_factory=list)
    rows: list[sch.ScheduleEntry] = field(default_factory=list)

    def enqueue(self, fire: _Fire) -> None:
        self.fires.append(fire)
        target = (fire.item.plugin, fire.schedule.command)
        placeholder = sch.Outstanding(id="", status="queued", plugin=fire.item.plugin,
                                      dedupe_key=None, submitted_by=self.service, attempt=1,
                                      created_at="", started_at=None)
        self.outstanding.setdefault(target, []).append(placeholder)

    def save(self, row: sch.ScheduleEntry, entry: sch.ScheduleEntry | None) -> None:
        if entry is None or not _same(entry, row):
            self.rows.append(row)


def _row(item: Parsed, entry: sch.ScheduleEntry | None, now: datetime, *, status: str,
         reason: str | None, next_run_at: str | None,
         last_fired_at: str | None) -> sch.ScheduleEntry:
    return sch.ScheduleEntry(
        plugin=item.plugin,
        schedule_id=item.schedule_id,
        command=item.conf.command,
        status=status,
        reason=reason,
        last_fired_at=last_fired_at,
        last_success_job_id=_opt(entry, "last_success_job_id"),
        last_success_at=_opt(entry, "last_success_at"),
        next_run_at=next_run_at,
        updated_at=format_time(now),
    )


def _memory(entry: sch.ScheduleEntry | None) -> planner.Memory | None:
    if entry is None:
        return None
    return planner.Memory(
        status=entry.status,
        reason=entry.reason,
        command=entry.command,
        last_fired_at=parse_time(entry.last_fired_at) if entry.last_fired_at else None,
        next_run_at=parse_time(entry.next_run_at) if entry.next_run_at else None,
    )


def _opt(entry: sch.ScheduleEntry | None, name: str) -> Any:
    return getattr(entry, name) if entry is not None else None


def _fmt(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _same(a: sch.ScheduleEntry, b: sch.ScheduleEntry) -> bool:
    """Equal but for updated_at: no write needed."""
    return all(getattr(a, n) == getattr(b, n) for n in a.columns() if n != "updated_at")

