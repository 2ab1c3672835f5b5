"""The CLI's offline reader of the store: SQLite's file or the shared PostgreSQL database.

Several verbs read the ledger directly instead of asking a running gateway (`job list`,
`job inspect`, `job logs`, `system plugin-facts`, `system scheduler`, `system breaker`,
`system vault-audit`, the selfcheck's database check), so they work while no gateway runs.
`open_reader(cfg)` gives them one object whichever `state.backend` the config names:

- SQLite: `state.path` opened `mode=ro` (store/db.py `open_readonly`: a foreign, older or
  newer schema is refused before anything is read);
- PostgreSQL: a PgDatabase on `state.dsn` with the password of the vault secret
  `state.secret_ref` (the operator running the CLI has the gateway's key file), one pooled
  connection, opened without migrating (a reader never changes the schema), every read in one
  READ ONLY, REPEATABLE READ transaction (store/pg/db.py).

Each read function takes the connection it is handed and the reader runs it in one snapshot;
`reader.backend` is the backend's statement record (store/backend.py) for the functions that
take one, and the named operations (`ledger`, `jobs`, ...) pick the backend's twin.

Nothing here imports psycopg or trio at import time: `ductile --help` must stay fast, and a
SQLite installation never loads the PostgreSQL driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

from ductile.cli.common import fail

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.store.backend import Backend
    from ductile.store.facts import Fact
    from ductile.store.jobs import Job, LogEntry
    from ductile.store.joblog import LogFilter

T = TypeVar("T")

#: What a reader does when the store cannot be opened: `fail` (print, exit 1) for a verb; the
#: selfcheck raises StoreError instead, to report it as a failed check.
OnError = Callable[[str], NoReturn]

#: What checks a PostgreSQL store's pages (the selfcheck's note; SQLite's is integrity_check).
PG_INTEGRITY_TOOLS = ("amcheck (pg_amcheck checks tables and indexes for corruption) and "
                      "data checksums (initdb --data-checksums)")


@dataclass(frozen=True)
class _Reads:
    """The backend's twins of the reads with no Backend record entry."""

    ledger: Callable[[Any, str], dict[str, Any] | None]
    root_of: Callable[[Any, str], str | None]
    facts: Callable[..., list[Fact]]
    every_facts: Callable[..., list[Fact]]


class Reader:
    """One store, read-only. `read(fn)` runs `fn(conn)` in one read transaction; the named
    operations are the CLI's reads. Close it with `close()` (or use it in a `with`)."""

    #: "sqlite" or "postgresql" (the `state.backend` word).
    kind: str
    #: The database named for messages: a path, or the DSN without its password.
    label: str
    backend: Backend

    def read(self, fn: Callable[[Any], T]) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection (nothing to do between PostgreSQL reads)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the CLI's reads (each one snapshot) ---------------------------------------------

    def jobs(self, *, plugin: str | None, status: str | None,
             limit: int) -> tuple[list[Job], int]:
        """`job list`: filtered jobs newest first, and the total ignoring `limit`."""
        fetch = self._statements().fetch_jobs
        return self.read(lambda conn: fetch(conn, plugin=plugin, command=None, status=status,
                                            limit=limit))

    def search_logs(self, where: LogFilter) -> tuple[list[LogEntry], int]:
        """`job logs`: matching terminal attempts newest first, and the total."""
        search = self._statements().search_logs
        return self.read(lambda conn: search(conn, where))

    def inspect(self, job_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """`job inspect`: the job's ledger (None when unknown) and the tree of its run from
        the root (None for an unknown job), in one snapshot."""
        reads, tree_of = self._reads(), self._statements().fetch_job_tree

        def both(conn: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            ledger = reads.ledger(conn, job_id)
            root = reads.root_of(conn, job_id) if ledger is not None else None
            return ledger, tree_of(conn, root) if root is not None else None

        return self.read(both)

    def facts(self, plugin: str | None, limit: int, fact_type: str | None) -> list[Fact]:
        """`system plugin-facts`: one plugin's newest facts, or every plugin's merged."""
        reads = self._reads()
        if plugin:
            return self.read(lambda conn: reads.facts(conn, plugin, limit, fact_type=fact_type))
        return self.read(lambda conn: reads.every_facts(conn, limit, fact_type))

    def audit(self, *, principal: str | None, limit: int) -> list[Any]:
        """`system vault-audit`: the vault audit rows newest first."""
        list_events = self.backend.audit.list_events
        return self.read(lambda conn: list_events(conn, principal=principal, limit=limit))

    def health(self) -> Any:
        """The selfcheck's database finding (store/health.py DatabaseHealth)."""
        check = self.backend.health.check
        return self.read(lambda conn: check(conn, self.label))

    def _statements(self) -> Any:
        """The backend's queue statements (store/queue.py Statements: SQL functions on a
        connection, not the JobQueue the gateway's layers use)."""
        return self.backend.queue

    def _reads(self) -> _Reads:  # pragma: no cover - abstract
        raise NotImplementedError


class _SqliteReader(Reader):
    kind = "sqlite"

    def __init__(self, path: str, on_error: OnError) -> None:
        import sqlite3

        from ductile.errors import StoreError
        from ductile.store.backend import SQLITE_BACKEND
        from ductile.store.db import open_readonly

        self.label = path
        self.backend = SQLITE_BACKEND
        if not os.path.exists(path):
            on_error(f"no database at {path} yet; start the gateway once (ductile system start) "
                 "to create it")
        try:
            self._conn = open_readonly(path)
        except (StoreError, sqlite3.Error) as exc:  # a foreign, older or newer schema
            on_error(f"cannot open {path}: {exc}")

    def read(self, fn: Callable[[Any], T]) -> T:
        import sqlite3

        from ductile.errors import StoreError

        try:
            return fn(self._conn)
        except sqlite3.Error as exc:  # the verbs handle one kind of failure
            raise StoreError(f"database {self.label}: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def _reads(self) -> _Reads:
        from ductile.store.analytics import facts_of_every_plugin
        from ductile.store.facts import fetch_facts
        from ductile.store.ledger import read_job_ledger
        from ductile.store.tree import root_of

        return _Reads(ledger=read_job_ledger, root_of=root_of, facts=fetch_facts,
                      every_facts=facts_of_every_plugin)


class _PgReader(Reader):
    kind = "postgresql"

    def __init__(self, cfg: Config, on_error: OnError) -> None:
        from ductile.store.pg.backend import POSTGRESQL_BACKEND
        from ductile.store.pg.db import describe_dsn, with_password

        self.backend = POSTGRESQL_BACKEND
        self.label = describe_dsn(cfg.state.dsn)
        self._state = cfg.state
        self._on_error = on_error
        self._dsn = with_password(cfg.state.dsn, _password(cfg, on_error))

    def read(self, fn: Callable[[Any], T]) -> T:
        """Open, read in one transaction, close: the CLI makes one or two reads per run, and
        a pool cannot outlive the trio run that opened it."""
        import trio

        return trio.run(self._run, fn, False)

    def write(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(conn)` in one write transaction (the offline `system scheduler pause`,
        `system reset`): committed when it returns, rolled back when it raises."""
        import trio

        return trio.run(self._run, fn, True)

    async def _run(self, fn: Callable[[Any], T], write: bool) -> T:
        from ductile.errors import StoreError
        from ductile.store.pg.db import PgDatabase

        state = self._state
        try:
            db = await PgDatabase.open(
                self._dsn, pool_size=1, connect_timeout=state.connect_timeout,
                statement_timeout_ms=max(1, round(state.statement_timeout * 1000)),
                lock_timeout_ms=max(1, round(state.lock_timeout * 1000)), migrate=False)
        except StoreError as exc:
            self._on_error(f"cannot open {self.label} (state.dsn): {exc}")
        try:
            return await (db.write(fn) if write else db.read(fn))
        finally:
            await db.close()

    def _reads(self) -> _Reads:
        from ductile.store.pg import ledger
        from ductile.store.pg.tree import root_of

        return _Reads(ledger=ledger.read_job_ledger, root_of=root_of, facts=ledger.fetch_facts,
                      every_facts=ledger.facts_of_every_plugin)


def open_reader(cfg: Config, *, on_error: OnError = fail) -> Reader:
    """The store `cfg` names, read-only; `on_error(reason)` (by default: exit 1 with it) when
    it cannot be opened (no database yet, a schema this release cannot read, the password's
    secret missing, the server unreachable)."""
    if cfg.state.shared:
        return _PgReader(cfg, on_error)
    return _SqliteReader(cfg.state_path, on_error)


def write_shared(cfg: Config, fn: Callable[[Any], T], *, on_error: OnError = fail) -> T:
    """Run `fn(conn)` in one write transaction on the PostgreSQL store `cfg` names."""
    return _PgReader(cfg, on_error).write(fn)


def _password(cfg: Config, on_error: OnError) -> str | None:
    """The database password: the vault secret `state.secret_ref` (None without one: the
    server authenticates the role another way, peer or certificate)."""
    ref = cfg.state.secret_ref
    if not ref:
        return None
    from ductile.errors import VaultError
    from ductile.vault.owner import load_vault

    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            os.environ, os.path.expanduser("~"))
    except (VaultError, OSError) as exc:
        on_error(f"cannot read the PostgreSQL password (state.secret_ref {ref}): {exc}")
    if loaded.owner is None:
        on_error(f"state.secret_ref names the vault secret {ref}, but the vault at "
             f"{loaded.vault_path} cannot be opened without its key: run this as the "
             "gateway's user, or set DUCTILE_VAULT_KEY_FILE or secrets.key_file")
    value = loaded.owner.resolved_secrets().values.get(ref)
    if not value:
        on_error(f"state.secret_ref names the vault secret {ref}, which the vault at "
             f"{loaded.vault_path} does not hold; set it with: ductile vault set --name {ref} "
             "(the value on stdin)")
    return str(value)
