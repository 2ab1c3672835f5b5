"""Which scheduled instants to fire now, and when to look again (pure; no I/O, no clock).

The scheduler calls `plan` for each schedule at every wake, with what it persisted last time
(`Memory`) and the wall-clock `now`. Everything a reader needs to predict the scheduler lives
here:

* A *slot* is a scheduled instant of the schedule (expr.next_fire). It is *due* once
  `now >= slot + jitter(slot)`; jitter is deterministic per slot (expr.jitter_offset), capped at
  the interval for `every`, so restarts agree on it.
* Only the newest due slot can be *on time*, and only if it is at most `grace` late (default
  60 s). Older due slots, and a newest one that is later than that, were *missed*: the gateway
  was down, or the process was stalled.
* `catch_up` decides what happens to missed slots (`every` only; cron is always `skip`):
  `skip` drops them, `run_once` fires the newest missed one when nothing is on time, `run_all`
  fires every missed one, at most MAX_CATCH_UP. After an operator's resume, missed slots are
  always dropped: a pause means "do not run", not "run later".
* `every` slots form the grid `anchor + k * interval`. The anchor is the persisted next slot, so
  a restart keeps the cadence; a schedule seen for the first time (at boot or on a reload) is
  anchored at that moment and fires at once, then every interval.
* A persisted next slot that the current config could not have produced (the expression, the
  timezone, not_on/only_between or the command changed, or an `every` interval shrank) is
  discarded and the schedule starts afresh, instead of waiting for a stale instant.
* `at` fires once at its instant, also when that instant passed while the gateway was down, and
  stays exhausted (a changed `at` re-arms it). `after` fires once per process start, `after`
  from the scheduler's start (boot): a boot notification fires on every boot, and a reload does
  not re-arm it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ductile.schedule.expr import Schedule, ScheduleError, jitter_offset, next_fire
from ductile.store.schedules import ACTIVE, EXHAUSTED, PAUSED_MANUAL, RESUMED_REASON

LATE_GRACE = 60.0
MAX_CATCH_UP = 100
ONE_SHOT_DONE = "one_shot_exhausted"
ONE_SHOT_BLOCKED = "one_shot_outside_not_on_or_only_between"
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Memory:
    """What the scheduler persisted about one schedule (schedule_entries)."""

    status: str = ACTIVE
    reason: str | None = None
    command: str | None = None
    last_fired_at: datetime | None = None
    next_run_at: datetime | None = None


@dataclass(frozen=True)
class Plan:
    """The decision for one schedule at one instant."""

    fire: tuple[datetime, ...] = ()  # scheduled instants to enqueue now, oldest first
    next_run_at: datetime | None = None  # the next slot (before jitter); None: none left
    status: str = ACTIVE
    reason: str | None = None
    missed_from: datetime | None = None  # the oldest slot dropped by this decision, if any
    missed: int = 0  # how many slots were dropped (at least; slots long past are not counted)


def due_at(schedule: Schedule, slot: datetime, seed: bytes = b"") -> datetime:
    """When `slot` fires: the slot plus its jitter (capped at the `every` interval)."""
    offset = jitter_offset(schedule, slot, seed)
    if schedule.every is not None:
        offset = min(offset, schedule.every)
    return slot + timedelta(seconds=offset)


def plan(
    schedule: Schedule,
    memory: Memory | None,
    now: datetime,
    *,
    boot: datetime,
    seed: bytes = b"",
    grace: float = LATE_GRACE,
) -> Plan:
    """Decide what to fire at `now` (see the module docstring for the rules)."""
    memory = memory or Memory()
    if memory.status == PAUSED_MANUAL:
        return Plan(next_run_at=memory.next_run_at, status=PAUSED_MANUAL, reason=memory.reason)
    if schedule.kind in ("at", "after"):
        return _one_shot(schedule, memory, now, boot, seed)
    first = _first_slot(schedule, memory, now)
    resumed = memory.reason == RESUMED_REASON
    policy = "skip" if resumed else schedule.catch_up
    return _recurring(schedule, first, now, policy, seed, grace)


def _one_shot(schedule: Schedule, memory: Memory, now: datetime, boot: datetime,
              seed: bytes) -> Plan:
    instant = schedule.at if schedule.at is not None else (
        boot + timedelta(seconds=schedule.after_seconds or 0.0))
    if memory.last_fired_at is not None and memory.last_fired_at == instant:
        return Plan(status=EXHAUSTED, reason=ONE_SHOT_DONE)
    if next_fire(schedule, instant - _TICK, boot=boot) != instant:
        return Plan(status=EXHAUSTED, reason=ONE_SHOT_BLOCKED)
    if due_at(schedule, instant, seed) <= now:
        return Plan(fire=(instant,), status=EXHAUSTED, reason=ONE_SHOT_DONE)
    return Plan(next_run_at=instant)


def _first_slot(schedule: Schedule, memory: Memory, now: datetime) -> datetime:
    """The oldest slot not yet fired: the persisted one when still valid, else a fresh start."""
    stored = memory.next_run_at
    if stored is not None and memory.command == schedule.command and _valid(schedule, stored, now):
        return stored
    if schedule.every is not None:
        anchor = now
        if memory.last_fired_at is not None:
            resume_at = memory.last_fired_at + timedelta(seconds=schedule.every)
            anchor = max(anchor, resume_at)
        return _slot_at_or_after(schedule, anchor)
    return _slot_at_or_after(schedule, now)


def _valid(schedule: Schedule, slot: datetime, now: datetime) -> bool:
    """Could the current config have produced `slot`?"""
    try:
        if next_fire(schedule, slot - _TICK, boot=slot) != slot:
            return False
    except ScheduleError:
        return False
    return schedule.every is None or slot <= now + timedelta(seconds=schedule.every)


def _slot_at_or_after(schedule: Schedule, moment: datetime) -> datetime:
    slot = next_fire(schedule, moment - _TICK, boot=moment)
    assert slot is not None  # recurring schedules always have a next slot (or raise)
    return slot


def _recurring(schedule: Schedule, first: datetime, now: datetime, policy: str, seed: bytes,
               grace: float) -> Plan:
    jitter = min(schedule.jitter, schedule.every) if schedule.every else schedule.jitter
    period = schedule.every or 60.0
    slots_back = {"skip": 1, "run_once": 2, "run_all": MAX_CATCH_UP + 2}[policy]
    lookback = timedelta(seconds=grace + jitter + period * slots_back)
    cursor = max(first - _TICK, now - lookback)
    skipped_before = first if first <= cursor else None  # slots too old to enumerate
    due: list[datetime] = []
    while True:
        slot = next_fire(schedule, cursor, boot=first)
        assert slot is not None
        if due_at(schedule, slot, seed) > now:
            break
        due.append(slot)
        cursor = slot
    if not due:
        return Plan(next_run_at=slot, missed_from=skipped_before, missed=int(bool(skipped_before)))
    newest = due[-1]
    on_time = (now - due_at(schedule, newest, seed)).total_seconds() <= grace
    missed = due[:-1] if on_time else due
    fire: list[datetime] = [newest] if on_time else []
    if policy == "run_once" and not on_time:
        fire = [newest]
    elif policy == "run_all":
        fire = due[-(MAX_CATCH_UP + (1 if on_time else 0)):]
    dropped = [s for s in missed if s not in fire]
    oldest_dropped = skipped_before or (dropped[0] if dropped else None)
    return Plan(
        fire=tuple(fire),
        next_run_at=slot,
        missed_from=oldest_dropped,
        missed=len(dropped) + (1 if skipped_before else 0),
    )
