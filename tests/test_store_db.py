"""The database layer: opening, the one writer with group commit, reads, close, refusals."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from ductile.errors import SchemaMismatch, StoreError
from ductile.store.db import (
    Database,
    check_local_filesystem,
    filesystem_type,
    is_network_filesystem,
    open_readonly,
    required_schema,
)

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /mnt/share rw,relatime shared:9 - nfs4 server:/export rw,vers=4.2
31 22 0:41 / /mnt/my\\040files rw - cifs //host/files rw
32 22 0:42 / /srv/dav rw - fuse.davfs http://host/dav rw
33 30 0:43 / /mnt/share/local rw - tmpfs tmpfs rw
"""


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(str(tmp_path / "state" / "ductile.db"))
    await database.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
    yield database
    await database.close()


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_open_creates_the_directory_0700_and_applies_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "ductile.db"
    database = await Database.open(str(path))
    try:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        tables = await database.read(
            lambda conn: {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        )
        assert set(required_schema()) <= tables
        mode = await database.read(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
        fks = await database.write(lambda conn: conn.execute("PRAGMA foreign_keys").fetchone()[0])
        assert fks == 1
    finally:
        await database.close()


async def test_an_existing_sound_database_reopens(tmp_path: Path) -> None:
    path = str(tmp_path / "ductile.db")
    first = await Database.open(path)
    await first.write(
        lambda conn: conn.execute(
            "INSERT INTO plugin_state (plugin_name, state) VALUES ('echo', '{}')"
        )
    )
    await first.close()
    second = await Database.open(path)
    try:
        rows = await second.read(lambda conn: conn.execute("SELECT * FROM plugin_state").fetchall())
        assert [r["plugin_name"] for r in rows] == ["echo"]
    finally:
        await second.close()


async def test_a_database_missing_a_table_is_refused_naming_the_table(tmp_path: Path) -> None:
    path = str(tmp_path / "ductile.db")
    await (await Database.open(path)).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE plugin_facts")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaMismatch, match=r"required table plugin_facts is missing"):
        await Database.open(path)


async def test_a_foreign_database_is_refused_naming_the_first_missing_table(tmp_path: Path) -> None:
    path = str(tmp_path / "other.db")
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (body TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaMismatch, match=r"table job_queue is missing"):
        await Database.open(path)


async def test_a_database_missing_a_column_is_refused_naming_table_and_column(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "ductile.db")
    await (await Database.open(path)).close()
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE job_attempts DROP COLUMN stderr_tail")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaMismatch, match=r"table job_attempts lacks column stderr_tail"):
        await Database.open(path)


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        await Database.open(str(path))


async def test_writes_commit_and_reads_see_them(db: Database) -> None:
    await db.write(lambda conn: conn.execute("INSERT INTO t (n) VALUES (1)"))
    assert await db.read(_count) == 1


async def test_a_failing_write_rolls_back_only_its_own_work(db: Database) -> None:
    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (n) VALUES (5)")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await db.write(insert_then_fail)
    await db.write(lambda conn: conn.execute("INSERT INTO t (n) VALUES (6)"))
    assert await db.read(lambda conn: [r[0] for r in conn.execute("SELECT n FROM t")]) == [6]


async def test_a_sqlite_error_in_a_write_becomes_a_store_error(db: Database) -> None:
    await db.write(lambda conn: conn.execute("INSERT INTO t (n) VALUES (1)"))
    with pytest.raises(StoreError, match="UNIQUE constraint failed") as info:
        await db.write(lambda conn: conn.execute("INSERT INTO t (n) VALUES (1)"))
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)


async def test_200_concurrent_writers_commit_together_and_only_failures_roll_back(
    db: Database,
) -> None:
    release = threading.Event()
    outcomes: dict[int, object] = {}

    def hold_the_writer(conn: sqlite3.Connection) -> None:
        release.wait(timeout=10)

    def writer(n: int):
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
            if n % 7 == 0:
                raise ValueError(f"writer {n} fails")
            return n * 10

        return fn

    async def run(n: int) -> None:
        try:
            outcomes[n] = await db.write(writer(n))
        except ValueError as exc:
            outcomes[n] = exc

    before = db.write_stats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.write, hold_the_writer)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, 201):
            nursery.start_soon(run, n)
        await trio.testing.wait_all_tasks_blocked()
        release.set()

    failing = {n for n in range(1, 201) if n % 7 == 0}
    assert {n for n, o in outcomes.items() if isinstance(o, ValueError)} == failing
    assert all(outcomes[n] == n * 10 for n in range(1, 201) if n not in failing)
    stored = await db.read(lambda conn: {r[0] for r in conn.execute("SELECT n FROM t")})
    assert stored == set(range(1, 201)) - failing
    commits, writes = (a - b for a, b in zip(db.write_stats(), before))
    assert writes == 201
    assert commits <= 3  # the held write, then the 200 waiting ones in one or two batches


async def test_a_cancelled_writer_still_gets_its_write_committed(db: Database) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(timeout=10)
        conn.execute("INSERT INTO t (n) VALUES (42)")

    with trio.move_on_after(0.05) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.write, slow)
            await trio.to_thread.run_sync(started.wait)
            try:
                await trio.sleep(5)  # the deadline passes while the write is in flight
            finally:
                release.set()
    assert scope.cancelled_caught
    assert await db.read(_count) == 1


async def test_writes_from_several_tasks_interleave_with_reads(db: Database) -> None:
    async def write_some(base: int) -> None:
        for i in range(20):
            await db.write(lambda conn, n=base + i: conn.execute("INSERT INTO t VALUES (?)", (n,)))
            await db.read(_count)

    async with trio.open_nursery() as nursery:
        for base in range(0, 100, 20):
            nursery.start_soon(write_some, base)
    assert await db.read(_count) == 100


async def test_reads_cannot_write(db: Database) -> None:
    with pytest.raises(StoreError, match="readonly"):
        await db.read(lambda conn: conn.execute("INSERT INTO t (n) VALUES (1)"))


async def test_write_and_read_after_close_raise_store_error(tmp_path: Path) -> None:
    path = str(tmp_path / "ductile.db")
    database = await Database.open(path)
    await database.close()
    await database.close()  # idempotent
    assert database.closed
    with pytest.raises(StoreError, match=r"is closed: cannot write"):
        await database.write(lambda conn: None)
    with pytest.raises(StoreError, match=r"is closed: cannot read"):
        await database.read(lambda conn: None)


async def test_close_commits_writes_already_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "ductile.db")
    database = await Database.open(path)
    await database.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(
                database.write, lambda conn, n=n: conn.execute("INSERT INTO t VALUES (?)", (n,))
            )
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(database.close)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    finally:
        raw.close()


async def test_open_readonly_reads_beside_a_running_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "ductile.db")
    database = await Database.open(path)
    try:
        await database.write(
            lambda conn: conn.execute(
                "INSERT INTO plugin_state (plugin_name, state) VALUES ('echo', '{}')"
            )
        )
        conn = open_readonly(path)
        try:
            row = conn.execute("SELECT plugin_name FROM plugin_state").fetchone()
            assert row["plugin_name"] == "echo"
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                conn.execute("DELETE FROM plugin_state")
        finally:
            conn.close()
    finally:
        await database.close()


def test_open_readonly_of_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreError, match=r"nope\.db does not exist"):
        open_readonly(str(missing))
    assert not missing.exists()


def test_open_readonly_checks_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (body TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaMismatch, match="job_queue"):
        open_readonly(str(path))


def test_filesystem_type_picks_the_deepest_mount_containing_the_path() -> None:
    assert filesystem_type("/var/lib/ductile", MOUNTINFO) == "ext4"
    assert filesystem_type("/mnt/share", MOUNTINFO) == "nfs4"
    assert filesystem_type("/mnt/share/db", MOUNTINFO) == "nfs4"
    assert filesystem_type("/mnt/shared/db", MOUNTINFO) == "ext4"
    assert filesystem_type("/mnt/share/local/db", MOUNTINFO) == "tmpfs"
    assert filesystem_type("/mnt/my files/db", MOUNTINFO) == "cifs"
    assert filesystem_type("/srv/dav/x", MOUNTINFO) == "fuse.davfs"


def test_network_filesystems_are_recognised() -> None:
    for fstype in ("nfs", "nfs4", "cifs", "smbfs", "smb2", "afpfs", "webdav", "fuse.davfs"):
        assert is_network_filesystem(fstype), fstype
    for fstype in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"):
        assert not is_network_filesystem(fstype), fstype


def test_a_database_on_nfs_is_refused_naming_the_path() -> None:
    with pytest.raises(StoreError, match=r"/mnt/share/state/ductile\.db is on a network .*nfs4"):
        check_local_filesystem("/mnt/share/state/ductile.db", MOUNTINFO)
    check_local_filesystem("/var/lib/ductile/ductile.db", MOUNTINFO)
    check_local_filesystem("/mnt/share/state/ductile.db", None)  # no mountinfo: not Linux


async def test_read_point_runs_on_the_loop_and_sees_committed_writes(db: Database) -> None:
    await db.write(lambda conn: conn.execute(
        "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES ('p', '{}', 'now')"))
    loop_thread = threading.get_ident()

    def read(conn: sqlite3.Connection) -> tuple[int, str]:
        row = conn.execute("SELECT state FROM plugin_state WHERE plugin_name = 'p'").fetchone()
        return threading.get_ident(), row[0]

    assert await db.read_point(read) == (loop_thread, "{}")
    thread, state = await db.read(read)
    assert state == "{}" and thread != loop_thread


async def test_a_busy_point_read_is_retried_in_a_reader_thread(db: Database) -> None:
    """When SQLite answers a point read busy (its busy timeout is 0 on the loop, so it never
    waits there), the same read runs again in a reader thread, which may wait."""
    loop_thread = threading.get_ident()
    seen: list[bool] = []

    def count(conn: sqlite3.Connection) -> int:
        on_loop = threading.get_ident() == loop_thread
        seen.append(on_loop)
        if on_loop:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = 5  # type: ignore[attr-defined] - SQLITE_BUSY
            raise busy
        return int(conn.execute("SELECT count(*) FROM plugin_state").fetchone()[0])

    assert await db.read_point(count) == 0
    assert seen == [True, False]
    timeout = db._point.execute("PRAGMA busy_timeout").fetchone()[0]  # noqa: SLF001
    assert timeout == 0


async def test_read_point_refuses_after_close(tmp_path: Path) -> None:
    database = await Database.open(str(tmp_path / "closed.db"))
    await database.close()
    with pytest.raises(StoreError, match="closed"):
        await database.read_point(lambda conn: 1)
