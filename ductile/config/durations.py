"""Duration strings: Go units (`ns us µs ms s m h`) plus `d` (24h) and `w` (7d).

Go ductile accepts `d`/`w` only in schedule intervals; we accept them everywhere,
so `job_log_retention: 30d` works as operators expect. Values are returned as float seconds.
"""

from __future__ import annotations

import re

from ductile.errors import DurationError  # noqa: F401 - raised here; importable from here too

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")
#: What `parse_duration` accepts, as one anchored regular expression that JSON Schema (ECMA-262)
#: also reads: the config schema (`ductile config schema`) uses it for every duration field.
#: Stricter in two ways only: no surrounding whitespace, and ASCII digits.
DURATION_PATTERN = "^[+-]?(?:0|(?:" + _TERM.pattern.replace("\\d", "[0-9]") + ")+)$"




def parse_duration(text: str) -> float:
    """Parse `1h30m`, `250ms`, `30d`, `-5s` or `0` into seconds."""
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}: expected a string such as 30s, 5m or 1h")
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if not s:
        raise DurationError(f"invalid duration {text!r}: expected a value such as 30s, 5m or 1h")
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _TERM.match(s, pos)
        if match is None:
            raise DurationError(
                f"invalid duration {text!r}: expected numbers with units "
                "(ns, us, ms, s, m, h, d, w), such as 30s, 1h30m or 7d"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Render seconds the way Go prints a time.Duration (`1m0s`, `1.5s`, `250ms`, `0s`)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ns = round(seconds * 1e9)
        if ns < 1_000:
            return f"{sign}{ns}ns"
        if ns < 1_000_000:
            return f"{sign}{_trim(ns / 1e3)}µs"
        return f"{sign}{_trim(ns / 1e6)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = sign
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{_trim(secs)}s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"
