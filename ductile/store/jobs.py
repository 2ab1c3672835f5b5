"""Records read from the queue tables, and the one timestamp format the store writes.

Rows come back from SQLite as `sqlite3.Row`; the dataclasses here are immutable snapshots of one
row each, so a caller can pass a `Job` around (to the dispatcher, an API handler, a test) without
it changing under them. The field names are the column names, which lets `from_row` stay generic
and `COLUMNS` double as the SELECT list.

Timestamps are stored as fixed-width UTC text, `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Go ductile trims
trailing zeros from the fraction, which breaks lexicographic comparison in SQL (`…:49.1Z` sorts
after `…:49.15Z`); a fixed width keeps `next_retry_at <= now` and retention cutoffs correct.
`parse_time` still reads the trimmed (and nanosecond) forms, so a Go-written value parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, TypeVar

from ductile.errors import StoreError

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

R = TypeVar("R", bound="_Record")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the default clock of the store)."""
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """Render `moment` in the stored fixed-width UTC form; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def utcnow_text() -> str:
    """The current time in the stored form."""
    return format_time(utcnow())


def parse_time(text: str) -> datetime:
    """Parse a stored timestamp (ours, or Go's RFC3339Nano) into an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except (AttributeError, ValueError) as exc:
        raise StoreError(
            f"invalid timestamp {text!r}: expected YYYY-MM-DDTHH:MM:SS.ffffffZ"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def stored_json_text(value: Any, what: str) -> str:
    """The JSON text of a stored JSON column, refusing any other SQLite type as a StoreError.

    Every JSON column is TEXT since schema version 2; an integer, real or blob here means a row
    written by hand, or a version 1 database (whose `JSON` columns turned `42` into a number)
    read without the boot migration. Naming it beats a TypeError from deep inside json.
    """
    if isinstance(value, str):
        return value
    kind = {int: "integer", float: "real", bytes: "blob"}.get(type(value), type(value).__name__)
    raise StoreError(
        f"{what} is stored as an SQLite {kind}, not JSON text; a database from before schema "
        "version 2 must be migrated first (start the gateway once: it migrates at boot)"
    )


def load_stored_object(text: Any, what: str) -> dict[str, Any]:
    """Decode a JSON-object column we wrote earlier (state, facts, contexts); a row edited or
    damaged outside the gateway is a StoreError naming `what`, never a crash."""
    try:
        value = json.loads(stored_json_text(text, what))
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{what} is not a JSON object")
    return value


def shift_time(moment: datetime, seconds: float) -> str:
    """`moment + seconds` in the stored form (used for next_retry_at and TTL cutoffs)."""
    return format_time(moment + timedelta(seconds=seconds))


@dataclass(frozen=True)
class _Record:
    """Shared row plumbing: field names are column names."""

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The column names in declaration order, for SELECT and RETURNING lists."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def select_list(cls) -> str:
        """`col1, col2, ...` ready to splice into SQL (names are ours, never user input)."""
        return ", ".join(cls.columns())

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """Build the record from a `sqlite3.Row` (or any mapping keyed by column name)."""
        return cls(**{name: row[name] for name in cls.columns()})

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for `--json` output)."""
        return {name: getattr(self, name) for name in self.columns()}


@dataclass(frozen=True)
class Job(_Record):
    """One job_queue row. `payload` is the stored JSON text (None when the job has none)."""

    id: str
    plugin: str
    command: str
    payload: str | None
    status: str
    attempt: int
    max_attempts: int
    submitted_by: str
    dedupe_key: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    next_retry_at: str | None
    last_error: str | None
    parent_job_id: str | None
    source_event_id: str | None
    event_context_id: str | None
    enqueued_config_snapshot_id: str | None
    started_config_snapshot_id: str | None
    # The job this one runs again (`ductile job retry`), and the root job of the pipeline run
    # this one repeats (`ductile pipeline rerun`); the reverse links are looked up by index.
    retry_of: str | None = None
    rerun_of: str | None = None

    def payload_obj(self) -> Any:
        """The payload decoded from JSON (None when absent); a stored payload that is not JSON
        text (bad JSON, or a number or blob from an unmigrated database) is a StoreError."""
        if self.payload is None:
            return None
        text = stored_json_text(self.payload, f"job {self.id}: stored payload")
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StoreError(f"job {self.id}: stored payload is not valid JSON: {exc}") from exc

    def to_api(self, result: str | None = None) -> dict[str, Any]:
        """The body of `GET /job/{id}`.

        `result` is the job_log result of the terminal attempt (the caller looks it up; it is
        only shown once the job is terminal). Go embeds it as raw JSON, so valid JSON text is
        decoded here; anything else is returned as the string it is.
        """
        body: dict[str, Any] = {
            "job_id": self.id,
            "status": self.status,
            "plugin": self.plugin,
            "command": self.command,
        }
        if result is not None:
            body["result"] = _json_or_text(result)
        body.update(
            started_at=self.started_at,
            completed_at=self.completed_at,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            submitted_by=self.submitted_by,
            created_at=self.created_at,
        )
        if self.last_error is not None:
            body["last_error"] = self.last_error
        if self.retry_of is not None:
            body["retry_of"] = self.retry_of
        if self.rerun_of is not None:
            body["rerun_of"] = self.rerun_of
        return body


@dataclass(frozen=True)
class JobLinks:
    """A job's place in the chain of operator re-runs, both ways: the job it retries (and the
    one that retried it), the run root it reruns (and the jobs that rerun it, newest last)."""

    retry_of: str | None = None
    retried_as: str | None = None
    rerun_of: str | None = None
    rerun_as: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The links that exist (an empty dict for a job never retried or rerun)."""
        out: dict[str, Any] = {}
        if self.retry_of is not None:
            out["retry_of"] = self.retry_of
        if self.retried_as is not None:
            out["retried_as"] = self.retried_as
        if self.rerun_of is not None:
            out["rerun_of"] = self.rerun_of
        if self.rerun_as:
            out["rerun_as"] = list(self.rerun_as)
        return out


@dataclass(frozen=True)
class Attempt(_Record):
    """One job_attempts row: one try of a job, from claim to its outcome."""

    id: int
    job_id: str
    attempt: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    exit_code: int | None
    outcome: str | None
    error: str | None
    stderr_tail: str | None
    pid: int | None


@dataclass(frozen=True)
class Transition(_Record):
    """One job_transitions row; `from_status` is None for the enqueue (new -> queued)."""

    id: int
    job_id: str
    from_status: str | None
    to_status: str
    reason: str | None
    created_at: str


@dataclass(frozen=True)
class LogEntry(_Record):
    """One job_log row: the terminal attempt of a job, id `<job_id>-<attempt>`."""

    id: str
    job_id: str | None
    plugin: str
    command: str
    status: str
    result: str | None
    attempt: int
    submitted_by: str
    created_at: str
    completed_at: str
    last_error: str | None
    stderr: str | None
    parent_job_id: str | None
    source_event_id: str | None
    event_context_id: str | None
    enqueued_config_snapshot_id: str | None
    started_config_snapshot_id: str | None
    exit_code: int | None


def _json_or_text(text: Any) -> Any:
    """Decode `text` as JSON when it is JSON text, else return it unchanged."""
    if not isinstance(text, str):
        return text  # not text at all (a hand-edited row): show the value as it is
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text  # not JSON, or nested too deeply to decode: show it as the text it is
