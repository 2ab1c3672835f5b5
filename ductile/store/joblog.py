"""Search the job log: terminal attempts filtered by plugin, status, time and text.

Used by `GET /job-logs` and `ductile job logs`; both read, neither writes. The filter is a
plain dataclass so the API and the CLI validate their own inputs and share one query.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ductile.store.jobs import LogEntry

MAX_LIMIT = 200


@dataclass(frozen=True)
class LogFilter:
    job_id: str | None = None
    plugin: str | None = None
    command: str | None = None
    status: str | None = None
    submitted_by: str | None = None
    query: str | None = None  # substring of last_error, stderr or result
    since: str | None = None  # completed_at >= (stored timestamp text)
    until: str | None = None  # completed_at <= (stored timestamp text)
    limit: int = 50


def filter_sql(where: LogFilter, mark: str = "?",
               contains: str = "instr({column}, {mark}) > 0") -> tuple[str, list[Any]]:
    """The WHERE clause of `where` and its parameters, in a backend's dialect: `mark` is its
    parameter placeholder, `contains` its substring test (SQLite's `instr`, PostgreSQL's
    `strpos`), so both stores filter with one meaning."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("job_id", where.job_id), ("plugin", where.plugin),
                          ("command", where.command), ("status", where.status),
                          ("submitted_by", where.submitted_by)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if where.since is not None:
        clauses.append(f"completed_at >= {mark}")
        params.append(where.since)
    if where.until is not None:
        clauses.append(f"completed_at <= {mark}")
        params.append(where.until)
    if where.query:
        tests = [contains.format(column=f"coalesce({column}, '')", mark=mark)
                 for column in ("last_error", "stderr", "result")]
        clauses.append("(" + " OR ".join(tests) + ")")
        params.extend([where.query] * 3)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def search_logs(conn: sqlite3.Connection, where: LogFilter) -> tuple[list[LogEntry], int]:
    """Matching rows, newest `completed_at` first (at most `limit`), and the total count."""
    sql_where, params = filter_sql(where)
    total = conn.execute(f"SELECT count(*) FROM job_log {sql_where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {LogEntry.select_list()} FROM job_log {sql_where} "
        "ORDER BY completed_at DESC, id DESC LIMIT ?",
        (*params, max(1, min(where.limit, MAX_LIMIT))),
    ).fetchall()
    return [LogEntry.from_row(row) for row in rows], int(total)


def log_view(entry: LogEntry, *, include_result: bool) -> dict[str, Any]:
    """The JSON shape of one row for `GET /job-logs` and `ductile job logs --json`: the Go
    gateway's field names and types (`result` an object, not a string), plus `exit_code`."""
    view: dict[str, Any] = {
        "job_id": entry.job_id, "log_id": entry.id, "plugin": entry.plugin,
        "command": entry.command, "status": entry.status, "attempt": entry.attempt,
        "submitted_by": entry.submitted_by, "created_at": entry.created_at,
        "completed_at": entry.completed_at, "exit_code": entry.exit_code,
    }
    if entry.last_error:
        view["last_error"] = entry.last_error
    if entry.stderr:
        view["stderr"] = entry.stderr
    if include_result and entry.result is not None:
        # JSON as JSON (the Go gateway embeds the result raw), anything else as its text.
        view["result"] = _decoded(entry.result)
    return view


def _decoded(text: str) -> Any:
    """`text` decoded when it is JSON text; else the text itself (a plugin's raw output)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
