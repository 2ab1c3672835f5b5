"""The SQLite database: one writer thread with group commit, a small pool of readers.

Long (about 650 lines) on purpose: the writer thread, its group commit, the readers, the file
checks and opening with migration share one discipline about who may touch the file when, and
it is easier to keep right when it reads in one place.

Why one writer. SQLite allows one writer at a time; a second connection that tries to write
waits on `busy_timeout` and a deferred transaction that upgrades to a write fails at once with
"database is locked". Funnelling every write through one connection owned by one thread removes
both failure modes inside the process, and `BEGIN IMMEDIATE` takes the write lock up front so
another process (the CLI) can only make us wait, never fail half-way.

Why group commit. A durable commit costs about 37 µs on the writer thread, but a
`trio.to_thread` hop per write costs about 180 µs. So a write is not a hop: `write(fn)` puts
`fn` on a queue and parks the calling trio task. The writer thread takes every request waiting
on the queue, runs each inside its own SAVEPOINT within one `BEGIN IMMEDIATE .. COMMIT`, and
wakes each caller with `TrioToken.run_sync_soon(reschedule, ...)` once the batch has committed.
A request whose `fn` raises rolls back to its savepoint only; its caller gets the exception and
the rest of the batch commits. Under load many writes share one commit; when idle a write is
committed alone, at once.

A submitted write cannot be abandoned: it may already have committed, so a cancelled caller
still waits for the outcome (the cancellation is delivered at its next checkpoint). A write
never waits longer than `busy_timeout` for the lock.

Reads use their own connections (WAL lets them see every committed write without blocking the
writer) through `trio.to_thread.run_sync`, bounded by a `CapacityLimiter`; each read runs in one
read transaction, so a function doing several SELECTs sees one consistent snapshot. A point read
(a job by id, its attempts, its links: `read_point`) runs on the event-loop thread instead, on
one more connection whose busy timeout is 0: it takes tens of microseconds, less than the hop
would, and in the rare case SQLite says it would have to wait it goes to a reader thread.
"""

from __future__ import annotations

import os
import queue
import re
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Sequence, TypeVar

import outcome
import trio

from ductile.errors import (
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from ductile.store.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migrated,
    Migration,
    is_ours,
    migrate,
    stored_version,
    target_version,
)

T = TypeVar("T")

#: Filesystem types (the third-from-last field group of /proc/self/mountinfo) on which SQLite's
#: POSIX locks and the WAL shared-memory file are unreliable.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb2", "smb3", "afpfs", "webdav", "davfs"}
)

BUSY_TIMEOUT_MS = 5000
_MAX_BATCH = 256
_SAVEPOINT = "ductile_write"
_MOUNTINFO = "/proc/self/mountinfo"


class Database:
    """The open database: `write` funnels into the writer thread, `read` uses the pool.

    Build it with `await Database.open(path)`; close it with `await db.close()`.
    """

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection,
        readers: list[sqlite3.Connection],
        migration: Migrated | None = None,
    ) -> None:
        self.path = path
        #: What opening this database migrated (None when it was already current or new).
        self.migration = migration
        self._closed = False
        # [transactions committed, write functions run]; only the writer thread updates it.
        self._stats = [0, 0]
        self._requests: queue.SimpleQueue[_WriteRequest | None] = queue.SimpleQueue()
        self._writer_conn = writer
        # The last reader serves read_point on the event-loop thread; it never waits for a
        # lock (busy_timeout 0): a read that would wait goes to a reader thread instead.
        self._point = readers[-1] if len(readers) > 1 else None
        if self._point is not None:
            self._point.execute("PRAGMA busy_timeout=0")
            readers = readers[:-1]
        self._readers = readers
        self._all_readers = tuple(readers)
        self._read_limiter = trio.CapacityLimiter(len(readers))
        self._writer = threading.Thread(
            target=self._writer_main, name=f"ductile-sqlite-writer:{path}", daemon=True
        )
        self._writer.start()

    @classmethod
    async def open(
        cls, path: str, *, readers: int = 2, migrations: Sequence[Migration] = MIGRATIONS
    ) -> Database:
        """Open (creating if needed) the database at `path`.

        Refuses a network filesystem, applies schema.sql to an empty database, migrates an
        older one to the newest version of `migrations` (backing it up beside itself first; see
        ductile/store/migrations.py), refuses a newer one (SchemaTooNew) and checks the result
        for every table and column we need (SchemaMismatch names the first gap). `migration`
        on the result says what was migrated.
        """
        if readers < 1:
            raise StoreError(f"database {path}: need at least one reader connection")
        full = os.path.abspath(path)
        # One more reader than asked: the last is the point-read connection (read_point).
        writer, pool, migrated = await trio.to_thread.run_sync(
            _open_connections, full, readers + 1, migrations
        )
        return cls(full, writer, pool, migrated)

    @property
    def closed(self) -> bool:
        """True once `close()` was called; every later read or write raises StoreError."""
        return self._closed

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the writer thread inside a write transaction; return its result.

        The transaction is committed before this returns. If `fn` raises, only its own work is
        rolled back and the exception is re-raised here (a `sqlite3.Error` as StoreError).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refuse_if_closed("write")
        request = _WriteRequest(
            fn=fn,
            token=trio.lowlevel.current_trio_token(),
            task=trio.lowlevel.current_task(),
        )
        self._requests.put(request)
        result: T = await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one read transaction on a reader connection, in a worker thread."""
        self._refuse_if_closed("read")
        async with self._read_limiter:
            self._refuse_if_closed("read")
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(_run_read, self.path, conn, fn)
            finally:
                self._readers.append(conn)

    async def read_point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a small read (a few rows found by key) on the calling thread, the event loop's.

        Why not a thread: a hop to a reader thread and back costs about 150 µs of CPU and
        more of latency (a GIL hand-off and a wake-up each way), while a point read in WAL
        mode takes tens of microseconds and never waits for the writer. Only if the read
        would have to wait for a lock (SQLite's busy cases: another process recovering the
        WAL, say) does it fall back to `read`, in a reader thread, so the loop never blocks
        on a lock. Use it for lookups by primary key or a narrow index, never for scans.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refuse_if_closed("read")
        point = self._point
        if point is None or point.in_transaction:
            return await self.read(fn)
        try:
            result = _run_read(self.path, point, fn)
        except StoreUnavailable:
            return await self.read(fn)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    async def close(self) -> None:
        """Commit what is queued, run PRAGMA optimize, stop the writer, close every connection.

        Idempotent. Reads and writes started after this raise StoreError.
        """
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        await trio.to_thread.run_sync(self._writer.join)
        borrowers = [object() for _ in self._all_readers]
        for borrower in borrowers:
            await self._read_limiter.acquire_on_behalf_of(borrower)
        for conn in self._all_readers:
            conn.close()
        if self._point is not None:
            self._point.close()
        for borrower in borrowers:
            self._read_limiter.release_on_behalf_of(borrower)

    def write_stats(self) -> tuple[int, int]:
        """(write transactions committed, write functions run): their ratio is the batch size
        group commit achieved (for benchmarks and tests)."""
        return self._stats[0], self._stats[1]

    def _refuse_if_closed(self, what: str) -> None:
        if self._closed:
            raise StoreError(f"database {self.path} is closed: cannot {what}")

    # -- the writer thread ----------------------------------------------------------------

    def _writer_main(self) -> None:
        """Serve batches of write requests until the stop marker (None) arrives."""
        while True:
            batch, stop = _drain(self._requests)
            if batch:
                self._serve(batch)
            if stop:
                break
        try:
            self._writer_conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass  # an optimisation hint; a failure must not block shutdown
        self._writer_conn.close()

    def _serve(self, batch: list[_WriteRequest]) -> None:
        """Run one batch and wake every caller; a bug here fails the batch, not the thread."""
        try:
            results = _run_batch(self._writer_conn, self.path, batch, self._stats)
        except Exception as exc:  # noqa: BLE001 - the thread must survive to serve the next batch
            _rollback_quietly(self._writer_conn)
            results = [
                (req, outcome.Error(_store_error(self.path, "write batch failed", exc)))
                for req in batch
            ]
        for request, result in results:
            _deliver(request, result)


@dataclass(frozen=True)
class _WriteRequest:
    """A write waiting for the writer thread, and who to wake with its outcome."""

    fn: Callable[[sqlite3.Connection], Any]
    token: trio.lowlevel.TrioToken
    task: trio.lowlevel.Task


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    """A submitted write may already be committed, so its caller waits for the outcome."""
    return trio.lowlevel.Abort.FAILED


def _drain(requests: queue.SimpleQueue[_WriteRequest | None]) -> tuple[list[_WriteRequest], bool]:
    """Block for one request, then take whatever else is already waiting (the group)."""
    first = requests.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < _MAX_BATCH:
        try:
            item = requests.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def _run_batch(
    conn: sqlite3.Connection, path: str, batch: list[_WriteRequest], stats: list[int]
) -> list[tuple[_WriteRequest, outcome.Outcome]]:
    """Run each request in its own savepoint inside one transaction, then commit once.

    If the transaction itself ends early (SQLite aborts it on a full disk or I/O error, or a
    function commits on its own), the outcome of the requests already run in it is unknown;
    they are reported as failed and a new transaction is begun for the rest.
    """
    done: list[tuple[_WriteRequest, outcome.Outcome]] = []
    pending: list[tuple[_WriteRequest, outcome.Outcome]] = []
    for request in batch:
        if not conn.in_transaction:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                done.append((request, outcome.Error(_store_error(path, "cannot begin write", exc))))
                continue
        result = _run_in_savepoint(conn, path, request.fn)
        stats[1] += 1
        if conn.in_transaction:
            pending.append((request, result))
            continue
        done.extend(_as_lost(path, pending + [(request, result)]))
        pending = []
    if pending:
        try:
            conn.execute("COMMIT")
            stats[0] += 1
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            pending = [
                (req, res if isinstance(res, outcome.Error) else
                 outcome.Error(_store_error(path, "commit failed", exc)))
                for req, res in pending
            ]
        done.extend(pending)
    return done


def _run_in_savepoint(
    conn: sqlite3.Connection, path: str, fn: Callable[[sqlite3.Connection], Any]
) -> outcome.Outcome:
    """Run `fn` so that a failure undoes only its own statements."""
    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
    result = outcome.capture(fn, conn)
    try:
        if isinstance(result, outcome.Error):
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
        conn.execute(f"RELEASE {_SAVEPOINT}")
    except sqlite3.Error:
        pass  # the transaction is gone; _run_batch notices via conn.in_transaction
    if isinstance(result, outcome.Error) and isinstance(result.error, sqlite3.Error):
        return outcome.Error(_store_error(path, "write failed", result.error))
    return result


def _as_lost(
    path: str, results: list[tuple[_WriteRequest, outcome.Outcome]]
) -> list[tuple[_WriteRequest, outcome.Outcome]]:
    """Mark results whose transaction ended under them as failed (keeping real errors)."""
    return [
        (req, res if isinstance(res, outcome.Error) else outcome.Error(StoreError(
            f"database {path}: the write transaction ended before commit "
            "(SQLite aborted it, or a write function committed or rolled back itself); "
            "this write's outcome is unknown"
        )))
        for req, res in results
    ]


def _deliver(request: _WriteRequest, result: outcome.Outcome) -> None:
    """Wake the parked trio task with its outcome (from the writer thread)."""
    try:
        request.token.run_sync_soon(trio.lowlevel.reschedule, request.task, result)
    except trio.RunFinishedError:
        pass  # the caller's trio run is gone; nobody is waiting


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _run_read(path: str, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """One read transaction (a consistent snapshot) around `fn`, in a worker thread."""
    try:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise _store_error(path, "read failed", exc) from exc


# SQLite primary result codes that describe the medium, not the request: the same write can
# succeed later (space freed, lock released, permissions restored).
_TRANSIENT_CODES = {
    5: "busy",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "read-only",  # SQLITE_READONLY
    10: "I/O error",  # SQLITE_IOERR
    13: "disk full",  # SQLITE_FULL
    14: "cannot open",  # SQLITE_CANTOPEN
}


def _store_error(path: str, what: str, exc: BaseException) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    kind = StoreUnavailable if code is not None and (code & 0xFF) in _TRANSIENT_CODES else StoreError
    error = kind(f"database {path}: {what}: {exc}")
    error.__cause__ = exc
    return error


# -- opening ------------------------------------------------------------------------------


def open_readonly(path: str) -> sqlite3.Connection:
    """Open the database read-only (`mode=ro`) for the CLI, which may run beside the daemon.

    The schema is checked so an old or foreign file gives SchemaMismatch, not "no such table":
    an older schema version is SchemaOutdated (start the gateway once: it migrates), a newer
    one SchemaTooNew. A reader never migrates.
    """
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise StoreError(f"database {full} does not exist (is state.path right?)")
    uri = "file:" + urllib.parse.quote(full) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.Error as exc:
        raise _store_error(full, "cannot open read-only", exc) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        verify_schema(conn, full)
    except sqlite3.Error as exc:
        conn.close()
        raise _store_error(full, "cannot read", exc) from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _open_connections(
    path: str, readers: int, migrations: Sequence[Migration]
) -> tuple[sqlite3.Connection, list[sqlite3.Connection], Migrated | None]:
    """Blocking part of `Database.open` (runs in a worker thread).

    The schema comes before the switch to WAL: a database that is refused (too new, foreign, a
    failed migration) is left byte for byte as it was.
    """
    _make_parent(path)
    check_local_filesystem(path, _read_mountinfo())
    opened: list[sqlite3.Connection] = []
    try:
        writer = _connect(path)
        opened.append(writer)
        migrated = _ensure_schema(writer, path, migrations)
        _configure_writer(writer, path)
        _check_writable(writer, path)
        for _ in range(readers):
            reader = _connect(path)
            opened.append(reader)
            reader.execute("PRAGMA query_only=ON")
        return writer, opened[1:], migrated
    except sqlite3.Error as exc:
        for conn in opened:
            conn.close()
        raise _store_error(path, "cannot open", exc) from exc
    except BaseException:
        for conn in opened:
            conn.close()
        raise


def _check_writable(conn: sqlite3.Connection, path: str) -> None:
    """Refuse at boot, naming the file, when SQLite can read but not write it (a read-only
    file or mount): otherwise the first job would find out. The probe is rolled back."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE _ductile_write_probe (x)")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise StoreError(
            f"database {path} is not writable: {exc}; make the file, its -wal/-shm files and "
            "its directory writable by the gateway's user"
        ) from exc


def _make_parent(path: str) -> None:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"database {path}: cannot create directory {parent}: {exc}") from exc


def _connect(path: str) -> sqlite3.Connection:
    """A connection in manual transaction mode (we issue BEGIN ourselves), usable from any
    thread (each one is only ever used by one thread at a time)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _configure_writer(conn: sqlite3.Connection, path: str) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"database {path}: cannot switch to WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=NORMAL")


def _ensure_schema(
    conn: sqlite3.Connection, path: str, migrations: Sequence[Migration]
) -> Migrated | None:
    """Apply schema.sql to an empty database (at the newest version); otherwise migrate it if
    it is older, then check it has what we need."""
    version = target_version(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        empty = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchone()[0] == 0
        conn.execute("COMMIT")
    except BaseException:
        _rollback_quietly(conn)
        raise
    if empty:
        conn.executescript("BEGIN IMMEDIATE;\n" + schema_sql()
                           + f"\nPRAGMA user_version = {int(version)};\nCOMMIT;")
        return None
    migrated = migrate(conn, path, migrations, verify=lambda c: verify_tables(c, path))
    verify_schema(conn, path, supported=version)
    return migrated


def schema_sql() -> str:
    """The text of schema.sql shipped in the package."""
    return (resources.files("ductile.store") / "schema.sql").read_text(encoding="utf-8")


def required_schema() -> dict[str, tuple[str, ...]]:
    """Every table schema.sql creates, with its columns: what an existing database must have.

    Derived from schema.sql itself (applied to an in-memory database) so the check can never
    drift from the schema.
    """
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(schema_sql())
        return _tables_and_columns(mem)
    finally:
        mem.close()


def verify_schema(
    conn: sqlite3.Connection, path: str, *, supported: int = SCHEMA_VERSION
) -> None:
    """Raise SchemaMismatch unless this code can use the database as it is: ours, at schema
    version `supported` (SchemaOutdated below it, SchemaTooNew above), with every table and
    column schema.sql declares (the first gap is named)."""
    if not is_ours(conn):
        verify_tables(conn, path)  # names the missing marker table, or a foreign file's first gap
    found = stored_version(conn)
    if found > supported:
        raise SchemaTooNew(path, found, supported)
    if found < supported:
        raise SchemaOutdated(path, found, supported)
    verify_tables(conn, path)


def verify_tables(conn: sqlite3.Connection, path: str) -> None:
    """Raise SchemaMismatch naming the first table or column of schema.sql that is missing."""
    present = _tables_and_columns(conn)
    for table, columns in required_schema().items():
        if table not in present:
            raise SchemaMismatch(
                f"database {path}: required table {table} is missing: it is not a ductile state "
                "database, or it was damaged; restore it from a backup, or move the file aside "
                "to start fresh (the expected schema is ductile/store/schema.sql)"
            )
        for column in columns:
            if column not in present[table]:
                raise SchemaMismatch(
                    f"database {path}: table {table} lacks column {column}: the file was damaged "
                    "or changed by hand; restore it from a backup, add the column (see "
                    "ductile/store/schema.sql) or move the file aside to start fresh"
                )


def _tables_and_columns(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        name: tuple(info[1] for info in conn.execute(f"PRAGMA table_info({_quote(name)})"))
        for name in names
    }


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# -- network filesystem refusal -----------------------------------------------------------


def check_local_filesystem(path: str, mountinfo: str | None) -> None:
    """Refuse a database on a network filesystem, where SQLite locking cannot be trusted.

    `mountinfo` is the text of /proc/self/mountinfo (None where there is none: not Linux).
    """
    if mountinfo is None:
        return
    fstype = filesystem_type(os.path.realpath(os.path.dirname(path)), mountinfo)
    if fstype is not None and is_network_filesystem(fstype):
        raise StoreError(
            f"database {path} is on a network filesystem ({fstype}); SQLite locking and WAL "
            f"are unreliable there: set state.path to a local disk"
        )


def is_network_filesystem(fstype: str) -> bool:
    """True for NFS, CIFS/SMB, AFP and WebDAV mounts (fuse mounts report `fuse.<name>`)."""
    name = fstype.lower()
    if name.startswith("fuse."):
        name = name[len("fuse."):]
    return name in NETWORK_FILESYSTEMS


def filesystem_type(path: str, mountinfo: str) -> str | None:
    """The filesystem type of the mount holding absolute `path`, per a mountinfo text.

    The deepest mount point containing `path` wins; of equal mount points the last listed
    wins (it is mounted over the earlier ones).
    """
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        entry = _parse_mountinfo_line(line)
        if entry is None:
            continue
        mount_point, fstype = entry
        if _contains(mount_point, path) and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fstype)
    return best[1] if best else None


def _parse_mountinfo_line(line: str) -> tuple[str, str] | None:
    """(mount point, fstype) from one line: `id parent maj:min root mount opts... - fstype src`."""
    fields, separator, tail = line.partition(" - ")
    parts = fields.split()
    rest = tail.split()
    if not separator or len(parts) < 5 or not rest:
        return None
    return _unescape(parts[4]), rest[0]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _read_mountinfo() -> str | None:
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return None
