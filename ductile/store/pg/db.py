"""The PostgreSQL database: a psycopg connection pool driven from trio worker threads.

Why threads and not psycopg's async API: psycopg's async connections run on asyncio, and the
gateway runs on trio. The sync API in a worker thread (`trio.to_thread.run_sync`, bounded by a
CapacityLimiter as large as the pool, so a thread never queues inside the pool) costs one thread
hop per operation, and a whole read or write function runs in that one hop: several statements,
one transaction.

Why one transaction per function: `write(fn)` commits when `fn` returns and rolls back when it
raises, so a queue operation is all-or-nothing, as on SQLite. `read(fn)` runs in a READ ONLY,
REPEATABLE READ transaction: every SELECT of `fn` sees one snapshot.

Errors are sorted by what the caller can do about them (`_classify`): the database being away,
busy or out of resources (connection lost, pool exhausted, lock_timeout, statement_timeout,
serialization failure, deadlock, disk full) is StoreUnavailable: nothing was written and the
same call may succeed later. Anything else the database refuses is StoreError with its message.
The one case that is neither is a connection lost during COMMIT: the server may have committed,
so that is a StoreError saying the outcome is unknown (the SQLite store says the same when a
transaction ends under a batch).

Waking on new work: `notify(conn, channel)` inside a write transaction is delivered at commit
only (a rolled-back write wakes nobody), and `listen(channel)` returns a Listener whose `wait()`
sleeps on its own connection's socket with `trio.lowlevel.wait_readable`: no polling, no thread.

psycopg is imported inside functions only (see ductile/store/pg/__init__.py).
"""

from __future__ import annotations

import collections
import functools
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import trio

from ductile.errors import DuctileError, StoreError, StoreUnavailable
from ductile.store.pg.migrations import PgMigrated, check_schema, ensure_schema

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

T = TypeVar("T")

#: The channel the queue NOTIFYs when a job becomes claimable.
JOBS_CHANNEL = "ductile_jobs"
#: The channel a terminal status change NOTIFYs, with the job id as payload.
ENDED_CHANNEL = "ductile_job_ended"
#: The channel an operator's cancel of a job a peer runs is sent on (JSON: job_id, reason).
CANCEL_CHANNEL = "ductile_job_cancel"

#: SQLSTATEs that describe the database's condition, not the request: nothing was written
#: and the same operation may succeed later.
_TRANSIENT_SQLSTATES = {
    "55P03": "a lock was not granted within lock_timeout",
    "57014": "the statement was cancelled (statement_timeout)",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "57P01": "the server terminated the connection (admin shutdown)",
    "57P02": "the server crashed",
    "57P03": "the server is starting up or shutting down",
}
#: Whole SQLSTATE classes of the same kind: 08 connection exception, 53 insufficient
#: resources (disk full, out of memory, too many connections), 58 system error (I/O).
_TRANSIENT_CLASSES = {"08", "53", "58"}

#: Listener reconnect back-off (seconds): first retry, cap.
_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 2.0


def _psycopg() -> Any:
    """Import psycopg and psycopg_pool, or say how to install them."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - imported here so a missing pool fails early too
    except ImportError as exc:
        raise StoreError(
            f"state.backend postgresql needs psycopg and psycopg-pool ({exc}); install them "
            "with: pip install 'ductile[postgresql]'"
        ) from exc
    return psycopg


def describe_dsn(dsn: str) -> str:
    """`postgresql://user@host:port/dbname` for messages: never the password, whatever form
    (URL or key=value) the DSN has. A DSN psycopg cannot parse is named only as unparsable."""
    psycopg = _psycopg()
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable DSN)"
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    where = f"{host}:{port}" if port else str(host)
    name = params.get("dbname") or user or ""
    return f"postgresql://{user + '@' if user else ''}{where}/{name}"


def with_password(dsn: str, password: str | None) -> str:
    """`dsn` with `password` added (the config's DSN never holds one: it comes from the
    vault), in libpq's own syntax, so quoting is the driver's business, not ours."""
    if not password:
        return dsn
    psycopg = _psycopg()
    return str(psycopg.conninfo.make_conninfo(dsn, password=password))


class PgDatabase:
    """An open PostgreSQL store: `write`/`read` run a function in one transaction on a pooled
    connection in a worker thread; `listen` wakes on NOTIFY.

    Build it with `await PgDatabase.open(dsn)`; close it with `await db.close()`.
    """

    def __init__(
        self,
        dsn: str,
        label: str,
        pool: psycopg_pool.ConnectionPool,
        pool_size: int,
        connect_timeout: float,
        migration: PgMigrated | None,
    ) -> None:
        self._dsn = dsn
        #: The database named for messages (no password), as `path` is for SQLite.
        self.label = label
        #: What opening migrated: None when the schema was already current.
        self.migration = migration
        self._pool = pool
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._limiter = trio.CapacityLimiter(pool_size)
        self._listeners: set[Listener] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 5000,
        lock_timeout_ms: int = 2000,
        idle_in_transaction_ms: int | None = None,
        migrate: bool = True,
    ) -> PgDatabase:
        """Connect, create or migrate the schema (under an advisory lock, so gateways booting
        at once migrate once), then fill a pool of `pool_size` connections.

        `idle_in_transaction_ms` (default: the statement timeout) bounds how long a session
        may sit idle inside a transaction before the server ends it (see `_configure`).

        `migrate=False` is the CLI's reader: it changes nothing and takes no lock, and a
        database without the current schema is refused (SchemaMismatch, SchemaOutdated).

        A database that cannot be reached is StoreUnavailable naming it; one whose schema is
        newer than this release SchemaTooNew; one holding foreign tables SchemaMismatch.
        """
        if pool_size < 1:
            raise StoreError("postgresql: pool_size must be at least 1")
        _psycopg()
        label = describe_dsn(dsn)
        pool, migration = await trio.to_thread.run_sync(
            functools.partial(
                _open_blocking, dsn, label, pool_size, connect_timeout,
                statement_timeout_ms, lock_timeout_ms, migrate,
                idle_in_transaction_ms or statement_timeout_ms,
            )
        )
        return cls(dsn, label, pool, pool_size, connect_timeout, migration)

    @property
    def closed(self) -> bool:
        """True once `close()` was called; every later read or write raises StoreError."""
        return self._closed

    async def write(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `fn(conn)` in one transaction in a worker thread, committed when it returns.

        A DuctileError raised by `fn` rolls back and propagates unchanged; database failures
        become StoreUnavailable (transient) or StoreError (see the module docstring). A
        cancelled caller still waits for the outcome: the transaction may be committing.
        """
        return await self._run(fn, read=False)

    async def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `fn(conn)` in one READ ONLY, REPEATABLE READ transaction (one snapshot)."""
        return await self._run(fn, read=True)

    async def read_point(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """The same as `read`: every PostgreSQL read is a round trip on a pooled connection,
        which must not block the event loop, so there is no cheaper path for a small one."""
        return await self.read(fn)

    async def listen(self, channel: str) -> Listener:
        """A Listener on `channel`, on its own connection (not from the pool)."""
        self._refuse_if_closed("listen")
        listener = Listener(self, channel)
        await listener._connect()
        self._listeners.add(listener)
        return listener

    async def close(self) -> None:
        """Close every listener, wait for running operations, close the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for listener in list(self._listeners):
            await listener.aclose()
        borrowers = [object() for _ in range(self._pool_size)]
        for borrower in borrowers:
            await self._limiter.acquire_on_behalf_of(borrower)
        try:
            await trio.to_thread.run_sync(functools.partial(self._pool.close, timeout=5.0))
        finally:
            for borrower in borrowers:
                self._limiter.release_on_behalf_of(borrower)

    async def _run(self, fn: Callable[[psycopg.Connection[Any]], T], *, read: bool) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        what = "read" if read else "write"
        self._refuse_if_closed(what)
        async with self._limiter:
            self._refuse_if_closed(what)
            return await trio.to_thread.run_sync(
                functools.partial(
                    _run_blocking, self._pool, self.label, self._connect_timeout, fn, read
                )
            )

    def _refuse_if_closed(self, what: str) -> None:
        if self._closed:
            raise StoreError(f"database {self.label} is closed: cannot {what}")


def notify(conn: psycopg.Connection[Any], channel: str, payload: str = "") -> None:
    """NOTIFY `channel` inside the caller's transaction: delivered when it commits, never if
    it rolls back (so a listener is woken only for work that exists)."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class Listener:
    """LISTEN on one channel over a dedicated autocommit connection.

    `await wait()` returns once at least one notification arrived since the previous wait
    (all pending ones are drained). After a lost connection it reconnects, LISTENs again and
    returns: notifications sent meanwhile are lost, so the caller must re-check its state
    after every wake (a spurious wake is harmless by design). One task waits on a listener at
    a time (trio refuses two waiters on one socket); open one listener per waiting task.
    """

    def __init__(self, db: PgDatabase, channel: str) -> None:
        self._db = db
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        #: Notifications drained so far, and the latest payloads (for tests and diagnostics).
        self.received = 0
        self.payloads: collections.deque[str] = collections.deque(maxlen=64)
        #: Connections re-established after a loss.
        self.reconnects = 0

    async def wait(self) -> None:
        """Sleep until a notification (or a reconnect) wakes us. StoreError once closed."""
        while True:
            if self._closed:
                raise StoreError(f"listener on {self._channel} ({self._db.label}) is closed")
            if self._conn is None:
                await self._reconnect()
                return
            if self._drain():
                return
            if self._conn is None:
                continue  # the drain found the connection lost
            try:
                await trio.lowlevel.wait_readable(self._conn.pgconn.socket)
            except trio.ClosedResourceError:
                return  # aclose() while waiting: wake; the next wait() says it is closed

    async def aclose(self) -> None:
        """Close the connection (waking a task blocked in `wait`). Idempotent."""
        self._closed = True
        self._db._listeners.discard(self)
        self._drop()

    def _drain(self) -> bool:
        """Read what the socket holds without blocking; True if a notification came."""
        assert self._conn is not None
        psycopg = _psycopg()
        pgconn = self._conn.pgconn
        got = 0
        try:
            pgconn.consume_input()
            while (note := pgconn.notifies()) is not None:
                got += 1
                self.payloads.append(note.extra.decode("utf-8", "replace"))
        except psycopg.Error:
            self._drop()
        self.received += got
        return got > 0

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            trio.lowlevel.notify_closing(conn.pgconn.socket)
        except Exception:  # noqa: BLE001 - the socket may already be gone; closing is enough
            pass
        conn.close()

    async def _connect(self) -> None:
        """Open the dedicated connection and LISTEN (in a worker thread)."""
        conn = await _connect_abandonable(
            functools.partial(
                _listen_blocking, self._db._dsn, self._db.label, self._db._connect_timeout,
                self._channel,
            )
        )
        if self._closed:
            conn.close()
            return
        self._conn = conn

    async def _reconnect(self) -> None:
        """Reconnect with back-off until it works (or the listener is closed)."""
        delay = _RECONNECT_FIRST
        while not self._closed:
            try:
                await self._connect()
            except StoreError:
                await trio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            self.reconnects += 1
            return


# -- the blocking halves (worker threads) ---------------------------------------------------------


def _connect_timeout_s(timeout: float) -> int:
    """libpq's connect_timeout is whole seconds (and at least 2)."""
    return max(2, math.ceil(timeout))


def _open_blocking(
    dsn: str,
    label: str,
    pool_size: int,
    connect_timeout: float,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    migrate: bool = True,
    idle_in_transaction_ms: int = 5000,
) -> tuple[psycopg_pool.ConnectionPool, PgMigrated | None]:
    """Migrate on a dedicated connection (its errors are precise: a wrong password says so,
    where a pool would only time out), then open the pool."""
    psycopg = _psycopg()
    import psycopg_pool
    from psycopg.rows import dict_row

    conn = _connect(dsn, label, connect_timeout, autocommit=True)
    try:
        if migrate:
            migration = ensure_schema(conn, label)
        else:
            migration = None
            check_schema(conn, label)
    except psycopg.Error as exc:
        raise _classify(label, "cannot prepare the schema", exc) from exc
    finally:
        conn.close()
    pool = psycopg_pool.ConnectionPool(
        dsn,
        kwargs={
            "row_factory": dict_row,
            "autocommit": False,
            "connect_timeout": _connect_timeout_s(connect_timeout),
        },
        min_size=pool_size,
        max_size=pool_size,
        open=False,
        configure=functools.partial(
            _configure, statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms,
            idle_in_transaction_ms=idle_in_transaction_ms,
        ),
        reset=_reset,
        name=f"ductile {label}",
        timeout=connect_timeout,
    )
    try:
        pool.open(wait=True, timeout=connect_timeout)
    except psycopg.Error as exc:
        pool.close()
        raise StoreUnavailable(
            f"{label}: cannot fill the pool of {pool_size} connections within "
            f"{connect_timeout:g}s ({exc}); check max_connections on the server"
        ) from exc
    return pool, migration


def _connect(
    dsn: str, label: str, connect_timeout: float, *, autocommit: bool
) -> psycopg.Connection[Any]:
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=_connect_timeout_s(connect_timeout),
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"{label}: cannot connect: {_message(exc)}; check the DSN, that the server is "
            "running and that it accepts this user"
        ) from exc


def _configure(
    conn: psycopg.Connection[Any], *, statement_timeout_ms: int, lock_timeout_ms: int,
    idle_in_transaction_ms: int,
) -> None:
    """Per connection, once: bound how long a statement may run and wait for a row lock, so a
    stuck peer or a long lock makes a write fail (StoreUnavailable) instead of hang. And
    bound how long a session may sit idle inside a transaction: our transactions never wait
    between statements, so one that does belongs to a frozen gateway (SIGSTOP, a stalled VM)
    holding row locks; the server ends that session and its locks go with it."""
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        (f"{int(statement_timeout_ms)}ms", f"{int(lock_timeout_ms)}ms",
         f"{int(idle_in_transaction_ms)}ms"),
    )
    conn.commit()


def _reset(conn: psycopg.Connection[Any]) -> None:
    """On return to the pool: undo a read's transaction attributes (no round trip)."""
    conn.read_only = None
    conn.isolation_level = None


def _run_blocking(
    pool: psycopg_pool.ConnectionPool,
    label: str,
    timeout: float,
    fn: Callable[[psycopg.Connection[Any]], T],
    read: bool,
) -> T:
    """One transaction around `fn` on a pooled connection; errors sorted (module docstring)."""
    psycopg = _psycopg()
    import psycopg_pool

    what = "read" if read else "write"
    try:
        with pool.connection() as conn:
            if read:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            ran = False
            try:
                # An explicit outer transaction, so a `with conn.transaction():` inside `fn`
                # is a savepoint of it (on an idle connection it would commit on its own).
                with conn.transaction(force_rollback=read):
                    result = fn(conn)
                    ran = True
            except psycopg.Error as exc:
                if not ran:
                    raise
                if read:
                    # Only ending the snapshot failed: the result stands (the pool discards
                    # the connection if it is broken).
                    return result
                if _connection_lost(exc, conn):
                    raise StoreError(
                        f"{label}: the connection was lost while committing a write "
                        f"({_message(exc)}); whether it was committed is unknown"
                    ) from exc
                raise
            return result
    except DuctileError:
        raise
    except psycopg_pool.PoolTimeout as exc:
        raise StoreUnavailable(
            f"{label}: {what} failed: no connection available within {timeout:g}s "
            "(the server is unreachable or every pooled connection is busy)"
        ) from exc
    except psycopg.Error as exc:
        error = _classify(label, f"{what} failed", exc)
        if _connection_lost(exc, None):
            _sweep(pool)
        raise error from exc


def _sweep(pool: psycopg_pool.ConnectionPool) -> None:
    """After one connection was found dead, check the idle ones too: a server restart kills
    them all, and each would otherwise fail one more operation before being replaced."""
    try:
        pool.check()
    except Exception:  # noqa: BLE001 - best effort; the caller already has its error
        pass


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    psycopg = _psycopg()
    try:
        conn.rollback()
    except psycopg.Error:
        pass  # the connection is broken; the pool discards it on return


def _connection_lost(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """True when the error says the connection itself is gone (not just the statement)."""
    psycopg = _psycopg()
    if conn is not None and conn.broken:
        return True
    state = getattr(exc, "sqlstate", None)
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] == "08" or state in {"57P01", "57P02", "57P03"}


def _classify(label: str, what: str, exc: BaseException) -> StoreError:
    """StoreUnavailable for a transient condition of the database, else StoreError."""
    state = getattr(exc, "sqlstate", None)
    transient = _connection_lost(exc, None) or (
        state is not None and (state in _TRANSIENT_SQLSTATES or state[:2] in _TRANSIENT_CLASSES)
    )
    kind = StoreUnavailable if transient else StoreError
    detail = f" [{state}]" if state else ""
    error = kind(f"{label}: {what}: {_message(exc)}{detail}")
    error.__cause__ = exc
    return error


def _message(exc: BaseException) -> str:
    """The server's message on one line (libpq's text spans several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _listen_blocking(
    dsn: str, label: str, connect_timeout: float, channel: str
) -> psycopg.Connection[Any]:
    psycopg = _psycopg()
    from psycopg import sql

    conn = _connect(dsn, label, connect_timeout, autocommit=True)
    try:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except psycopg.Error as exc:
        conn.close()
        raise _classify(label, f"cannot LISTEN on {channel}", exc) from exc
    return conn


async def _connect_abandonable(
    connect: Callable[[], psycopg.Connection[Any]],
) -> psycopg.Connection[Any]:
    """Run a blocking connect in a thread that a cancelled caller may abandon: a connection
    that arrives after the caller left is closed, not leaked."""
    lock = threading.Lock()
    state: dict[str, Any] = {"abandoned": False}

    def work() -> psycopg.Connection[Any] | None:
        conn = connect()
        with lock:
            if state["abandoned"]:
                conn.close()
                return None
            state["conn"] = conn
        return conn

    try:
        conn = await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        with lock:
            state["abandoned"] = True
            late = state.get("conn")
        if late is not None:
            late.close()
        raise
    assert conn is not None
    return conn
