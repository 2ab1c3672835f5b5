"""Schedule parsing and next-fire rules, including DST days in London and New York."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ductile.schedule import (
    Schedule,
    ScheduleError,
    fire_key,
    jitter_offset,
    next_fire,
    parse_schedule,
)

BOOT = datetime(2026, 1, 5, 9, 0, 7, tzinfo=UTC)  # a Monday
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def parse(entry: dict[str, Any]) -> Schedule:
    return parse_schedule(entry, plugin="echo", index=2)


def fires(schedule: Schedule, start: datetime, count: int, boot: datetime = BOOT) -> list[datetime]:
    out: list[datetime] = []
    cursor = start
    for _ in range(count):
        nxt = next_fire(schedule, cursor, boot=boot)
        assert nxt is not None
        out.append(nxt)
        cursor = nxt
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("entry", "message"), [
    ({}, 'plugin "echo": schedules[2] requires one of every, cron, at, or after'),
    ({"every": "5m", "cron": "* * * * *"},
     'plugin "echo": schedules[2] must set exactly one of every, cron, at, or after'),
    ({"at": "2026-01-01T00:00:00Z", "after": "5s"},
     'plugin "echo": schedules[2] must set exactly one of every, cron, at, or after'),
    ({"every": "5m", "command": "handle"},
     'plugin "echo": schedules[2].command "handle" cannot be scheduled'),
    ({"at": "tomorrow"},
     'plugin "echo": invalid schedules[2].at "tomorrow": expected RFC3339 timestamp'),
    ({"at": "2026-13-01T00:00:00Z"},
     'plugin "echo": invalid schedules[2].at "2026-13-01T00:00:00Z": expected RFC3339 timestamp'),
    ({"at": "2026-01-01T00:00:00"},
     'plugin "echo": invalid schedules[2].at "2026-01-01T00:00:00": expected RFC3339 timestamp'),
    ({"cron": "0 0 * * * *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron expression "0 0 * * * *": '
     "expected 5 fields; a seconds or year field is not supported"),
    ({"cron": "0 0 *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron expression "0 0 *": '
     "expected 5 fields"),
    ({"cron": "60 * * * *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron minute field "60": '
     "value 60 out of range 0-59"),
    ({"cron": "*/0 * * * *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron minute field "*/0": '
     "step must be greater than 0"),
    ({"cron": "0 5-2 * * *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron hour field "5-2": '
     'descending range "5-2"'),
    ({"cron": "0 0 L * *"},
     'plugin "echo": invalid schedules[2].cron: invalid cron day-of-month field "l": '
     'unknown value "l"'),
    ({"cron": "0 0 * * mon#2"},
     'plugin "echo": invalid schedules[2].cron: invalid cron day-of-week field "mon#2": '
     'bad item "mon#2"; expected *, a, a-b, */n, a/n or a-b/n with values 0-7'),
    ({"every": "soon"},
     'plugin "echo": invalid schedules[2].every "soon": invalid duration \'soon\': expected '
     "numbers with units (ns, us, ms, s, m, h, d, w), such as 30s, 1h30m or 7d; expected a "
     "positive duration such as 5m or 1h30m, or hourly, daily, weekly, monthly"),
    ({"every": "0s"},
     'plugin "echo": invalid schedules[2].every "0s": interval must be positive; expected a '
     "positive duration such as 5m or 1h30m, or hourly, daily, weekly, monthly"),
    ({"every": "1ns"},
     'plugin "echo": invalid schedules[2].every "1ns": interval must be at least 1us; expected a '
     "positive duration such as 5m or 1h30m, or hourly, daily, weekly, monthly"),
    ({"every": 5},
     'plugin "echo": schedules[2].every must be a string, got int'),
    ({"after": "-5s"},
     'plugin "echo": invalid schedules[2].after "-5s": must not be negative'),
    ({"every": "1h", "jitter": "-1s"},
     'plugin "echo": invalid schedules[2].jitter "-1s": must not be negative'),
    ({"every": "1h", "jitter": "lots"},
     "plugin \"echo\": invalid schedules[2].jitter: invalid duration 'lots': expected numbers "
     "with units (ns, us, ms, s, m, h, d, w), such as 30s, 1h30m or 7d"),
    ({"every": "1h", "timezone": "Mars/Olympus"},
     'plugin "echo": invalid schedules[2].timezone "Mars/Olympus": expected an IANA zone name '
     "such as UTC, Europe/London or America/New_York"),
    ({"every": "1h", "only_between": "9-17"},
     'plugin "echo": invalid schedules[2].only_between "9-17": expected "HH:MM-HH:MM" with '
     '24-hour times, such as "22:00-06:00"'),
    ({"every": "1h", "only_between": "09:00-24:00"},
     'plugin "echo": invalid schedules[2].only_between "09:00-24:00": expected "HH:MM-HH:MM" '
     'with 24-hour times, such as "22:00-06:00"'),
    ({"every": "1h", "only_between": "09:00-09:00"},
     'plugin "echo": invalid schedules[2].only_between "09:00-09:00": start and end must differ'),
    ({"every": "1h", "not_on": "sun"},
     'plugin "echo": schedules[2].not_on must be a list of weekdays such as [sat, sun]'),
    ({"every": "1h", "not_on": ["sat", "funday"]},
     'plugin "echo": invalid schedules[2].not_on[1] "funday": expected a weekday name '
     "(mon..sun, full names allowed) or a number 0-7 (0 and 7 = Sunday)"),
    ({"every": "1h", "not_on": [8]},
     'plugin "echo": invalid schedules[2].not_on[0] "8": expected a weekday name '
     "(mon..sun, full names allowed) or a number 0-7 (0 and 7 = Sunday)"),
    ({"every": "1h", "not_on": [0, 1, 2, 3, 4, 5, 6]},
     'plugin "echo": schedules[2].not_on excludes every day, so it would never fire'),
    ({"cron": "* * * * *", "catch_up": "run_all"},
     'plugin "echo": schedules[2].catch_up "run_all" is only supported for every schedules'),
    ({"every": "1h", "catch_up": "sometimes"},
     'plugin "echo": invalid schedules[2].catch_up "sometimes": expected one of '
     "skip, run_once, run_all"),
    ({"every": "1h", "if_running": "panic"},
     'plugin "echo": invalid schedules[2].if_running "panic": expected one of skip, queue, cancel'),
    ({"every": "1h", "id": "  "}, 'plugin "echo": schedules[2].id cannot be empty'),
    ({"every": "1h", "command": 3},
     'plugin "echo": schedules[2].command must be a string, got int'),
])
def test_validation_messages(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse(entry)
    assert str(info.value) == message


def test_non_mapping_entry_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"schedules\[2\] must be a map"):
        parse_schedule(["every"], plugin="echo", index=2)  # type: ignore[arg-type]


def test_defaults_and_fields() -> None:
    s = parse({"every": "Daily"})
    assert s == Schedule(id="default", command="poll", kind="every", every=86400.0)
    full = parse({
        "id": "nightly", "command": "sync", "cron": "30  1 * * MON-fri",
        "timezone": "Europe/London", "jitter": "90s", "only_between": "22:00-06:00",
        "not_on": ["Saturday", "SUN", 7, 1], "if_running": "queue",
    })
    assert full.cron == "30 1 * * mon-fri"
    assert full.jitter == 90.0
    assert full.not_on == frozenset({5, 6, 0})
    assert full.only_between is not None and full.only_between.start.hour == 22
    assert full.if_running == "queue" and full.catch_up == "skip"
    assert parse({"at": "2026-05-01T12:00:00+02:00"}).at == utc(2026, 5, 1, 10)
    assert parse({"after": "1.5d"}).after_seconds == 1.5 * 86400
    assert parse({"every": "1h", "catch_up": "run_once"}).catch_up == "run_once"
    assert parse({"every": "1h", "timezone": "utc"}).timezone == "UTC"


@pytest.mark.parametrize("expr", [
    "*/15 * * * *", "0 9-17/2 * * 1-5", "0 0 1,15 * *", "0 0 * jan-mar sun", "5/10 * * * 7",
])
def test_valid_cron_forms(expr: str) -> None:
    assert parse({"cron": expr}).cron == expr


# ---------------------------------------------------------------------------------- next fire


def test_every_is_anchored_on_boot() -> None:
    s = parse({"every": "1h"})
    assert next_fire(s, BOOT - timedelta(days=1), boot=BOOT) == BOOT
    assert next_fire(s, BOOT, boot=BOOT) == BOOT + timedelta(hours=1)
    # Ticks that land anywhere inside a period still name the same next fire.
    for offset in (1, 59, 3599):
        tick = BOOT + timedelta(seconds=offset)
        assert next_fire(s, tick, boot=BOOT) == BOOT + timedelta(hours=1)
    assert fires(s, BOOT, 3) == [BOOT + timedelta(hours=h) for h in (1, 2, 3)]


def test_every_accepts_any_aware_timezone_and_rejects_naive() -> None:
    s = parse({"every": "30m"})
    local = (BOOT + timedelta(minutes=10)).astimezone(NEW_YORK)
    out = next_fire(s, local, boot=BOOT)
    assert out == BOOT + timedelta(minutes=30) and out.tzinfo is UTC
    with pytest.raises(ScheduleError, match="timezone-aware"):
        next_fire(s, datetime(2026, 1, 1), boot=BOOT)


def test_cron_utc_default() -> None:
    s = parse({"cron": "*/20 * * * *"})
    assert fires(s, utc(2026, 1, 5, 9, 59, 59), 3) == [
        utc(2026, 1, 5, 10, 0), utc(2026, 1, 5, 10, 20), utc(2026, 1, 5, 10, 40)]
    assert next_fire(s, utc(2026, 1, 5, 10, 0), boot=BOOT) == utc(2026, 1, 5, 10, 20)


def test_cron_in_timezone_and_dom_or_dow() -> None:
    s = parse({"cron": "0 9 13 * fri", "timezone": "America/New_York"})
    got = fires(s, utc(2026, 2, 1), 3)
    local = [g.astimezone(NEW_YORK) for g in got]
    assert [x.date() for x in local] == [date(2026, 2, 6), date(2026, 2, 13), date(2026, 2, 20)]
    assert all(x.hour == 9 for x in local)
    assert got[0] == utc(2026, 2, 6, 14)


def test_impossible_cron_reports_horizon() -> None:
    s = parse({"cron": "0 0 31 2 *"})
    with pytest.raises(ScheduleError, match="no matching time found within 5 years"):
        next_fire(s, BOOT, boot=BOOT)


def test_at_is_one_shot() -> None:
    s = parse({"at": "2026-06-01T08:00:00Z"})
    assert next_fire(s, utc(2026, 5, 1), boot=BOOT) == utc(2026, 6, 1, 8)
    assert next_fire(s, utc(2026, 6, 1, 8), boot=BOOT) is None


def test_after_is_measured_from_boot() -> None:
    s = parse({"after": "90s"})
    assert next_fire(s, BOOT, boot=BOOT) == BOOT + timedelta(seconds=90)
    assert next_fire(s, BOOT + timedelta(seconds=90), boot=BOOT) is None
    zero = parse({"after": "0s"})
    assert next_fire(zero, BOOT - timedelta(seconds=1), boot=BOOT) == BOOT


def test_one_shot_outside_constraints_never_fires() -> None:
    s = parse({"at": "2026-06-06T08:00:00Z", "not_on": ["sat"]})  # a Saturday
    assert next_fire(s, utc(2026, 6, 1), boot=BOOT) is None


# ------------------------------------------------------------------------------------------ DST


def local_days(got: list[datetime], zone: ZoneInfo) -> list[date]:
    return [g.astimezone(zone).date() for g in got]


@pytest.mark.parametrize(("zone_name", "day"), [
    ("Europe/London", date(2026, 10, 25)), ("America/New_York", date(2026, 11, 1)),
])
def test_daily_0130_fires_once_per_local_day_across_fall_back(zone_name: str, day: date) -> None:
    zone = ZoneInfo(zone_name)
    s = parse({"cron": "30 1 * * *", "timezone": zone_name})
    start = datetime.combine(day - timedelta(days=3), datetime.min.time(), zone)
    got = fires(s, start, 6)
    days = local_days(got, zone)
    assert days == [day - timedelta(days=3) + timedelta(days=i) for i in range(6)]
    assert all(g.astimezone(zone).strftime("%H:%M") == "01:30" for g in got)
    # On the fall-back day it is the first 01:30 (daylight time), and not again an hour later.
    on_day = got[days.index(day)]
    assert on_day.astimezone(zone).fold == 0
    assert next_fire(s, on_day, boot=BOOT).astimezone(zone).date() == day + timedelta(days=1)
    # Even when asked from inside the repeated hour (second 01:xx), the day does not fire again.
    repeated = on_day + timedelta(minutes=45)
    assert repeated.astimezone(zone).fold == 1
    assert next_fire(s, repeated, boot=BOOT).astimezone(zone).date() == day + timedelta(days=1)


@pytest.mark.parametrize(("zone_name", "day", "gap_time", "expected_local"), [
    ("America/New_York", date(2026, 3, 8), "30 2 * * *", "03:00"),
    ("Europe/London", date(2026, 3, 29), "30 1 * * *", "02:00"),
])
def test_daily_job_in_spring_gap_fires_once_at_gap_end(
    zone_name: str, day: date, gap_time: str, expected_local: str,
) -> None:
    zone = ZoneInfo(zone_name)
    s = parse({"cron": gap_time, "timezone": zone_name})
    start = datetime.combine(day - timedelta(days=2), datetime.min.time(), zone)
    got = fires(s, start, 4)
    days = local_days(got, zone)
    assert days == [day - timedelta(days=2) + timedelta(days=i) for i in range(4)]
    on_day = got[2].astimezone(zone)
    assert on_day.strftime("%H:%M") == expected_local
    assert on_day.utcoffset() != got[1].astimezone(zone).utcoffset()


def test_london_0230_on_spring_gap_day_exists_and_fires_once() -> None:
    s = parse({"cron": "30 2 * * *", "timezone": "Europe/London"})
    got = fires(s, utc(2026, 3, 28), 3)
    assert got == [utc(2026, 3, 28, 2, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 1, 30)]


def test_minutely_cron_across_new_york_gap_collapses_to_one_fire() -> None:
    s = parse({"cron": "*/30 * * * *", "timezone": "America/New_York"})
    got = fires(s, utc(2026, 3, 8, 6, 15), 3)  # 01:15 EST
    assert [g.astimezone(NEW_YORK).strftime("%H:%M") for g in got] == ["01:30", "03:00", "03:30"]


# ----------------------------------------------------------------------------------- constraints


def test_only_between_wrapping_midnight() -> None:
    s = parse({"every": "1h", "only_between": "22:00-02:00"})
    boot = utc(2026, 1, 5, 0, 0)
    got = fires(s, boot, 6, boot=boot)
    assert got == [utc(2026, 1, 5, 1), utc(2026, 1, 5, 22), utc(2026, 1, 5, 23),
                   utc(2026, 1, 6, 0), utc(2026, 1, 6, 1), utc(2026, 1, 6, 22)]


def test_only_between_end_is_exclusive_and_uses_schedule_timezone() -> None:
    s = parse({"cron": "0 * * * *", "timezone": "America/New_York",
               "only_between": "09:00-11:00"})
    got = fires(s, utc(2026, 1, 5, 12), 4)
    assert [g.astimezone(NEW_YORK).strftime("%d %H:%M") for g in got] == [
        "05 09:00", "05 10:00", "06 09:00", "06 10:00"]


def test_not_on_skips_days() -> None:
    s = parse({"every": "daily", "not_on": ["sat", 0]})
    got = fires(s, BOOT, 6)
    assert [g.strftime("%a") for g in got] == ["Tue", "Wed", "Thu", "Fri", "Mon", "Tue"]


def test_not_on_in_timezone_with_cron() -> None:
    # 23:30 in New York on a Friday is already Saturday in UTC; not_on uses the schedule's zone.
    s = parse({"cron": "30 23 * * *", "timezone": "America/New_York", "not_on": ["sunday"]})
    got = fires(s, utc(2026, 1, 9, 12), 3)  # Friday
    assert [g.astimezone(NEW_YORK).strftime("%a") for g in got] == ["Fri", "Sat", "Mon"]


def test_constraint_search_is_bounded() -> None:
    # Fires only land on 00:00 UTC every 7 days from a Monday boot; a Monday not_on excludes all.
    s = parse({"every": "7d", "not_on": ["mon"]})
    boot = utc(2026, 1, 5)
    with pytest.raises(ScheduleError, match="no fire allowed by not_on/only_between"):
        next_fire(s, boot, boot=boot)


# --------------------------------------------------------------------------------- jitter, keys


def test_jitter_offset_is_bounded_and_deterministic() -> None:
    s = parse({"every": "1h", "jitter": "90s"})
    values = [jitter_offset(s, BOOT + timedelta(hours=h), b"seed") for h in range(200)]
    assert all(0.0 <= v <= 90.0 for v in values)
    assert len(set(values)) > 150
    assert values == [jitter_offset(s, BOOT + timedelta(hours=h), b"seed") for h in range(200)]
    assert jitter_offset(s, BOOT, b"other") != jitter_offset(s, BOOT, b"seed")
    # The same instant written in another zone is the same instant.
    assert jitter_offset(s, BOOT.astimezone(LONDON), b"seed") == values[0]
    assert jitter_offset(parse({"every": "1h"}), BOOT, b"seed") == 0.0


def test_fire_key_format() -> None:
    s = parse({"id": "nightly", "command": "sync", "every": "1h"})
    key = fire_key("echo", s, BOOT.astimezone(NEW_YORK))
    assert key == "echo:sync:nightly:2026-01-05T09:00:07Z"
