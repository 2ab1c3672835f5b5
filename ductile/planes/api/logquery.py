"""Turn `GET /jobs` and `GET /job-logs` query parameters (and `ductile job logs` flags) into a
LogFilter.

Pure parsing, fuzzed in property-tests: every bad value becomes a `BodyError` naming the
parameter and what is allowed, nothing else escapes (no OverflowError from a date at the edge
of the calendar, no ValueError from a 5,000-digit number).

* `limit`: ASCII digits, 1..200 (`int_param`; the one integer parameter of the API).
* `from`/`since` and `to`/`until`: an RFC 3339 timestamp between 0001-01-01T00:00:00Z and
  9999-12-31T23:59:59Z once converted to UTC, or a duration ago (`1h`, `7d`, `-1h` = ahead)
  that lands in that range.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from ductile.config.durations import DurationError, parse_duration
from ductile.machines import job_statuses
from ductile.planes.api.bodies import BodyError
from ductile.store.joblog import MAX_LIMIT, LogFilter

STATUS_ALIASES = {"pending": "queued", "ok": "succeeded", "error": "failed"}
DEFAULT_LIMIT = 50
#: What a date parameter may be, once converted to UTC.
DATE_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"


def parse_log_filter(args: Mapping[str, str], now: datetime | None = None) -> LogFilter:
    limit = int_param(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    status = args.get("status")
    if status:
        status = STATUS_ALIASES.get(status.lower(), status.lower())
        if status not in job_statuses().all:
            raise BodyError("invalid status filter")
    clock = now or datetime.now(timezone.utc)
    since_name = "from" if args.get("from") else "since"
    until_name = "to" if args.get("to") else "until"
    return LogFilter(
        job_id=args.get("job_id") or None,
        plugin=args.get("plugin") or None,
        command=args.get("command") or None,
        status=status or None,
        submitted_by=args.get("submitted_by") or None,
        query=args.get("query") or None,
        since=_moment(args.get(since_name), since_name, clock),
        until=_moment(args.get(until_name), until_name, clock),
        limit=limit,
    )


def int_param(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter: ASCII digits only, `low..high`; `default` when absent."""
    text = args.get(name)
    if text is None or text == "":
        return default
    digits = text.strip()
    significant = digits.lstrip("0") or "0"
    # Compare lengths first: int() of thousands of digits is slow, and refused past 4300.
    if (not (digits.isascii() and digits.isdigit()) or len(significant) > len(str(high))
            or not low <= int(significant) <= high):
        raise BodyError(f"{name} must be an integer from {low} to {high}, got "
                        f"{_shorten(text)!r}")
    return int(significant)


def _moment(text: str | None, name: str, now: datetime) -> str | None:
    """An RFC 3339 timestamp, or a duration meaning that long ago (`1h`, `7d`)."""
    if not text:
        return None
    try:
        ago = parse_duration(text)
    except DurationError:
        pass
    else:
        try:
            return _stored_form(now - timedelta(seconds=ago))
        except (OverflowError, ValueError):
            raise BodyError(f"{name} duration {_shorten(text)} reaches outside {DATE_RANGE}; "
                            "use a shorter duration") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BodyError(f"invalid {name} timestamp: use RFC 3339 (2026-01-02T15:04:05Z) "
                        "or a duration such as 1h or 7d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return _stored_form(moment)
    except (OverflowError, ValueError):
        raise BodyError(f"{name} timestamp {_shorten(text)} is out of range: it must lie in "
                        f"{DATE_RANGE} once converted to UTC") from None


def _stored_form(moment: datetime) -> str:
    """The fixed-width UTC text the store compares `completed_at` with (the year padded to
    four digits, so years before 1000 still sort before every stored time)."""
    utc = moment.astimezone(timezone.utc)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
