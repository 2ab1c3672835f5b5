"""Fuzz schedule parsing and the next-fire sequence: bad input is a ScheduleError, fires advance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.config.durations import parse_duration
from ductile.schedule import Schedule, ScheduleError, fire_key, next_fire, parse_schedule
from ductile.schedule.plan import MAX_CATCH_UP, Memory, due_at, plan

FIELDS = ("every", "cron", "at", "after", "id", "command", "timezone", "jitter", "only_between",
          "not_on", "catch_up", "if_running", "payload")
ZONES = ("UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True),
    st.text(max_size=25),
    st.sampled_from(["5m", "0s", "-1s", "daily", "1.5d", "* * * * *", "0 0 * * * *", "*/0 * * * *",
                     "2026-01-01T00:00:00Z", "22:00-06:00", "24:00-01:00", "Europe/London",
                     "Nowhere/Else", "../../etc/passwd", "handle", "run_all", "queue", "L",
                     "@hourly",
                     "mon-sun", "7-0", "1-5/2", "jan", "sun#2"]),
)
value = st.one_of(scalar, st.lists(scalar, max_size=4), st.dictionaries(st.text(max_size=5),
                                                                         scalar, max_size=3))
entry = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), value, max_size=6)
cron_text = st.lists(
    st.text(alphabet="0123456789*/-,abcdefghijklmnopqrstuvwxyz?#LW@ ", max_size=8),
    min_size=1, max_size=7).map(" ".join)


@settings(max_examples=400)
@given(st.one_of(entry, st.text(max_size=20), st.lists(scalar, max_size=3), scalar))
def test_parse_schedule_raises_only_schedule_error(raw: Any) -> None:
    try:
        parsed = parse_schedule(raw, plugin="fuzz", index=0)
    except ScheduleError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, Schedule)


@settings(max_examples=300)
@given(cron_text, st.sampled_from(["every", "cron", "at", "after", "only_between", "timezone"]))
def test_text_fields_raise_only_schedule_error(text: str, field: str) -> None:
    base: dict[str, Any] = {} if field in ("every", "cron", "at", "after") else {"every": "1h"}
    try:
        parse_schedule({**base, field: text}, plugin="fuzz", index=3)
    except ScheduleError as exc:
        assert "schedules[3]" in str(exc)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    single = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.tuples(st.sampled_from(["*", f"{low}"]), st.integers(1, high - low + 1)).map(
        lambda bs: f"{bs[0]}/{bs[1]}")
    return st.one_of(st.just("*"), single, span, step)


# Day-of-month stays <= 28 so every generated expression has a match every month.
valid_cron = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12),
                       _field(0, 7)).map(" ".join)
valid_every = st.sampled_from(["1s", "90s", "5m", "17m", "1h", "1h30m", "daily", "weekly", "1.5d"])
window = st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23),
                   st.integers(0, 59)).filter(lambda t: t[:2] != t[2:]).map(
    lambda t: f"{t[0]:02d}:{t[1]:02d}-{t[2]:02d}:{t[3]:02d}")
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    raw: dict[str, Any] = {"timezone": draw(st.sampled_from(ZONES)), "id": "s"}
    if draw(st.booleans()):
        raw["every"] = draw(valid_every)
    else:
        raw["cron"] = draw(valid_cron)
    if draw(st.integers(0, 3)) == 0:
        raw["only_between"] = draw(window)
    if draw(st.integers(0, 3)) == 0:
        raw["not_on"] = draw(st.lists(st.sampled_from(["mon", "tue", "sat", "sun", 0, 3]),
                                      max_size=3))
    return parse_schedule(raw, plugin="p", index=0)


@settings(max_examples=60)
@given(schedules(), instants, st.integers(-10_000_000, 10_000_000))
def test_fires_strictly_increase_and_keys_never_repeat(
    schedule: Schedule, start: datetime, boot_shift: int,
) -> None:
    boot = start + timedelta(seconds=boot_shift)
    cursor = start
    keys: set[str] = set()
    for _ in range(50):
        try:
            nxt = next_fire(schedule, cursor, boot=boot)
        except ScheduleError as exc:
            # A legal but unsatisfiable mix (e.g. `* 0 * * *` with only_between 01:00-00:00).
            assert "no fire allowed by not_on/only_between" in str(exc)
            assert schedule.not_on or schedule.only_between is not None
            return
        assert nxt is not None and nxt.tzinfo is not None
        assert nxt > cursor
        key = fire_key("p", schedule, nxt)
        assert key not in keys
        keys.add(key)
        cursor = nxt


# -- the scheduler's decisions (schedule/plan.py) ----------------------------------------------


@st.composite
def planned(draw: st.DrawFn) -> Schedule:
    """A recurring schedule with the options that change what `plan` fires."""
    base = draw(schedules())
    options: dict[str, Any] = {"jitter": draw(st.sampled_from([None, "0s", "10s", "5m", "2h"]))}
    if base.every is not None:
        options["catch_up"] = draw(st.sampled_from(["skip", "run_once", "run_all"]))
    return replace(base, jitter=parse_duration(options["jitter"]) if options["jitter"] else 0.0,
                   catch_up=options.get("catch_up", "skip"))


@settings(max_examples=60)
@given(planned(), instants, st.lists(st.tuples(st.integers(0, 3 * 86_400), st.booleans()),
                                     min_size=1, max_size=25))
def test_plan_fires_each_slot_at_most_once_and_in_order(
    schedule: Schedule, start: datetime, wakes: list[tuple[int, bool]],
) -> None:
    """Irregular wakes, outages and restarts (a new boot): the fired slots strictly increase, so
    no (id, instant) is ever enqueued twice, and nothing fires before its jittered due time."""
    memory: Memory | None = None
    now, boot = start, start
    fired: list[datetime] = []
    for gap, restart in wakes:
        now += timedelta(seconds=gap)
        if restart:
            boot = now
        try:
            decision = plan(schedule, memory, now, boot=boot, seed=b"fuzz")
        except ScheduleError as exc:
            assert "no fire allowed by not_on/only_between" in str(exc)
            return
        for slot in decision.fire:
            assert due_at(schedule, slot, b"fuzz") <= now
        fired.extend(decision.fire)
        assert len(decision.fire) <= MAX_CATCH_UP + 1
        if decision.next_run_at is not None:
            assert due_at(schedule, decision.next_run_at, b"fuzz") > now
            assert not fired or decision.next_run_at > fired[-1]
        memory = Memory(status=decision.status, reason=decision.reason, command=schedule.command,
                        last_fired_at=fired[-1] if fired else None,
                        next_run_at=decision.next_run_at)
    assert fired == sorted(set(fired))
    keys = [fire_key("p", schedule, slot) for slot in fired]
    assert len(keys) == len(set(keys))
