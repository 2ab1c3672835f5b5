"""Turn `GET /job-logs` query parameters (and `ductile job logs` flags) into a LogFilter.

Pure parsing, fuzzed in property-tests: every bad value becomes a `BodyError` naming the
parameter, nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from ductile.config.durations import DurationError, parse_duration
from ductile.planes.api.bodies import BodyError
from ductile.store.joblog import MAX_LIMIT, LogFilter
from ductile.store.jobs import format_time

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped")
STATUS_ALIASES = {"pending": "queued", "ok": "succeeded", "error": "failed"}


def parse_log_filter(args: Mapping[str, str], now: datetime | None = None) -> LogFilter:
    limit_text = args.get("limit", "50")
    if not limit_text.isdecimal() or int(limit_text) < 1:
        raise BodyError("limit must be a positive integer")
    if int(limit_text) > MAX_LIMIT:
        raise BodyError(f"limit must be <= {MAX_LIMIT}")
    status = args.get("status")
    if status:
        status = STATUS_ALIASES.get(status.lower(), status.lower())
        if status not in STATUSES:
            raise BodyError("invalid status filter")
    clock = now or datetime.now(timezone.utc)
    return LogFilter(
        job_id=args.get("job_id") or None,
        plugin=args.get("plugin") or None,
        command=args.get("command") or None,
        status=status or None,
        submitted_by=args.get("submitted_by") or None,
        query=args.get("query") or None,
        since=_moment(args.get("from") or args.get("since"),
                      "from" if args.get("from") else "since", clock),
        until=_moment(args.get("to") or args.get("until"),
                      "to" if args.get("to") else "until", clock),
        limit=int(limit_text),
    )


def _moment(text: str | None, name: str, now: datetime) -> str | None:
    """An RFC 3339 timestamp, or a duration meaning that long ago (`1h`, `7d`)."""
    if not text:
        return None
    try:
        return format_time(now - timedelta(seconds=parse_duration(text)))
    except (DurationError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BodyError(f"invalid {name} timestamp: use RFC 3339 (2026-01-02T15:04:05Z) "
                        "or a duration such as 1h or 7d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_time(moment)
