"""The scheduler's decisions (schedule/plan.py): which slots fire, across DST, outages and restarts.

`simulate` plays the scheduler with a perfect clock: it jumps to each due time, asks `plan`,
remembers what the scheduler would persist, and collects the fired slots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ductile.schedule import parse_schedule
from ductile.schedule.expr import Schedule, fire_key
from ductile.schedule.plan import MAX_CATCH_UP, Memory, Plan, due_at, plan
from ductile.store.schedules import EXHAUSTED, PAUSED_MANUAL, RESUMED_REASON


def sched(**entry: Any) -> Schedule:
    return parse_schedule(entry, plugin="p", index=0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def remember(decision: Plan, previous: Memory, command: str = "poll") -> Memory:
    last = decision.fire[-1] if decision.fire else previous.last_fired_at
    return Memory(status=decision.status, reason=decision.reason, command=command,
                  last_fired_at=last, next_run_at=decision.next_run_at)


def simulate(schedule: Schedule, start: datetime, end: datetime, *,
             memory: Memory | None = None, boot: datetime | None = None,
             seed: bytes = b"") -> tuple[list[datetime], Memory]:
    """Every slot fired between start and end when the scheduler wakes exactly when due."""
    now, fired = start, []
    memory = memory or Memory()
    boot = boot or start
    while now <= end:
        decision = plan(schedule, memory, now, boot=boot, seed=seed)
        fired.extend(decision.fire)
        memory = remember(decision, memory)
        if decision.next_run_at is None:
            break
        now = max(now, due_at(schedule, decision.next_run_at, seed))
    return fired, memory


# -- DST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "expr", "start", "expected"), [
    # London autumn fall-back (25 Oct 2026): 01:30 happens twice; it fires once, at the first.
    ("Europe/London", "30 1 * * *", utc(2026, 10, 24),
     [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    # London spring gap (29 Mar 2026): 01:30 does not exist; it fires once at 02:00 BST.
    ("Europe/London", "30 1 * * *", utc(2026, 3, 28),
     [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
    # New York spring gap (8 Mar 2026): 02:30 does not exist; it fires at 03:00 EDT.
    ("America/New_York", "30 2 * * *", utc(2026, 3, 7),
     [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
    # New York fall-back (1 Nov 2026): 01:30 EDT fires, 01:30 EST does not.
    ("America/New_York", "30 1 * * *", utc(2026, 10, 31),
     [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
])
def test_daily_cron_fires_once_per_local_day_across_dst(
    zone: str, expr: str, start: datetime, expected: list[datetime]
) -> None:
    fired, _ = simulate(sched(cron=expr, timezone=zone), start, start + timedelta(days=3))
    assert fired == expected
    keys = [fire_key("p", sched(cron=expr, timezone=zone), s) for s in fired]
    assert len(set(keys)) == len(keys)


def test_hourly_cron_skips_the_repeated_fall_back_hour_but_every_does_not() -> None:
    start, end = utc(2026, 10, 24, 22), utc(2026, 10, 25, 3)
    cron, _ = simulate(sched(cron="0 * * * *", timezone="Europe/London"), start, end)
    # 01:00 BST (00:00Z) fires; 01:00 GMT (01:00Z) is the same wall time again and does not.
    assert cron == [utc(2026, 10, 24, 22), utc(2026, 10, 24, 23), utc(2026, 10, 25, 0),
                    utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]
    every, _ = simulate(sched(every="1h", timezone="Europe/London"), start, end)
    assert every == [start + timedelta(hours=h) for h in range(6)]


# -- catch-up after an outage ----------------------------------------------------------------

HOUR = timedelta(hours=1)
T0 = utc(2026, 5, 4, 10)


def after_outage(catch_up: str) -> Plan:
    """Last fired at 10:00, next due 11:00; the gateway was down until 13:30."""
    memory = Memory(command="poll", last_fired_at=T0, next_run_at=T0 + HOUR)
    return plan(sched(every="1h", catch_up=catch_up), memory, T0 + 3.5 * HOUR, boot=T0)


def test_catch_up_skip_drops_the_missed_runs_and_waits_for_the_next_slot() -> None:
    decision = after_outage("skip")
    assert decision.fire == ()
    assert decision.next_run_at == T0 + 4 * HOUR
    assert decision.missed_from == T0 + HOUR and decision.missed >= 2


def test_catch_up_run_once_fires_the_newest_missed_slot_once() -> None:
    decision = after_outage("run_once")
    assert decision.fire == (T0 + 3 * HOUR,)
    assert decision.next_run_at == T0 + 4 * HOUR


def test_catch_up_run_all_fires_every_missed_slot_in_order() -> None:
    decision = after_outage("run_all")
    assert decision.fire == (T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR)
    assert decision.next_run_at == T0 + 4 * HOUR


def test_catch_up_run_all_is_capped() -> None:
    memory = Memory(command="poll", last_fired_at=T0, next_run_at=T0 + timedelta(minutes=1))
    decision = plan(sched(every="1m", catch_up="run_all"), memory, T0 + 10 * HOUR, boot=T0)
    # The newest slot is on time; at most MAX_CATCH_UP missed ones come with it.
    assert len(decision.fire) == MAX_CATCH_UP + 1
    assert decision.fire[-1] == T0 + 10 * HOUR
    assert decision.missed_from == T0 + timedelta(minutes=1)
    assert decision.next_run_at == T0 + 10 * HOUR + timedelta(minutes=1)


def test_a_slot_a_few_seconds_late_is_on_time_not_missed() -> None:
    memory = Memory(command="poll", last_fired_at=T0, next_run_at=T0 + HOUR)
    decision = plan(sched(every="1h"), memory, T0 + HOUR + timedelta(seconds=5), boot=T0)
    assert decision.fire == (T0 + HOUR,) and decision.missed == 0


def test_resume_drops_runs_missed_while_paused_even_with_run_all() -> None:
    memory = Memory(reason=RESUMED_REASON, command="poll", last_fired_at=T0,
                    next_run_at=T0 + HOUR)
    decision = plan(sched(every="1h", catch_up="run_all"), memory, T0 + 3.5 * HOUR, boot=T0)
    assert decision.fire == () and decision.next_run_at == T0 + 4 * HOUR


def test_paused_schedule_fires_nothing_and_keeps_its_next_slot() -> None:
    memory = Memory(status=PAUSED_MANUAL, command="poll", next_run_at=T0)
    decision = plan(sched(every="1h"), memory, T0 + 5 * HOUR, boot=T0)
    assert (decision.fire, decision.status, decision.next_run_at) == ((), PAUSED_MANUAL, T0)


# -- every: anchoring and restarts -----------------------------------------------------------


def test_new_every_schedule_fires_at_once_then_every_interval() -> None:
    fired, memory = simulate(sched(every="15m"), T0, T0 + HOUR)
    assert fired == [T0 + timedelta(minutes=15 * k) for k in range(5)]
    assert memory.next_run_at == T0 + timedelta(minutes=75)


def test_restart_keeps_the_cadence_and_does_not_fire_again() -> None:
    fired, memory = simulate(sched(every="1h"), T0, T0 + 90 * timedelta(minutes=1))
    assert fired == [T0, T0 + HOUR]
    # A new process 10 minutes later (new boot) picks up the persisted next slot.
    later = T0 + timedelta(minutes=100)
    decision = plan(sched(every="1h"), memory, later, boot=later)
    assert decision.fire == () and decision.next_run_at == T0 + 2 * HOUR


def test_stale_next_slot_from_an_old_config_is_discarded() -> None:
    # Persisted under "every: 1d"; the config now says 1h: do not wait a day.
    memory = Memory(command="poll", last_fired_at=T0, next_run_at=T0 + timedelta(days=1))
    decision = plan(sched(every="1h"), memory, T0 + timedelta(minutes=5), boot=T0)
    assert decision.next_run_at == T0 + HOUR
    # A cron expression that changed: 09:00 is no match of "0 10 * * *".
    memory = Memory(command="poll", next_run_at=utc(2026, 5, 5, 9))
    decision = plan(sched(cron="0 10 * * *"), memory, T0 + timedelta(minutes=5), boot=T0)
    assert decision.next_run_at == utc(2026, 5, 5, 10)


def test_a_changed_command_starts_afresh() -> None:
    memory = Memory(command="health", last_fired_at=T0, next_run_at=T0 + HOUR)
    decision = plan(sched(every="1h"), memory, T0 + timedelta(minutes=5), boot=T0)
    assert decision.next_run_at == T0 + HOUR


# -- jitter ------------------------------------------------------------------------------------


def test_jitter_delays_each_fire_within_bounds_and_deterministically() -> None:
    schedule = sched(every="10m", jitter="2m")
    slots, _ = simulate(schedule, T0, T0 + 24 * HOUR, seed=b"seed")
    assert slots == [T0 + timedelta(minutes=10 * k) for k in range(len(slots))]
    offsets = [(due_at(schedule, s, b"seed") - s).total_seconds() for s in slots]
    assert all(0 <= o < 120 for o in offsets)
    assert len(set(offsets)) > 100  # really spread, not a constant
    assert offsets == [(due_at(schedule, s, b"seed") - s).total_seconds() for s in slots]
    # Before its jittered time a slot is not due yet.
    first_late = next(s for s, o in zip(slots, offsets, strict=True) if o > 1)
    memory = Memory(command="poll", next_run_at=first_late)
    assert plan(schedule, memory, first_late, boot=T0, seed=b"seed").fire == ()


def test_jitter_is_capped_at_the_interval() -> None:
    schedule = sched(every="1m", jitter="1h")
    assert all(due_at(schedule, T0 + timedelta(minutes=k)) - (T0 + timedelta(minutes=k))
               <= timedelta(minutes=1) for k in range(200))


# -- one-shots ---------------------------------------------------------------------------------


def test_at_fires_once_even_when_it_passed_during_an_outage_then_stays_exhausted() -> None:
    schedule = sched(at="2026-05-04T09:00:00Z")
    decision = plan(schedule, None, T0, boot=T0)
    assert decision.fire == (utc(2026, 5, 4, 9),) and decision.status == EXHAUSTED
    again = plan(schedule, remember(decision, Memory()), T0 + HOUR, boot=T0 + HOUR)
    assert again.fire == () and again.status == EXHAUSTED


def test_a_changed_at_re_arms() -> None:
    done = Memory(status=EXHAUSTED, command="poll", last_fired_at=utc(2026, 5, 4, 9))
    decision = plan(sched(at="2026-05-04T12:00:00Z"), done, T0, boot=T0)
    assert decision.fire == () and decision.next_run_at == utc(2026, 5, 4, 12)


def test_after_fires_once_per_boot() -> None:
    schedule = sched(after="30s")
    fired, memory = simulate(schedule, T0, T0 + HOUR)
    assert fired == [T0 + timedelta(seconds=30)] and memory.status == EXHAUSTED
    # Same process (a reload): still exhausted.
    assert plan(schedule, memory, T0 + 2 * HOUR, boot=T0).fire == ()
    # A new boot re-arms it.
    boot = T0 + 5 * HOUR
    decision = plan(schedule, memory, boot, boot=boot)
    assert decision.fire == () and decision.next_run_at == boot + timedelta(seconds=30)


def test_one_shot_outside_its_window_is_exhausted_without_firing() -> None:
    decision = plan(sched(at="2026-05-04T09:00:00Z", only_between="10:00-11:00"), None, T0,
                    boot=T0)
    assert decision.fire == () and decision.status == EXHAUSTED


def test_constraints_move_fires_into_the_allowed_window() -> None:
    schedule = sched(every="1h", only_between="09:00-11:00", not_on=["sun"])
    fired, _ = simulate(schedule, utc(2026, 5, 2), utc(2026, 5, 5))  # Sat..Mon night
    assert [f.isoformat() for f in fired] == [
        "2026-05-02T09:00:00+00:00", "2026-05-02T10:00:00+00:00",
        "2026-05-04T09:00:00+00:00", "2026-05-04T10:00:00+00:00",
    ]
