"""The PostgreSQL statements of the ledger figures, retention, breakers and schedules can each
be served by an index of pg/schema.sql, as their SQLite twins are (test_store_query_plans.py,
test_introspect.py).

The statements are not copied here: the real functions of POSTGRESQL_BACKEND run on a
recording connection over a few thousand rows, inside a transaction rolled back at the end.
Each recorded statement is then explained with `enable_seqscan = off`: PostgreSQL still picks
a sequential scan when no index can serve the statement, so a `Seq Scan` on a ledger table in
that plan means a missing index (on a small table the planner may rightly prefer a scan, which
is why the cost of one is raised instead of the plan being taken as it comes).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio

from ductile.store.breakers import Breaker
from ductile.store.jobs import format_time

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ROWS = 3000
LEDGER = ("job_queue", "job_log", "job_attempts", "job_transitions",
          "circuit_breaker_transitions")


class Recording:
    """Stands in for the psycopg connection: runs every statement and remembers it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.read_only = False
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, params))
        return self.conn.execute(sql, params)


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[Any]:
    import psycopg
    from psycopg.rows import dict_row

    from ductile.store.pg.db import PgDatabase

    async def create() -> None:
        await (await PgDatabase.open(pg_dsn)).close()

    trio.run(create)
    connection = psycopg.connect(pg_dsn, row_factory=dict_row)
    try:
        _fill(connection)
        connection.execute("ANALYZE")
        connection.commit()
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _fill(conn: Any) -> None:
    rng = random.Random(5)
    jobs, logs, attempts, transitions, breaker_rows = [], [], [], [], []
    for i in range(ROWS):
        created = NOW - timedelta(seconds=ROWS - i)
        status = rng.choice(["succeeded", "failed", "dead", "queued", "running"])
        job_id = str(uuid.uuid4())
        plugin, command = f"p{i % 5}", f"c{i % 3}"
        jobs.append((job_id, plugin, command, status, "svc", format_time(created),
                     format_time(created + timedelta(seconds=1)),
                     format_time(created + timedelta(seconds=2))))
        logs.append((f"{job_id}-1", job_id, plugin, command, status, "svc",
                     format_time(created), format_time(created + timedelta(seconds=2))))
        attempts.append((job_id, format_time(created)))
        transitions.append((job_id, format_time(created)))
        breaker_rows.append((str(uuid.uuid4()), plugin, command, format_time(created)))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO job_queue (id, plugin, command, status, submitted_by, created_at, "
            "started_at, completed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", jobs)
        cursor.executemany(
            "INSERT INTO job_log (id, job_id, plugin, command, status, attempt, submitted_by, "
            "created_at, completed_at) VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s)", logs)
        cursor.executemany(
            "INSERT INTO job_attempts (job_id, attempt, created_at, duration_ms) "
            "VALUES (%s, 1, %s, 5)", attempts)
        cursor.executemany(
            "INSERT INTO job_transitions (job_id, to_status, created_at) "
            "VALUES (%s, 'queued', %s)", transitions)
        cursor.executemany(
            "INSERT INTO circuit_breaker_transitions (id, plugin, command, to_state, reason, "
            "created_at) VALUES (%s, %s, %s, 'open', 'x', %s)", breaker_rows)


def _run_every_statement(recorder: Any) -> None:
    from ductile.store.pg.backend import POSTGRESQL_BACKEND as PG
    from ductile.store.pg.breakers import outcomes_since

    PG.analytics.status_counts(recorder, NOW)
    PG.analytics.plugin_status_counts(recorder, NOW)
    PG.analytics.queue_figures(recorder, NOW)
    PG.analytics.attempt_durations(recorder, "p1", NOW - timedelta(hours=1))
    PG.schedules.outstanding_jobs(recorder, "p1", "c1", "svc")
    PG.schedules.active_polls(recorder, "svc")
    PG.breakers.fetch_breaker_history(recorder, "p1", "c1", 20)
    # The breakers' job log reads, on a first look and after a known last job.
    fresh = Breaker("p1", "c1", "closed", 0, None, None, None, format_time(NOW))
    outcomes_since(recorder, fresh, "svc", 3)
    last = recorder.conn.execute("SELECT job_id FROM job_log ORDER BY seq LIMIT 1").fetchone()
    seen = Breaker("p1", "c1", "closed", 0, None, None, last["job_id"], format_time(NOW))
    outcomes_since(recorder, seen, "svc", 3)
    for table in ("job_log", "job_queue", "job_transitions", "job_attempts",
                  "breaker_transitions"):
        PG.retention.delete_batch(recorder, table, format_time(NOW - timedelta(minutes=20)), 50)


def test_every_statement_can_use_an_index(conn: Any) -> None:
    recorder = Recording(conn)
    _run_every_statement(recorder)
    assert len(recorder.statements) >= 20, "the functions must actually run their SQL"
    conn.execute("SET LOCAL enable_seqscan = off")
    for sql, params in recorder.statements:
        plan = "\n".join(row["QUERY PLAN"] for row in conn.execute("EXPLAIN " + sql, params))
        scans = [table for table in LEDGER if f"Seq Scan on {table}" in plan]
        assert not scans, f"{sql}\n{plan}"
