"""The PostgreSQL database layer (ductile/store/pg/db.py) against a real throwaway cluster
(tests/support/postgres.py): transactions, error sorting, the pool replacing a killed
connection, lock and statement timeouts, NOTIFY at commit only, the listener, and the schema
runner (created once under concurrency, a newer schema refused, no drift from SQLite's)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio

from ductile.errors import JobNotFound, SchemaMismatch, SchemaTooNew, StoreError, StoreUnavailable
from ductile.store.db import required_schema as sqlite_required_schema
from ductile.store.pg import JOBS_CHANNEL, PgDatabase, describe_dsn, notify
from ductile.store.pg.migrations import PG_SCHEMA_VERSION, required_schema
from support.postgres import PgCluster


@pytest.fixture
async def pgdb(pg_dsn: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(pg_dsn, pool_size=2, lock_timeout_ms=300,
                               statement_timeout_ms=1000)
    try:
        yield db
    finally:
        await db.close()


def _put_state(name: str, state: str) -> Any:
    def fn(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO plugin_state (plugin_name, state, updated_at) "
                     "VALUES (%s, %s, %s)", (name, state, "2026-03-01T12:00:00.000000Z"))
    return fn


def _states(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT plugin_name, state FROM plugin_state").fetchall()
    return {row["plugin_name"]: row["state"] for row in rows}


async def test_write_then_read_round_trips_json_text_exactly(pgdb: PgDatabase) -> None:
    text = '{"n": 1.50, "big": 12345678901234567890, "s": "é\\u0000✓"}'
    await pgdb.write(_put_state("echo", text))
    assert await pgdb.read(_states) == {"echo": text}


async def test_a_ductile_error_in_fn_rolls_back_and_propagates_unchanged(
    pgdb: PgDatabase,
) -> None:
    refusal = JobNotFound("job-1")

    def fn(conn: psycopg.Connection[Any]) -> None:
        _put_state("echo", "{}")(conn)
        raise refusal

    with pytest.raises(JobNotFound) as caught:
        await pgdb.write(fn)
    assert caught.value is refusal
    assert await pgdb.read(_states) == {}


async def test_a_refused_statement_is_store_error_with_the_database_message(
    pgdb: PgDatabase,
) -> None:
    await pgdb.write(_put_state("echo", "{}"))

    def twice(conn: psycopg.Connection[Any]) -> None:
        _put_state("other", "{}")(conn)
        _put_state("echo", "{}")(conn)

    with pytest.raises(StoreError) as caught:
        await pgdb.write(twice)
    assert not isinstance(caught.value, StoreUnavailable)
    assert "duplicate key" in str(caught.value) and "[23505]" in str(caught.value)
    assert pgdb.label in str(caught.value)
    assert await pgdb.read(_states) == {"echo": "{}"}  # `other` was rolled back with it


async def test_a_read_runs_read_only_in_one_snapshot(pgdb: PgDatabase, pg_dsn: str) -> None:
    with pytest.raises(StoreError, match="read-only transaction"):
        await pgdb.read(_put_state("echo", "{}"))

    def two_looks(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        first = conn.execute("SELECT count(*) AS n FROM plugin_state").fetchone()["n"]
        with psycopg.connect(pg_dsn, autocommit=True) as other:  # commits between the looks
            _put_state("late", "{}")(other)
        second = conn.execute("SELECT count(*) AS n FROM plugin_state").fetchone()["n"]
        return first, second

    assert await pgdb.read(two_looks) == (0, 0)
    assert await pgdb.read(_states) == {"late": "{}"}


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])


async def test_a_killed_connection_is_unavailable_then_the_pool_replaces_it(
    pg_dsn: str, pg_cluster: PgCluster
) -> None:
    db = await PgDatabase.open(pg_dsn, pool_size=1)
    try:
        pid = await db.read(_backend_pid)
        pg_cluster.admin("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable) as caught:
            await db.write(_put_state("echo", "{}"))
        assert db.label in str(caught.value)
        await db.write(_put_state("echo", "{}"))
        assert await db.read(_backend_pid) != pid
        assert await db.read(_states) == {"echo": "{}"}
    finally:
        await db.close()


async def test_a_locked_row_fails_unavailable_within_lock_timeout(
    pgdb: PgDatabase, pg_dsn: str
) -> None:
    await pgdb.write(_put_state("echo", "{}"))
    with psycopg.connect(pg_dsn) as holder:  # holds the row lock until the block ends
        holder.execute("SELECT * FROM plugin_state WHERE plugin_name = 'echo' FOR UPDATE")

        def update(conn: psycopg.Connection[Any]) -> None:
            conn.execute("UPDATE plugin_state SET state = '{\"x\": 1}' "
                         "WHERE plugin_name = 'echo'")

        with trio.fail_after(5):  # lock_timeout is 300 ms: a hang would be a bug
            with pytest.raises(StoreUnavailable, match="55P03"):
                await pgdb.write(update)
        holder.rollback()
    await pgdb.write(update)
    assert await pgdb.read(_states) == {"echo": '{"x": 1}'}


async def test_a_statement_past_statement_timeout_is_unavailable(pgdb: PgDatabase) -> None:
    with trio.fail_after(5):
        with pytest.raises(StoreUnavailable, match="57014"):
            await pgdb.read(lambda conn: conn.execute("SELECT pg_sleep(3)"))


async def test_notify_is_delivered_at_commit_only_and_wakes_a_listener(
    pgdb: PgDatabase,
) -> None:
    listener = await pgdb.listen(JOBS_CHANNEL)
    woke = trio.Event()

    async def waiter() -> None:
        await listener.wait()
        woke.set()

    def rolled_back(conn: psycopg.Connection[Any]) -> None:
        notify(conn, JOBS_CHANNEL, "ghost")
        raise JobNotFound("job-1")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(JobNotFound):
            await pgdb.write(rolled_back)
        await pgdb.write(lambda conn: notify(conn, JOBS_CHANNEL, "real"))
        with trio.fail_after(5):
            await woke.wait()
    # Notifications arrive in commit order: had the ghost been sent, it would come first.
    while "real" not in listener.payloads:
        with trio.fail_after(5):
            await listener.wait()
    assert list(listener.payloads) == ["real"]
    await listener.aclose()
    with pytest.raises(StoreError, match="closed"):
        await listener.wait()


async def test_a_listener_reconnects_after_its_connection_is_killed(
    pgdb: PgDatabase, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    listener = await pgdb.listen(JOBS_CHANNEL)
    dbname = pg_dsn.split("dbname=")[1].split()[0]
    rows = pg_cluster.admin(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN%%'",
        (dbname,))
    assert len(rows) == 1
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.wait)
            await trio.testing.wait_all_tasks_blocked()
            pg_cluster.admin("SELECT pg_terminate_backend(%s)", (rows[0][0],))
        assert listener.reconnects == 1  # woken by the loss, LISTENing again
        await pgdb.write(lambda conn: notify(conn, JOBS_CHANNEL, "after"))
        while "after" not in listener.payloads:
            await listener.wait()
    await listener.aclose()


async def test_two_gateways_opening_an_empty_database_at_once_create_the_schema_once(
    pg_dsn: str,
) -> None:
    opened: list[PgDatabase] = []

    async def open_one() -> None:
        opened.append(await PgDatabase.open(pg_dsn, pool_size=1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_one)
        nursery.start_soon(open_one)
    try:
        created = [db.migration for db in opened if db.migration is not None]
        assert len(created) == 1 and created[0].from_version == 0
        versions = await opened[0].read(
            lambda conn: conn.execute("SELECT version FROM schema_version").fetchall())
        assert versions == [{"version": PG_SCHEMA_VERSION}]
    finally:
        for db in opened:
            await db.close()


async def test_a_newer_schema_is_refused_naming_both_versions(pg_dsn: str) -> None:
    db = await PgDatabase.open(pg_dsn, pool_size=1)
    await db.write(lambda conn: conn.execute(
        "INSERT INTO schema_version VALUES (%s, 'x', 'from the future')",
        (PG_SCHEMA_VERSION + 7,)))
    await db.close()
    with pytest.raises(SchemaTooNew) as caught:
        await PgDatabase.open(pg_dsn, pool_size=1)
    assert (caught.value.found, caught.value.supported) == (PG_SCHEMA_VERSION + 7,
                                                            PG_SCHEMA_VERSION)
    assert f"schema version {PG_SCHEMA_VERSION + 7}" in str(caught.value)
    assert f"up to {PG_SCHEMA_VERSION}" in str(caught.value)


async def test_foreign_tables_and_a_missing_column_are_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE job_queue (id TEXT)")
    with pytest.raises(SchemaMismatch, match="schema_version does not"):
        await PgDatabase.open(pg_dsn, pool_size=1)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE job_queue")
    db = await PgDatabase.open(pg_dsn, pool_size=1)
    await db.write(lambda conn: conn.execute("ALTER TABLE job_log DROP COLUMN stderr"))
    await db.close()
    with pytest.raises(SchemaMismatch, match="table job_log lacks column stderr"):
        await PgDatabase.open(pg_dsn, pool_size=1)


async def test_a_wrong_password_is_unavailable_and_never_shows_the_password(
    pg_cluster: PgCluster,
) -> None:
    dbname = pg_cluster.create_database()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await PgDatabase.open(pg_cluster.dsn(dbname, password="hunter2-wrong"))
        assert "password authentication failed" in str(caught.value)
        assert "hunter2" not in str(caught.value)
        assert dbname in str(caught.value)
    finally:
        pg_cluster.drop_database(dbname)


async def test_the_schema_has_every_sqlite_table_and_column(pgdb: PgDatabase) -> None:
    rows = await pgdb.read(lambda conn: conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()").fetchall())
    present: dict[str, set[str]] = {}
    for row in rows:
        present.setdefault(row["table_name"], set()).add(row["column_name"])
    # The file's own parse agrees with what PostgreSQL created...
    assert {t: set(c) for t, c in required_schema().items()} == present
    # ...and every SQLite table is here with the same columns, plus `seq` where SQLite orders
    # by rowid (PostgreSQL-only tables, such as the version's and the cluster's, may be added).
    sqlite = {t: set(c) for t, c in sqlite_required_schema().items()}
    for table in ("job_queue", "job_log", "circuit_breaker_transitions"):
        sqlite[table].add("seq")
    # ...and the node life that claimed a job (several gateways only: store/pg/cluster.py).
    sqlite["job_queue"] |= {"claimed_by", "claimed_incarnation"}
    sqlite["events"] |= {"node"}  # each node's own event stream
    assert {t: c for t, c in present.items() if t in sqlite} == sqlite
    assert present["schema_version"] == {"version", "applied_at", "description"}


async def test_text_sorts_bytewise_as_on_sqlite(pgdb: PgDatabase) -> None:
    names = ["b", "B", "a-2", "a_1", "a1", "é", "Z", "2026-03-01T12:00:00.000000Z"]
    for name in names:
        await pgdb.write(_put_state(name, "{}"))
    got = await pgdb.read(lambda conn: [row["plugin_name"] for row in conn.execute(
        "SELECT plugin_name FROM plugin_state ORDER BY plugin_name").fetchall()])
    mem = sqlite3.connect(":memory:")
    mem.execute("CREATE TABLE t (x TEXT)")
    mem.executemany("INSERT INTO t VALUES (?)", [(n,) for n in names])
    assert got == [row[0] for row in mem.execute("SELECT x FROM t ORDER BY x")]
    mem.close()


async def test_a_closed_database_refuses_work(pg_dsn: str) -> None:
    db = await PgDatabase.open(pg_dsn, pool_size=1)
    await db.close()
    await db.close()
    with pytest.raises(StoreError, match="is closed"):
        await db.write(_put_state("echo", "{}"))


def test_describe_dsn_never_shows_the_password() -> None:
    assert describe_dsn("postgresql://u:s3cret@db.example:5433/ductile") == (
        "postgresql://u@db.example:5433/ductile")
    assert describe_dsn("host=h dbname=d user=u password=s3cret") == "postgresql://u@h/d"
    assert "s3cret" not in describe_dsn("postgresql://u:s3cret@h/d?sslmode=bogus x")


async def test_a_connection_lost_at_commit_is_an_unknown_outcome_not_unavailable(
    pgdb: PgDatabase, pg_cluster: PgCluster
) -> None:
    def write_then_lose_the_connection(conn: psycopg.Connection[Any]) -> None:
        _put_state("echo", "{}")(conn)
        pg_cluster.admin("SELECT pg_terminate_backend(%s)", (_backend_pid(conn),))

    with pytest.raises(StoreError, match="whether it was committed is unknown") as caught:
        await pgdb.write(write_then_lose_the_connection)
    assert not isinstance(caught.value, StoreUnavailable)
    assert await pgdb.read(_states) == {}  # here the server had not committed it


def test_importing_the_package_does_not_load_psycopg() -> None:
    code = ("import sys, ductile.store.pg, ductile.cli.main; "
            "assert not [m for m in sys.modules if m.startswith('psycopg')], 'psycopg loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_savepoint_inside_fn_stays_inside_the_one_transaction(pgdb: PgDatabase) -> None:
    def body(conn: psycopg.Connection[Any], *, fail: bool) -> None:
        with conn.transaction():  # a savepoint: undone with the whole write if it fails
            _put_state("first", "{}")(conn)
        try:
            with conn.transaction():
                _put_state("first", "{}")(conn)  # duplicate: only this savepoint fails
        except psycopg.errors.UniqueViolation:
            pass
        _put_state("second", "{}")(conn)
        if fail:
            raise JobNotFound("job-1")

    with pytest.raises(JobNotFound):
        await pgdb.write(lambda conn: body(conn, fail=True))
    assert await pgdb.read(_states) == {}
    await pgdb.write(lambda conn: body(conn, fail=False))
    assert await pgdb.read(_states) == {"first": "{}", "second": "{}"}


async def test_a_frozen_transaction_loses_its_session_and_its_locks(pg_dsn: str) -> None:
    """A gateway frozen inside a transaction (SIGSTOP, a stalled VM) holds its row locks
    only until idle_in_transaction_session_timeout (the statement timeout) ends its session:
    a peer then takes the row instead of waiting for the frozen one forever."""
    import time

    frozen = await PgDatabase.open(pg_dsn, pool_size=1, statement_timeout_ms=400,
                                   lock_timeout_ms=3000)
    peer = await PgDatabase.open(pg_dsn, pool_size=1, lock_timeout_ms=3000)
    try:
        await peer.write(lambda conn: conn.execute(
            "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES ('p', '{}', 'x')"))
        locked = trio.Event()
        waited: list[float] = []

        def freeze(conn: Any) -> None:
            conn.execute("SELECT 1 FROM plugin_state WHERE plugin_name = 'p' FOR UPDATE")
            trio.from_thread.run_sync(locked.set)
            time.sleep(1.5)  # the process is stopped: the server sees idle in transaction
            conn.execute("SELECT 1")

        def take(conn: Any) -> None:
            started = time.monotonic()
            conn.execute("SELECT 1 FROM plugin_state WHERE plugin_name = 'p' FOR UPDATE")
            waited.append(time.monotonic() - started)

        async with trio.open_nursery() as nursery:
            async def frozen_writer() -> None:
                with pytest.raises(StoreError):
                    await frozen.write(freeze)
            nursery.start_soon(frozen_writer)
            await locked.wait()
            await peer.write(take)
        assert waited and waited[0] < 1.4  # the lock went with the session, not the freeze
    finally:
        await frozen.close()
        await peer.close()
