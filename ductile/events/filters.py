"""What a `GET /events` subscriber asks for: its filters and where it resumes.

Query parameters (each may be repeated; values of one parameter are alternatives, different
parameters must all match):

- `plugin=NAME`, `job=JOB_ID`, `pipeline=NAME`: the event's `plugin`, `job_id` or `pipeline`
  field equals one of the values (an event without that field does not match);
- `type=job.completed` (exact) or `type=job.*` (a prefix ending in `*`; `*` alone is every type);
- `last_event_id=N` (or the `Last-Event-ID` header): resume after event N;
- `token=...`: the API token, for clients that cannot send a header (EventSource).

Anything else is refused naming the parameter, so a typo (`plugins=`) is not a silent "no
filter".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ductile.errors import InputError

FIELDS = {"plugin": "plugin", "job": "job_id", "pipeline": "pipeline"}
KNOWN = frozenset({*FIELDS, "type", "last_event_id", "token"})
_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*|\*)?|\*")
MAX_VALUE = 256


class EventFilterError(InputError):
    """A `GET /events` query parameter or Last-Event-ID header the stream cannot use."""


@dataclass(frozen=True)
class EventFilter:
    """Which events one subscriber gets. Empty tuples match everything."""

    plugins: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    types: tuple[str, ...] = ()  # exact names, or prefixes ending in `*`

    def matches(self, kind: str, data: Mapping[str, Any]) -> bool:
        if self.types and not any(_type_matches(pattern, kind) for pattern in self.types):
            return False
        for values, key in ((self.plugins, "plugin"), (self.jobs, "job_id"),
                            (self.pipelines, "pipeline")):
            if values and data.get(key) not in values:
                return False
        return True


def _type_matches(pattern: str, kind: str) -> bool:
    if pattern.endswith("*"):
        return kind.startswith(pattern[:-1])
    return kind == pattern


def parse_filter(items: Iterable[tuple[str, str]]) -> EventFilter:
    """The filter of a query string's (name, value) pairs; EventFilterError names the first
    parameter it cannot use and says what is allowed."""
    found: dict[str, list[str]] = {"plugin": [], "job": [], "pipeline": [], "type": []}
    for name, value in items:
        if name not in KNOWN:
            raise EventFilterError(
                f"unknown query parameter {name!r} on GET /events; use plugin, job, pipeline, "
                "type, last_event_id or token")
        if name in ("last_event_id", "token"):
            continue
        if not value or len(value) > MAX_VALUE or value != value.strip():
            raise EventFilterError(
                f"query parameter {name!r} must be a non-empty value of at most {MAX_VALUE} "
                "characters without surrounding spaces")
        if name == "type" and not _TYPE.fullmatch(value):
            raise EventFilterError(
                f"query parameter 'type' {value!r} is not an event type: use an exact type "
                "(job.completed) or a prefix ending in '*' (job.*)")
        if value not in found[name]:
            found[name].append(value)
    return EventFilter(plugins=tuple(found["plugin"]), jobs=tuple(found["job"]),
                       pipelines=tuple(found["pipeline"]), types=tuple(found["type"]))


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """Where to resume: the Last-Event-ID header, else `?last_event_id=`, else 0 (the recent
    events the hub still holds in memory). The header wins because a browser's EventSource sends
    it on every reconnect, while the query parameter stays what the page first asked for."""
    for source, value in (("Last-Event-ID header", header), ("last_event_id", query)):
        if value is None:
            continue
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise EventFilterError(
                f"{source} {value[:40]!r} is not an event id: send the `id` of the last event "
                "you received (a non-negative integer), or omit it")
        return int(text)
    return 0
