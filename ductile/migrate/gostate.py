"""The original's SQLite state: recognise its schema, then copy every row into ours.

Recognising. The Go gateway records no schema version: it checks that its tables and columns
exist, and its `PRAGMA user_version` stays 0. So a Go state database is one with user_version 0
and every table and column of `GO_TABLES` (the original's schema.sql). A file that is not
SQLite, or fails `PRAGMA quick_check`, is damaged; a user_version other than 0, or a missing
table or column, is a schema version we do not know. Either is refused, naming the file,
before anything is written.

Copying. Our schema is the original's plus columns (job_queue.retry_of and rerun_of, the
attempt ledger's timings, job_log.exit_code) and tables of our own; every column the two share
is copied as stored, with ids kept. Per value:

- timestamps (every `*_at` column) become our fixed-width UTC form (ductile/migrate/gotime.py);
- JSON columns the original declared `JSON` (NUMERIC affinity) may hold a number: it becomes
  JSON text again;
- job statuses: the original has no `cancelled`; it records a job stopped by a schedule's
  `if_running: cancel` as `dead` with the reason `cancelled by scheduler (if_running=cancel)`.
  That job, its log row and its last transition become `cancelled`, as we record it. Every
  other status keeps its name; one we do not know is refused with the row named.
- `job_attempts` rows gain `started_at` (the claim time the original keeps) and, from the
  attempt's job_log row, `finished_at` and `outcome`;
- `vault_audit` rows keep time, actor, op, outcome and detail; the original's separate
  `secret_name` / `principal` become our one `target` column. `job_stopwatch` (timing
  telemetry we do not keep) is counted and left behind.

The target is written through `ductile/store/schema.sql` at this release's schema version, in
one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ductile.errors import MigrationRefused, ValueProblem
from ductile.migrate.gotime import to_stored_time
from ductile.store.breakers import CANCELLED_BY_SCHEDULER
from ductile.store.db import schema_sql
from ductile.store.migrations import SCHEMA_VERSION, json_number_text

#: The original's tables and columns (its internal/storage/schema.sql), in copy order.
GO_TABLES: dict[str, tuple[str, ...]] = {
    "config_snapshots": ("id", "config_hash", "source_hash", "source_path", "source", "reason",
                         "loaded_at", "ductile_version", "binary_path", "snapshot_format",
                         "semantics", "plugin_fingerprints", "sanitized_config",
                         "secret_fingerprints"),
    "event_context": ("id", "parent_id", "pipeline_name", "step_id", "accumulated_json",
                      "created_at"),
    "job_queue": ("id", "plugin", "command", "payload", "status", "attempt", "max_attempts",
                  "submitted_by", "dedupe_key", "created_at", "started_at", "completed_at",
                  "next_retry_at", "last_error", "parent_job_id", "source_event_id",
                  "event_context_id", "enqueued_config_snapshot_id",
                  "started_config_snapshot_id"),
    "job_transitions": ("id", "job_id", "from_status", "to_status", "reason", "created_at"),
    "job_attempts": ("id", "job_id", "attempt", "created_at"),
    "job_log": ("id", "job_id", "plugin", "command", "status", "result", "attempt",
                "submitted_by", "created_at", "completed_at", "last_error", "stderr",
                "parent_job_id", "source_event_id", "event_context_id",
                "enqueued_config_snapshot_id", "started_config_snapshot_id"),
    "plugin_state": ("plugin_name", "state", "updated_at"),
    "storage_sequences": ("name", "value"),
    "plugin_facts": ("id", "seq", "plugin_name", "fact_type", "job_id", "command", "fact_json",
                     "created_at"),
    "circuit_breakers": ("plugin", "command", "state", "failure_count", "opened_at",
                         "last_failure_at", "last_job_id", "updated_at"),
    "circuit_breaker_transitions": ("id", "plugin", "command", "from_state", "to_state",
                                    "failure_count", "reason", "job_id", "created_at"),
    "schedule_entries": ("plugin", "schedule_id", "command", "status", "reason",
                         "last_fired_at", "last_success_job_id", "last_success_at",
                         "next_run_at", "updated_at"),
}
#: Tables only the newer original has; read when present, never required.
GO_OPTIONAL: dict[str, tuple[str, ...]] = {
    "vault_audit": ("op", "principal", "secret_name", "actor", "outcome", "detail",
                    "created_at"),
    "job_stopwatch": ("id",),
}
#: The original's job statuses: a fixed fact of its format, not our set (which comes from
#: states/job.yaml and has `cancelled` besides).
GO_JOB_STATUSES = frozenset(("dead", "failed", "queued", "running", "skipped", "succeeded",
                             "timed_out"))
GO_SCHEDULE_STATUSES = frozenset({"active", "paused_manual", "paused_invalid", "exhausted"})
GO_BREAKER_STATES = frozenset({"closed", "open", "half_open"})
_JSON_COLUMNS = frozenset({"payload", "semantics", "plugin_fingerprints", "sanitized_config",
                           "secret_fingerprints", "state", "fact_json", "accumulated_json"})


@dataclass(frozen=True)
class GoState:
    """What a recognised Go database holds: rows per table, and the tables left behind."""

    path: str
    counts: dict[str, int]
    left_behind: dict[str, int]


@dataclass(frozen=True)
class Copied:
    """What `copy_state` wrote: rows per table, and how many statuses it renamed."""

    counts: dict[str, int]
    renamed: dict[str, int]


def open_go_state(path: str) -> sqlite3.Connection:
    """A read-only connection to the Go database; MigrationRefused when it cannot be one."""
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise MigrationRefused(f"cannot open the Go state database {path!r}: {exc}",
                               path=path) from None
    return conn


def inspect_go_state(conn: sqlite3.Connection, path: str) -> GoState:
    """Refuse a damaged file or an unknown schema version (naming `path`), else count rows."""
    try:
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        present = _tables_and_columns(conn)
    except sqlite3.DatabaseError as exc:
        raise MigrationRefused(f"the Go state database {path!r} is damaged ({exc}): restore it "
                               "from a backup, or leave out --state to start with no history",
                               path=path) from None
    if check != ["ok"]:
        raise MigrationRefused(f"the Go state database {path!r} is damaged (quick_check: "
                               f"{'; '.join(str(c) for c in check[:3])}): restore it from a "
                               "backup", path=path)
    if version != 0:
        if "retry_of" in present.get("job_queue", ()):
            raise MigrationRefused(f"{path!r} is already a ductile for Python database (schema "
                                   f"version {version}): there is nothing to import",
                                   path=path)
        raise MigrationRefused(f"the state database {path!r} has schema version {version}, "
                               "which no Go ductile release writes (it keeps user_version 0): "
                               "this migration knows the original's schema only", path=path)
    for table, columns in GO_TABLES.items():
        if table not in present:
            raise MigrationRefused(f"the state database {path!r} has an unknown schema version: "
                                   f"table {table} is missing (is it a Go ductile state.db?)",
                                   path=path)
        for column in columns:
            if column not in present[table]:
                raise MigrationRefused(f"the state database {path!r} has an unknown schema "
                                       f"version: table {table} lacks column {column}",
                                       path=path)
    counts = {t: _count(conn, t) for t in (*GO_TABLES, *GO_OPTIONAL) if t in present}
    left = {"job_stopwatch": counts.pop("job_stopwatch")} if "job_stopwatch" in counts else {}
    return GoState(path=path, counts=counts, left_behind=left)


def create_target(conn: sqlite3.Connection) -> None:
    """Our schema at this release's version on an empty database."""
    conn.executescript(schema_sql() + f"\nPRAGMA user_version = {int(SCHEMA_VERSION)};")


def copy_state(source: sqlite3.Connection, target: sqlite3.Connection, path: str) -> Copied:
    """Copy every row of the Go database into `target` (which has our schema) in one
    transaction; MigrationRefused naming `path`, the table and the row for a value we cannot
    carry. The caller commits."""
    ours = _tables_and_columns(target)
    counts: dict[str, int] = {}
    renamed = {"dead->cancelled": 0}
    cancelled = _cancelled_jobs(source)
    present = _tables_and_columns(source)
    for table, go_columns in GO_TABLES.items():
        columns = [c for c in go_columns if c in ours[table] and c in present[table]]
        convert = _row_converter(table, columns, cancelled, renamed, path)
        counts[table] = _insert_all(source, target, table, columns, columns, convert)
    _fill_attempt_ledger(target)
    if "vault_audit" in present:
        columns = list(GO_OPTIONAL["vault_audit"])
        counts["vault_audit"] = _insert_all(
            source, target, "vault_audit", columns,
            ["created_at", "actor", "op", "target", "outcome", "detail"],
            lambda row: _audit_row(row, path))
    return Copied(counts=counts, renamed=renamed)


# -- per-row conversion --------------------------------------------------------------------


def _row_converter(table: str, columns: list[str], cancelled: set[str], renamed: dict[str, int],
                   path: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        record = dict(zip(columns, row))
        where = f"{table} row {_row_name(table, record)}"
        for column, value in record.items():
            record[column] = _value(column, value, where, path)
        _statuses(table, record, cancelled, renamed, where, path)
        return tuple(record[c] for c in columns)
    return convert


def _value(column: str, value: Any, where: str, path: str) -> Any:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MigrationRefused(f"{path!r}: {where}: {column} is binary, not text",
                                   path=path) from None
    if column.endswith("_at") and value is not None:
        if value == "":
            return None
        try:
            return to_stored_time(str(value))
        except ValueProblem as exc:
            raise MigrationRefused(f"{path!r}: {where}: {column}: {exc}", path=path) from None
    if column in _JSON_COLUMNS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return json_number_text(value)
    return value


def _statuses(table: str, record: dict[str, Any], cancelled: set[str], renamed: dict[str, int],
              where: str, path: str) -> None:
    if table in ("job_queue", "job_log"):
        job_id = record.get("id") if table == "job_queue" else record.get("job_id")
        record["status"] = _job_status(record.get("status"), job_id in cancelled
                                       and record.get("last_error") == CANCELLED_BY_SCHEDULER,
                                       renamed, where, path, count=table == "job_queue")
    elif table == "job_transitions":
        if record.get("from_status") is not None:
            record["from_status"] = _job_status(record["from_status"], False, renamed, where,
                                                path, count=False)
        record["to_status"] = _job_status(record.get("to_status"),
                                          record.get("reason") == CANCELLED_BY_SCHEDULER,
                                          renamed, where, path, count=False)
    elif table == "schedule_entries" and record.get("status") not in GO_SCHEDULE_STATUSES:
        raise MigrationRefused(f"{path!r}: {where}: unknown schedule status "
                               f"{record.get('status')!r}", path=path)
    elif table in ("circuit_breakers", "circuit_breaker_transitions"):
        key = "state" if table == "circuit_breakers" else "to_state"
        if record.get(key) not in GO_BREAKER_STATES:
            raise MigrationRefused(f"{path!r}: {where}: unknown breaker state "
                                   f"{record.get(key)!r}", path=path)


def _job_status(status: Any, scheduler_cancel: bool, renamed: dict[str, int], where: str,
                path: str, *, count: bool = True) -> str:
    if status not in GO_JOB_STATUSES:
        raise MigrationRefused(f"{path!r}: {where}: unknown job status {status!r} (the original "
                               f"has {', '.join(sorted(GO_JOB_STATUSES))})", path=path)
    if status == "dead" and scheduler_cancel:
        if count:
            renamed["dead->cancelled"] += 1
        return "cancelled"
    return str(status)


def _audit_row(row: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    op, principal, secret_name, actor, outcome, detail, created_at = row
    where = "vault_audit row"
    return (_value("created_at", created_at, where, path), actor or "", op or "",
            secret_name or principal or "", outcome or "", detail or "")


def _fill_attempt_ledger(target: sqlite3.Connection) -> None:
    """The original's job_attempts row is its claim time only; our ledger also shows when an
    attempt started and finished. Its claim is when it started, and a terminal attempt's
    job_log row says when it finished and how: derived, never invented."""
    target.execute("UPDATE job_attempts SET started_at = created_at WHERE started_at IS NULL")
    target.execute(
        "UPDATE job_attempts SET finished_at = l.completed_at, outcome = l.status "
        "FROM job_log AS l WHERE l.job_id = job_attempts.job_id "
        "AND l.attempt = job_attempts.attempt AND job_attempts.finished_at IS NULL")


def _cancelled_jobs(source: sqlite3.Connection) -> set[str]:
    rows = source.execute("SELECT id FROM job_queue WHERE status = 'dead' AND last_error = ?",
                          (CANCELLED_BY_SCHEDULER,))
    return {str(r[0]) for r in rows}


# -- plumbing --------------------------------------------------------------------------------


def _insert_all(source: sqlite3.Connection, target: sqlite3.Connection, table: str,
                read: list[str], write: list[str],
                convert: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> int:
    select = f"SELECT {', '.join(_q(c) for c in read)} FROM {_q(table)} ORDER BY rowid"
    insert = (f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in write)}) "
              f"VALUES ({', '.join('?' for _ in write)})")
    count = 0
    for batch in _batches(source.execute(select)):
        target.executemany(insert, [convert(row) for row in batch])
        count += len(batch)
    return count


def _batches(cursor: sqlite3.Cursor, size: int = 500) -> Iterator[list[tuple[Any, ...]]]:
    while batch := cursor.fetchmany(size):
        yield batch


def _row_name(table: str, record: dict[str, Any]) -> str:
    for key in ("id", "plugin_name", "name"):
        if record.get(key) is not None:
            return repr(str(record[key]))
    return repr(f"{record.get('plugin')}/{record.get('schedule_id') or record.get('command')}")


def _tables_and_columns(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    return {n: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({_q(n)})")) for n in names}


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0])


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
