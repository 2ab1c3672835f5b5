"""Schedule entries: parsing `plugins.<name>.schedules[]` and computing the next fire instant.

Pure on purpose (no I/O, no trio, no wall clock): the scheduler passes `after` and `boot` in, so
every rule here can be tested with fixed instants and replayed after a restart with the same answer.

Rules a reader needs (they differ from a naive "now + interval"):

* `every`: fires are `boot + k*interval` for k >= 0. `after + interval` would depend on when the
  tick happened to run, so two evaluations of the same schedule could disagree; anchoring on boot
  makes the sequence a pure function of (boot, interval).
* `cron`: 5 fields, matched on local wall-clock minutes in the schedule's timezone (UTC by
  default). DST rule: a wall time that occurs twice (autumn fall-back) fires once, at its first
  occurrence; a wall time that does not exist (spring gap) fires once, at the first valid instant
  after the gap (the transition itself, e.g. 03:00 in New York). Several gap minutes therefore
  collapse into that single instant.
* `at` / `after`: one-shots. `after` is measured from `boot`. A one-shot outside `not_on` /
  `only_between` has no later instant to move to, so it yields None.
* `not_on` and `only_between` are checked in the schedule's timezone; a disallowed fire moves to
  the next allowed one (bounded search, then ScheduleError).
* Jitter is not applied here; `jitter_offset` gives the caller a deterministic offset.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from ductile.errors import ScheduleError  # noqa: F401 - raised here; importable from here too
from ductile.config.durations import DurationError, parse_duration
from ductile.config.validate import go_quote, parse_interval

KINDS = ("every", "cron", "at", "after")
CATCH_UP = ("skip", "run_once", "run_all")
IF_RUNNING = ("skip", "queue", "cancel")
MAX_STEPS = 10_000
_CRON_HORIZON = timedelta(days=5 * 366)
_TINY = timedelta(microseconds=1)

# Python weekday numbers (Monday = 0 .. Sunday = 6).
_DAY_NAMES = {
    "mon": 0, "monday": 0,
    "tue": 1, "tues": 1, "tuesday": 1,
    "wed": 2, "wednesday": 2,
    "thu": 3, "thurs": 3, "thursday": 3,
    "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5,
    "sun": 6, "sunday": 6,
}
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)

# Cron field name, low, high, and accepted names (lower-case) -> number.
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DOWS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DOWS),
)
_CRON_ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?$")




@dataclass(frozen=True)
class Window:
    """`only_between`: [start, end) in local wall time; start > end wraps past midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True)
class Schedule:
    """One validated schedule entry. Exactly one of every/cron/at/after_seconds is set."""

    id: str = "default"
    command: str = "poll"
    kind: str = "every"
    every: float | None = None
    cron: str | None = None
    at: datetime | None = None
    after_seconds: float | None = None
    timezone: str = "UTC"
    jitter: float = 0.0
    only_between: Window | None = None
    not_on: frozenset[int] = frozenset()
    catch_up: str = "skip"
    if_running: str = "skip"

    @property
    def tz(self) -> tzinfo:
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)


# --------------------------------------------------------------------------------------- parsing


def parse_schedule(entry: Mapping[str, Any], *, plugin: str, index: int) -> Schedule:
    """Validate one entry; raise ScheduleError with the reference's message texts."""
    label = f"plugin {go_quote(plugin)}"
    where = f"schedules[{index}]"
    if not isinstance(entry, Mapping):
        raise ScheduleError(f"{label}: {where} must be a map such as {{every: 5m}}")
    present = [k for k in KINDS if entry.get(k) is not None]
    if not present:
        raise ScheduleError(f"{label}: {where} requires one of every, cron, at, or after")
    if len(present) > 1:
        raise ScheduleError(f"{label}: {where} must set exactly one of every, cron, at, or after")
    kind = present[0]
    value = _string(entry[kind], label, where, kind)
    fields: dict[str, Any] = {"kind": kind}
    if kind == "every":
        fields["every"] = _interval(value, label, where)
    elif kind == "cron":
        fields["cron"] = _cron(value, label, where)
    elif kind == "at":
        fields["at"] = _at(value, label, where)
    else:
        fields["after_seconds"] = _duration(value, label, where, "after")
    fields["id"] = _optional_string(entry, "id", "default", label, where)
    fields["command"] = _command(entry, label, where)
    fields["timezone"] = _timezone(entry, label, where)
    jitter = entry.get("jitter")
    if jitter is not None:
        text = _string(jitter, label, where, "jitter")
        fields["jitter"] = _duration(text, label, where, "jitter")
    fields["only_between"] = _window(entry.get("only_between"), label, where)
    fields["not_on"] = _not_on(entry.get("not_on"), label, where)
    fields["catch_up"] = _choice(entry, "catch_up", CATCH_UP, label, where)
    if fields["catch_up"] != "skip" and kind != "every":
        raise ScheduleError(
            f"{label}: {where}.catch_up {go_quote(fields['catch_up'])} "
            "is only supported for every schedules")
    fields["if_running"] = _choice(entry, "if_running", IF_RUNNING, label, where)
    return Schedule(**fields)


def _string(value: Any, label: str, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise ScheduleError(f"{label}: {where}.{name} must be a string, got {type(value).__name__}")
    return value


def _optional_string(entry: Mapping[str, Any], name: str, default: str,
                     label: str, where: str) -> str:
    value = entry.get(name)
    if value is None:
        return default
    text = _string(value, label, where, name).strip()
    if not text:
        raise ScheduleError(f"{label}: {where}.{name} cannot be empty")
    return text


def _command(entry: Mapping[str, Any], label: str, where: str) -> str:
    command = _optional_string(entry, "command", "poll", label, where)
    if command == "handle":
        raise ScheduleError(f'{label}: {where}.command "handle" cannot be scheduled')
    return command


def _choice(entry: Mapping[str, Any], name: str, valid: tuple[str, ...],
            label: str, where: str) -> str:
    value = _optional_string(entry, name, valid[0], label, where)
    if value not in valid:
        raise ScheduleError(
            f"{label}: invalid {where}.{name} {go_quote(value)}: expected one of "
            + ", ".join(valid))
    return value


def _interval(text: str, label: str, where: str) -> float:
    """Fires are computed with timedelta, so an interval must survive microsecond rounding."""
    try:
        seconds = parse_interval(text)
        if timedelta(seconds=seconds) <= timedelta(0):
            raise DurationError("interval must be at least 1us")
        return seconds
    except DurationError as exc:
        raise ScheduleError(
            f"{label}: invalid {where}.every {go_quote(text)}: {exc}; expected a positive "
            "duration such as 5m or 1h30m, or hourly, daily, weekly, monthly") from None


def _duration(text: str, label: str, where: str, name: str) -> float:
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        raise ScheduleError(f"{label}: invalid {where}.{name}: {exc}") from None
    if seconds < 0:
        raise ScheduleError(
            f"{label}: invalid {where}.{name} {go_quote(text)}: must not be negative")
    return seconds


def _at(text: str, label: str, where: str) -> datetime:
    error = ScheduleError(
        f"{label}: invalid {where}.at {go_quote(text)}: expected RFC3339 timestamp")
    if not _RFC3339.match(text.strip()):
        raise error
    try:
        parsed = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise error from None
    return parsed.astimezone(UTC)


def _timezone(entry: Mapping[str, Any], label: str, where: str) -> str:
    value = entry.get("timezone")
    if value is None:
        return "UTC"
    name = _string(value, label, where, "timezone").strip()
    if name.upper() == "UTC":
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"{label}: invalid {where}.timezone {go_quote(name)}: expected an IANA zone "
            "name such as UTC, Europe/London or America/New_York") from None
    return name


def _window(value: Any, label: str, where: str) -> Window | None:
    if value is None:
        return None
    text = _string(value, label, where, "only_between")
    error = (f"{label}: invalid {where}.only_between {go_quote(text)}: "
             'expected "HH:MM-HH:MM" with 24-hour times, such as "22:00-06:00"')
    match = _WINDOW.match(text.strip())
    if match is None:
        raise ScheduleError(error)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ScheduleError(error)
    if (h1, m1) == (h2, m2):
        raise ScheduleError(
            f"{label}: invalid {where}.only_between {go_quote(text)}: start and end must differ")
    return Window(time(h1, m1), time(h2, m2))


def _not_on(value: Any, label: str, where: str) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ScheduleError(
            f"{label}: {where}.not_on must be a list of weekdays such as [sat, sun]")
    days = {_weekday(item, label, where, i) for i, item in enumerate(value)}
    if len(days) == 7:
        raise ScheduleError(f"{label}: {where}.not_on excludes every day, so it would never fire")
    return frozenset(days)


def _weekday(item: Any, label: str, where: str, i: int) -> int:
    """Cron numbering (0 and 7 = Sunday) in, Python numbering (Monday = 0) out."""
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 7:
        return (item - 1) % 7
    if isinstance(item, str) and item.strip().lower() in _DAY_NAMES:
        return _DAY_NAMES[item.strip().lower()]
    raise ScheduleError(
        f"{label}: invalid {where}.not_on[{i}] {go_quote(str(item))}: expected a weekday "
        "name (mon..sun, full names allowed) or a number 0-7 (0 and 7 = Sunday)")


def _cron(text: str, label: str, where: str) -> str:
    try:
        return validate_cron(text)
    except ScheduleError as exc:
        raise ScheduleError(f"{label}: invalid {where}.cron: {exc}") from None


def validate_cron(text: str) -> str:
    """Check the 4.2 dialect ourselves: croniter alone also accepts seconds, L, W, # and macros."""
    fields = text.split()
    if len(fields) != 5:
        hint = "; a seconds or year field is not supported" if len(fields) in (6, 7) else ""
        raise ScheduleError(f"invalid cron expression {go_quote(text)}: expected 5 fields{hint}")
    for field, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        _cron_field(field.lower(), name, low, high, names)
    expr = " ".join(fields).lower()
    try:
        croniter(expr)
    except (ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron expression {go_quote(text)}: {exc}") from None
    return expr


def _cron_field(field: str, name: str, low: int, high: int, names: Mapping[str, int]) -> None:
    def fail(detail: str) -> ScheduleError:
        return ScheduleError(f"invalid cron {name} field {go_quote(field)}: {detail}")

    for item in field.split(","):
        match = _CRON_ITEM.match(item)
        if match is None:
            raise fail(f"bad item {go_quote(item)}; expected *, a, a-b, */n, a/n or a-b/n "
                       f"with values {low}-{high}")
        base, step = match.groups()
        if step is not None and int(step) == 0:
            raise fail("step must be greater than 0")
        if base == "*":
            continue
        bounds = [_cron_value(part, low, high, names, fail) for part in base.split("-")]
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise fail(f"descending range {go_quote(base)}")


def _cron_value(part: str, low: int, high: int, names: Mapping[str, int], fail: Any) -> int:
    if part.isdigit():
        number = int(part)
    elif part in names:
        number = names[part]
    else:
        raise fail(f"unknown value {go_quote(part)}")
    if not low <= number <= high:
        raise fail(f"value {number} out of range {low}-{high}")
    return number


# ------------------------------------------------------------------------------------ next fire


def next_fire(schedule: Schedule, after: datetime, *, boot: datetime) -> datetime | None:
    """The next allowed fire strictly after `after` (aware, returned in UTC), or None."""
    after = _utc(after, "after")
    boot = _utc(boot, "boot")
    if schedule.kind in ("at", "after"):
        instant = _one_shot(schedule, boot)
        if instant <= after or not _allowed(schedule, instant):
            return None
        return instant
    cursor = after
    horizon = after + _CRON_HORIZON
    for _ in range(MAX_STEPS):
        candidate = _raw_next(schedule, cursor, boot)
        if _allowed(schedule, candidate):
            return candidate
        if candidate > horizon:
            break
        cursor = max(candidate, _next_allowed_start(schedule, candidate) - _TINY)
    raise ScheduleError(
        f"schedule {go_quote(schedule.id)}: no fire allowed by not_on/only_between "
        f"within {MAX_STEPS} steps or 5 years after {after.isoformat()}")


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(f"{name} must be a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(UTC)


def _one_shot(schedule: Schedule, boot: datetime) -> datetime:
    if schedule.at is not None:
        return schedule.at
    return boot + timedelta(seconds=schedule.after_seconds or 0.0)


def _raw_next(schedule: Schedule, after: datetime, boot: datetime) -> datetime:
    """The next fire of the bare expression, ignoring not_on/only_between."""
    if schedule.every is not None:
        step = timedelta(seconds=schedule.every)
        if after < boot:
            return boot
        return boot + (after - boot) // step * step + step
    return _cron_next(schedule.cron or "", schedule.tz, after)


def _cron_next(expr: str, zone: tzinfo, after: datetime) -> datetime:
    """Match naive local wall times, then map each to one real instant (see module docstring).

    croniter's own tz handling has fired twice in fall-back hours; naive wall-clock matching
    plus our own resolution keeps the DST rule explicit and testable.
    """
    start = after.astimezone(zone).replace(tzinfo=None)
    it = croniter(expr, start)
    limit = start + _CRON_HORIZON
    while True:
        try:
            wall = it.get_next(datetime)
        except CroniterBadDateError:
            wall = None
        if wall is None or wall > limit:
            raise ScheduleError(
                f"cron {go_quote(expr)}: no matching time found within 5 years")
        instant = resolve_wall(wall, zone)
        if instant > after:
            return instant


def resolve_wall(wall: datetime, zone: tzinfo) -> datetime:
    """A naive local wall time -> UTC: first occurrence if repeated, gap end if skipped."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: the transition lies between the fold=1 and fold=0 readings; find its second.
    readings = sorted((wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first))
    low, high = (int(r.timestamp()) for r in readings)
    new_offset = readings[1].astimezone(zone).utcoffset()
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == new_offset:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


def _allowed(schedule: Schedule, instant: datetime) -> bool:
    if not schedule.not_on and schedule.only_between is None:
        return True
    local = instant.astimezone(schedule.tz)
    if local.weekday() in schedule.not_on:
        return False
    window = schedule.only_between
    return window is None or window.contains(local.time().replace(tzinfo=None))


def _next_allowed_start(schedule: Schedule, instant: datetime) -> datetime:
    """A lower bound on the next allowed instant, so the search jumps instead of crawling."""
    zone = schedule.tz
    local = instant.astimezone(zone).replace(tzinfo=None)
    if local.weekday() in schedule.not_on:
        midnight = datetime.combine(local.date() + timedelta(days=1), time())
        return resolve_wall(midnight, zone)
    window = schedule.only_between
    if window is None:
        return instant
    start = datetime.combine(local.date(), window.start)
    if start <= local:
        start += timedelta(days=1)
    return resolve_wall(start, zone)


# ----------------------------------------------------------------------------- jitter and keys


def jitter_offset(schedule: Schedule, instant: datetime, seed: bytes) -> float:
    """Seconds in [0, jitter], fixed by (schedule id, instant, seed) so restarts agree."""
    if schedule.jitter <= 0:
        return 0.0
    stamp = _utc(instant, "instant").isoformat()
    digest = hashlib.blake2b(digest_size=8, person=b"ductile-jitter")
    for part in (schedule.id.encode(), stamp.encode(), bytes(seed)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    fraction = int.from_bytes(digest.digest(), "big") / 2**64
    return fraction * schedule.jitter


def fire_key(plugin: str, schedule: Schedule, instant: datetime) -> str:
    """`plugin:command:id:instant` — one key per scheduled fire, for dedupe across restarts."""
    stamp = _utc(instant, "instant").isoformat().replace("+00:00", "Z")
    return f"{plugin}:{schedule.command}:{schedule.id}:{stamp}"
