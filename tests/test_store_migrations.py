"""Versioned schema migrations on real SQLite files: a version 1 database (JSON columns with
NUMERIC affinity) is backed up and migrated when opened; a newer one is refused untouched; a
failing step leaves the file as it was; readers never migrate."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ductile.errors import MigrationFailed, SchemaOutdated, SchemaTooNew, StoreError
from ductile.store import Database, Queue
from ductile.store.db import open_readonly
from ductile.store.jobs import Job, load_stored_object
from ductile.store.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    json_number_text,
    migrate,
    retype_columns,
)
from ductile.store.snapshots import fetch_snapshot
from support.store import V1_PAYLOADS, build_v1_database

BACKUP = re.compile(r"state\.db\.v1-\d{8}T\d{6}Z\.bak")


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = _connect(path)
    try:
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def _version(path: Path) -> int:
    return int(_rows(path, "PRAGMA user_version")[0][0])


def _schema(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, notnull, default, pk) and every index name."""
    conn = _connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {
            "tables": {t: [tuple(c)[1:] for c in conn.execute(f'PRAGMA table_info("{t}")')]
                       for t in tables},
            "indexes": sorted(r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'")),
        }
    finally:
        conn.close()


def _backups(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".bak"))


async def _fresh(path: Path) -> None:
    await (await Database.open(str(path))).close()


async def test_a_version_1_database_is_backed_up_and_migrated_keeping_every_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    before = _rows(path, "SELECT rowid, id, typeof(payload) FROM job_queue ORDER BY rowid")
    assert [kind for _, _, kind in before] == ["integer", "real", "text", "real", "null"]
    transitions = _rows(path, "SELECT * FROM job_transitions ORDER BY id")

    db = await Database.open(str(path))
    try:
        migrated = db.migration
        assert migrated is not None
        assert (migrated.from_version, migrated.to_version) == (1, SCHEMA_VERSION)
        jobs = {job_id: await Queue(db, snapshot_id=lambda: None, dedupe_ttl=0).get(job_id)
                for job_id in V1_PAYLOADS}
    finally:
        await db.close()

    assert _version(path) == SCHEMA_VERSION
    assert _rows(path, "SELECT rowid, id, typeof(payload), payload FROM job_queue "
                       "ORDER BY rowid") == [
        (1, "job-int", "text", "42"),
        (2, "job-real", "text", "1.5"),
        (3, "job-object", "text", '{"a":1}'),
        (4, "job-big", "text", "1e+22"),
        (5, "job-none", "null", None),
    ]
    assert {job_id: job.payload_obj() for job_id, job in jobs.items() if job} == {
        "job-int": 42, "job-real": 1.5, "job-object": {"a": 1}, "job-big": 1e22, "job-none": None}
    assert _rows(path, "SELECT * FROM job_transitions ORDER BY id") == transitions
    assert _rows(path, "SELECT plugin_name, typeof(state), state FROM plugin_state") == [
        ("echo", "text", '{"count":3}')]
    assert _rows(path, "SELECT id, accumulated_json FROM event_context") == [
        ("ctx-1", '{"baggage":{"n":7}}')]
    assert _rows(path, "SELECT id, fact_json FROM plugin_facts") == [("fact-1", '{"k":"v"}')]
    assert _rows(path, "SELECT id, sanitized_config FROM config_snapshots") == [
        ("cfg-1", '{"service":{}}')]
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]

    [backup] = _backups(tmp_path)
    assert BACKUP.fullmatch(backup.name) and str(backup) == migrated.backup_path
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert _version(backup) == 0
    assert _rows(backup, "SELECT id, typeof(payload), payload FROM job_queue ORDER BY rowid")[0] \
        == ("job-int", "integer", 42)
    assert _rows(backup, "SELECT count(*) FROM job_transitions") == [(len(transitions),)]


async def test_a_migrated_database_has_exactly_the_schema_of_a_fresh_one(tmp_path: Path) -> None:
    old, fresh = tmp_path / "state.db", tmp_path / "fresh.db"
    build_v1_database(old)
    await _fresh(old)
    await _fresh(fresh)
    assert _schema(old) == _schema(fresh)
    assert "job_queue_fresh_idx" in _schema(old)["indexes"]  # type: ignore[operator]
    assert _version(old) == _version(fresh) == SCHEMA_VERSION


async def test_a_fresh_database_gets_the_current_version_and_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = await Database.open(str(path))
    await db.close()
    assert db.migration is None
    assert _version(path) == SCHEMA_VERSION
    assert _backups(tmp_path) == []
    db = await Database.open(str(path))  # current: reopened without a migration or a backup
    await db.close()
    assert db.migration is None and _backups(tmp_path) == []


async def test_a_newer_database_is_refused_naming_both_versions_and_left_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    await _fresh(path)
    raw = _connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    before = path.read_bytes()
    expected = (f"state database {path} has schema version {SCHEMA_VERSION + 1} but this "
                f"ductile supports up to {SCHEMA_VERSION}: it was written by a newer release; "
                "upgrade ductile or point state.path at another file")
    with pytest.raises(SchemaTooNew) as caught:
        await Database.open(str(path))
    assert str(caught.value) == expected
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]  # no backup, no -wal
    with pytest.raises(SchemaTooNew, match="written by a newer release"):
        open_readonly(str(path))
    assert path.read_bytes() == before


def _explode(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM job_queue")
    conn.execute("CREATE TABLE half_done (x)")
    raise RuntimeError("disk on fire")


FAILING = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "a step that fails", _explode))


def test_a_failing_step_rolls_back_every_step_and_removes_the_backup(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    before = path.read_bytes()
    conn = _connect(path)
    try:
        with pytest.raises(MigrationFailed) as caught:
            migrate(conn, str(path), FAILING)
        assert not conn.in_transaction
    finally:
        conn.close()
    message = str(caught.value)
    assert f"step {SCHEMA_VERSION + 1} (a step that fails): disk on fire" in message
    assert str(path) in message and "the file is unchanged (still version 1)" in message
    assert path.read_bytes() == before
    assert _version(path) == 0
    assert _rows(path, "SELECT typeof(payload) FROM job_queue WHERE id = 'job-int'") == [
        ("integer",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


async def test_a_failing_migration_refuses_the_open_and_leaves_the_file_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    before = path.read_bytes()
    with pytest.raises(MigrationFailed, match="disk on fire"):
        await Database.open(str(path), migrations=FAILING)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_a_write_between_the_backup_snapshot_and_the_migration_fails_cleanly(
    tmp_path: Path,
) -> None:
    """The backup is what gets migrated: another process committing after the snapshot began
    makes the migration fail instead of migrating a file the backup does not match."""
    path = tmp_path / "state.db"
    build_v1_database(path)

    def clock_that_lets_another_process_write() -> datetime:
        other = _connect(path)
        other.execute("INSERT INTO plugin_state (plugin_name, state) VALUES ('late', '{}')")
        other.close()
        return datetime(2026, 3, 1, tzinfo=timezone.utc)

    conn = _connect(path)
    try:
        with pytest.raises(MigrationFailed, match="another process wrote to or locked the file"):
            migrate(conn, str(path), clock=clock_that_lets_another_process_write)
    finally:
        conn.close()
    assert _version(path) == 0
    assert _rows(path, "SELECT count(*) FROM plugin_state") == [(2,)]
    assert _backups(tmp_path) == []


def test_a_file_sqlite_cannot_write_is_not_migrated_and_the_reason_says_so(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        with pytest.raises(MigrationFailed, match="the file is not writable"):
            migrate(conn, str(path))
    finally:
        conn.close()
    assert _version(path) == 0 and _backups(tmp_path) == []


def test_the_step_list_must_be_consecutive_from_version_2(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    conn = _connect(path)
    try:
        gap = MIGRATIONS[-1].version + 2
        wanted = ", ".join(str(v) for v in range(2, gap))
        got = ", ".join(str(m.version) for m in MIGRATIONS) + f", {gap}"
        with pytest.raises(ValueError, match=rf"must be \[{wanted}\], got \[{got}\]"):
            migrate(conn, str(path), (*MIGRATIONS, Migration(gap, "gap", lambda c: None)))
    finally:
        conn.close()


async def test_a_foreign_database_is_not_migrated_or_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = _connect(path)
    raw.execute("CREATE TABLE notes (body TEXT)")
    raw.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="required table job_queue is missing"):
        await Database.open(str(path))
    assert path.read_bytes() == before and _backups(tmp_path) == []


def test_a_reader_never_migrates_and_says_to_start_the_gateway_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    build_v1_database(path)
    before = path.read_bytes()
    with pytest.raises(SchemaOutdated) as caught:
        open_readonly(str(path))
    assert str(caught.value) == (
        f"state database {path} has schema version 1 but this ductile needs version "
        f"{SCHEMA_VERSION}: start the gateway once (ductile system start) to migrate it (it "
        "keeps a backup beside the file), then run this command again")
    assert path.read_bytes() == before


def test_numbers_become_the_json_text_that_reads_back_as_the_same_number() -> None:
    assert json_number_text(42) == "42"
    assert json_number_text(-(2**63)) == str(-(2**63))
    assert json_number_text(0.30000000000000004) == "0.30000000000000004"  # CAST keeps 15 digits
    assert json_number_text(1e22) == "1e+22"
    assert json_number_text(float("inf")) == "1e999"
    assert json_number_text(float("-inf")) == "-1e999"


def test_a_rebuilt_table_keeps_rowids_indexes_triggers_and_its_autoincrement_counter(
    tmp_path: Path,
) -> None:
    conn = _connect(tmp_path / "t.db")
    try:
        conn.executescript("""
            CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, doc JSON NOT NULL, tag TEXT);
            CREATE INDEX t_tag_idx ON t (tag) WHERE tag IS NOT NULL;
            CREATE TABLE audit (n INTEGER);
            CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.id); END;
            INSERT INTO t (doc, tag) VALUES ('7', 'a'), ('[1]', NULL), ('2.5', 'c');
            DELETE FROM t WHERE id = 3;
        """)
        conn.execute("BEGIN")
        retype_columns(conn, "t", ["doc"], "TEXT")
        conn.execute("COMMIT")
        assert [tuple(r) for r in conn.execute("SELECT id, typeof(doc), doc FROM t")] == [
            (1, "text", "7"), (2, "text", "[1]")]
        assert [tuple(r)[2] for r in conn.execute("PRAGMA table_info(t)")] == [
            "INTEGER", "TEXT", "TEXT"]
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name='t'")} \
            == {"t", "t_tag_idx", "t_audit"}
        conn.execute("INSERT INTO t (doc) VALUES ('{}')")
        assert conn.execute("SELECT max(id) FROM t").fetchone()[0] == 4  # not 3: counter kept
        assert conn.execute("SELECT max(n) FROM audit").fetchone()[0] == 4
    finally:
        conn.close()


def test_a_number_in_a_json_column_is_a_store_error_never_a_type_error(tmp_path: Path) -> None:
    job = Job(id="j", plugin="echo", command="poll", payload=42,  # type: ignore[arg-type]
              status="queued", attempt=1, max_attempts=4, submitted_by="api", dedupe_key=None,
              created_at="2026-03-01T12:00:00.000000Z", started_at=None, completed_at=None,
              next_retry_at=None, last_error=None, parent_job_id=None, source_event_id=None,
              event_context_id=None, enqueued_config_snapshot_id=None,
              started_config_snapshot_id=None)
    with pytest.raises(StoreError, match="job j: stored payload is stored as an SQLite integer"):
        job.payload_obj()
    with pytest.raises(StoreError, match="plugin echo: stored state is stored as an SQLite real"):
        load_stored_object(1.5, "plugin echo: stored state")
    with pytest.raises(StoreError, match="stored as an SQLite blob"):
        load_stored_object(b'{"a":1}', "fact f: stored fact_json")
    path = tmp_path / "state.db"
    build_v1_database(path)
    conn = _connect(path)
    conn.row_factory = sqlite3.Row
    conn.execute("UPDATE config_snapshots SET semantics = 42")
    try:
        with pytest.raises(StoreError, match="config snapshot cfg-1: semantics is stored as"):
            fetch_snapshot(conn, "cfg-1")
    finally:
        conn.close()
