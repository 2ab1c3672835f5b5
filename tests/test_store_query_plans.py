"""The queue's hot statements use an index, never a full scan of job_queue.

The statements are not copied here: the real writer-side functions of writes.py (and the
retention deletes) run against a recording connection, so a change to their SQL is checked
as soon as it is made. Each recorded statement is then run through `EXPLAIN QUERY PLAN` with
the same parameters on a database of a few thousand rows, both before and after `ANALYZE`
(`Database.close` runs `PRAGMA optimize`, so a long-lived database has statistics and the
planner may choose differently).
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio

from ductile.machines import load_machine
from ductile.store import Database
from ductile.store.jobs import Job, format_time
from ductile.store.ledger import _running_counts
from ductile.store.retention import _deletes
from ductile.store.writes import _CLAIM_SQL, _claim, _Dedupe, _insert_job, _recover

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ROWS = 4000
JOB_QUEUE_NAMES = {"job_queue", "q", "r"}  # the table and the aliases writes.py gives it
MACHINE = load_machine("job")


class RecordingConnection:
    """Stands in for the sqlite3 connection: runs every statement and remembers it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.statements.append((sql, params))
        return self.conn.execute(sql, params)


@pytest.fixture(scope="module", params=[False, True], ids=["no-stats", "analyzed"])
def conn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    sqlite3.Connection
]:
    path = str(tmp_path_factory.mktemp("plans") / "ductile.db")
    trio.run(_create, path)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    _fill(connection)
    if request.param:
        connection.execute("ANALYZE")
    yield connection
    connection.close()


async def _create(path: str) -> None:
    db = await Database.open(path)
    await db.close()


def _fill(conn: sqlite3.Connection) -> None:
    """Mostly terminal history, some queued (a few not yet due) and some running jobs,
    spread over plugins, commands and dedupe keys."""
    rng = random.Random(7)
    rows = []
    for i in range(ROWS):
        created = NOW - timedelta(seconds=ROWS - i)
        status = rng.choices(
            ["succeeded", "failed", "dead", "queued", "running"], weights=[80, 8, 2, 7, 3]
        )[0]
        terminal = status not in ("queued", "running")
        due = created + timedelta(seconds=600) if status == "queued" and i % 3 == 0 else None
        rows.append((
            str(uuid.uuid4()), f"plugin{i % 5}", f"cmd{i % 3}", status, rng.randint(1, 3), 4,
            "test", f"key{i % 40}" if i % 2 else None, format_time(created),
            format_time(created + timedelta(seconds=1)) if terminal else None,
            format_time(due) if due else None,
        ))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO job_queue (id, plugin, command, status, attempt, max_attempts, "
        "submitted_by, dedupe_key, created_at, completed_at, next_retry_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO job_transitions (job_id, to_status, created_at) VALUES (?, ?, ?)",
        [(row[0], row[3], row[8]) for row in rows],
    )
    conn.executemany(
        "INSERT INTO job_attempts (job_id, attempt, created_at) VALUES (?, 1, ?)",
        [(row[0], row[8]) for row in rows],
    )
    conn.execute("COMMIT")


def record(conn: sqlite3.Connection, action: Any) -> list[tuple[str, Any]]:
    """Run `action(recorder)` in a transaction that is rolled back; return its statements."""
    recorder = RecordingConnection(conn)
    conn.execute("BEGIN")
    try:
        action(recorder)
    finally:
        conn.execute("ROLLBACK")
    return recorder.statements


def plan(conn: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    return [row["detail"] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


# Partial indexes that hold only queued rows: walking one in order (until the first eligible
# row) is bounded by the queue, not by the table, like a SEARCH on status = 'queued'.
QUEUED_ONLY_INDEXES = ("job_queue_fresh_idx",)


def full_scans_of_job_queue(details: list[str]) -> list[str]:
    """Plan lines that walk all of job_queue (`SCAN job_queue`, `SCAN q ...`), even through
    an index: `SCAN x USING INDEX i` reads the whole index. SEARCH lines are bounded, and so
    is a scan of a partial index of queued rows."""
    return [
        detail for detail in details
        if detail.startswith("SCAN ") and detail.split()[1] in JOB_QUEUE_NAMES
        and not detail.endswith(QUEUED_ONLY_INDEXES)
    ]


def touches_job_queue(sql: str) -> bool:
    words = sql.replace("(", " ").split()
    return "job_queue" in words and not sql.lstrip().upper().startswith("INSERT")


def assert_indexed(conn: sqlite3.Connection, statements: list[tuple[str, Any]]) -> None:
    checked = 0
    for sql, params in statements:
        if not touches_job_queue(sql):
            continue
        details = plan(conn, sql, params)
        assert full_scans_of_job_queue(details) == [], (sql, details)
        assert any(d.startswith("SEARCH") and d.split()[1] in JOB_QUEUE_NAMES for d in details), (
            sql, details,
        )
        checked += 1
    assert checked, "no job_queue statement was recorded"


def new_job(**fields: Any) -> Job:
    values: dict[str, Any] = {name: None for name in Job.columns()}
    values.update(
        id=str(uuid.uuid4()), plugin="plugin1", command="cmd1", status="queued", attempt=1,
        max_attempts=4, submitted_by="test", created_at=format_time(NOW),
    )
    values.update(fields)
    return Job(**values)


# -- the tests -----------------------------------------------------------------------------


def test_the_claim_uses_indexes(conn: sqlite3.Connection) -> None:
    def claim(recorder: Any) -> None:
        for skip in ("[]", '["plugin0", "plugin1"]'):
            job = _claim(recorder, MACHINE, now=format_time(NOW), snapshot=None, skip=skip)
            assert job is not None

    statements = record(conn, claim)
    assert sum(sql == _CLAIM_SQL for sql, _ in statements) == 2
    assert_indexed(conn, statements)


@pytest.mark.parametrize("with_event", [False, True], ids=["plain", "routed"])
def test_the_dedupe_lookups_use_indexes(conn: sqlite3.Connection, with_event: bool) -> None:
    """Both dedupe checks (outstanding, recent success) and the routed-event check."""
    extra = {"parent_job_id": "parent", "source_event_id": "event"} if with_event else {}
    job = new_job(dedupe_key="key-new", **extra)
    dedupe = _Dedupe(
        check_outstanding=True, success_cutoff=format_time(NOW - timedelta(hours=1))
    )

    statements = record(conn, lambda recorder: _insert_job(recorder, MACHINE, job, dedupe))

    dedupe_selects = [sql for sql, _ in statements if "dedupe_key = ?" in sql]
    assert len(dedupe_selects) == 2
    assert_indexed(conn, statements)


def test_the_outstanding_dedupe_lookup_leads_with_the_dedupe_key(
    conn: sqlite3.Connection,
) -> None:
    """The scheduler's outstanding check should find the key's few rows through
    job_queue_dedupe_status_completed_idx, with and without statistics. Without them SQLite
    would prefer job_queue_plugin_command_status_idx (three equality columns against two) and
    read every queued or running job of the target (~1.6 ms per enqueue with 20k queued jobs
    of one target, against ~3.5 us through the dedupe index); `+plugin`/`+command` in the
    query steer it.
    """
    job = new_job(dedupe_key="key-new")
    dedupe = _Dedupe(check_outstanding=True, success_cutoff=None)
    statements = record(conn, lambda recorder: _insert_job(recorder, MACHINE, job, dedupe))
    [(sql, params)] = [(sql, p) for sql, p in statements if "'queued', 'running'" in sql]
    details = plan(conn, sql, params)
    by_key = any("dedupe_key=?" in d for d in details if d.startswith("SEARCH"))
    assert by_key, details


def test_recovery_and_the_running_counts_use_indexes(conn: sqlite3.Connection) -> None:
    now = format_time(NOW)
    statements = record(conn, lambda recorder: _recover(recorder, MACHINE, now))
    statements += record(conn, _running_counts)
    assert_indexed(conn, statements)


@pytest.mark.parametrize("table", sorted(_deletes()))
def test_the_retention_deletes_use_indexes(conn: sqlite3.Connection, table: str) -> None:
    details = plan(conn, _deletes()[table], {"cutoff": format_time(NOW), "batch": 500})
    assert [d for d in details if d.startswith("SCAN ")] == [], details
