"""The original's timestamps in our stored form.

The Go gateway writes RFC3339Nano in UTC with trailing zeros trimmed (`2026-05-01T10:00:00Z`,
`…:00.1Z`, `…:00.123456789Z`); a hand-written row may carry an offset (`+02:00`). We store a
fixed-width `YYYY-MM-DDTHH:MM:SS.ffffffZ` so that SQL compares times as text in time order, so
every time column is rewritten on import. Nanoseconds are truncated to microseconds (what we
keep); truncation never reorders two times. Anything else is refused, never guessed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ductile.errors import ValueProblem

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


class GoTimeError(ValueProblem):
    """A stored value is not an RFC3339 timestamp the original could have written."""


def to_stored_time(text: str) -> str:
    """`text` (RFC3339 / RFC3339Nano) as our fixed-width UTC form; GoTimeError otherwise."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise GoTimeError(f"{_shown(text)} is not an RFC3339 timestamp")
    frac = (match["frac"] or "").ljust(6, "0")[:6]
    try:
        moment = datetime.strptime(f"{match['date']}T{match['time']}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise GoTimeError(f"{_shown(text)} is not a valid date and time") from None
    zone = match["zone"].upper()
    offset = timedelta(0)
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise GoTimeError(f"{_shown(text)} has an invalid UTC offset")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    try:
        utc = (moment - offset).replace(microsecond=int(frac), tzinfo=timezone.utc)
    except OverflowError:
        raise GoTimeError(f"{_shown(text)} is out of range") from None
    # Not strftime: `%Y` drops the leading zeros of a year before 1000 on glibc.
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond:06d}Z")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
