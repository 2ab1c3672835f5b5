"""The vault audit trail (`vault_audit`): append one row per vault operation, list them.

Rows carry names and outcomes only (who, which operation, which secret or principal, `ok`,
`denied` or `error`, and a short reason). The outcome words are the Go original's; rows written
before this gateway used them say `refused` for a denial, and are read back as `denied`.
A secret value is never passed in: `AuditEvent` has no field for one, and `detail` is an error
message of the vault family, whose messages never contain values.

Three writers share `insert_event`: the daemon's `AuditWriter` (through `Database.write`, so
it joins the one writer thread), `append_offline` for CLI verbs that run while the daemon is
stopped (`vault get`, `vault set --vault`, `rotate-admin-token`, ...), and
`append_creating_database` for `config init`, whose vault writes come before any database.

`AuditWriter` takes its backend's `AuditStatements` (SQLite's `SQLITE_AUDIT` by default,
PostgreSQL's in store/pg/audit.py); the checks on an event (`audit_values`) and the reading of
legacy outcome words (`audit_row`) are this module's for both.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ductile.errors import StoreError
from ductile.store.jobs import utcnow_text

if TYPE_CHECKING:
    from ductile.logs import Logger
    from ductile.store.queue import Store

OUTCOMES = ("ok", "denied", "error")
#: Outcome words of rows written by earlier versions, and the word each is read back as.
LEGACY_OUTCOMES = {"refused": "denied"}
MAX_DETAIL = 500


@dataclass(frozen=True)
class AuditEvent:
    """One vault operation: `actor` (`core-admin-token`, `cli`), `op` (`set`, `roll`, ...),
    `target` (the secret or principal name), `outcome` (ok | denied | error)."""

    actor: str
    op: str
    target: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class AuditRow:
    id: int
    created_at: str
    actor: str
    op: str
    target: str
    outcome: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: What the management app is given: `await audit(event)`; it must not raise.
Audit = Callable[[AuditEvent], Awaitable[None]]


def audit_values(event: AuditEvent, created_at: str) -> tuple[str, str, str, str, str, str]:
    """The column values (created_at, actor, op, target, outcome, detail) of a new row, the
    outcome checked and target and detail cut to their caps, before any backend writes it."""
    if event.outcome not in OUTCOMES:
        raise StoreError(f"vault_audit: outcome {event.outcome!r} is not one of "
                         f"{', '.join(OUTCOMES)}")
    return (created_at, event.actor, event.op, event.target[:200], event.outcome,
            event.detail[:MAX_DETAIL])


def audit_row(row: Sequence[Any] | Mapping[str, Any]) -> AuditRow:
    """A stored row (id, created_at, actor, op, target, outcome, detail) as read back: a
    legacy outcome word is shown as the word it means now."""
    values = tuple(row.values()) if isinstance(row, Mapping) else tuple(row)
    record = AuditRow(*values)
    if record.outcome in LEGACY_OUTCOMES:
        return AuditRow(**{**record.as_dict(), "outcome": LEGACY_OUTCOMES[record.outcome]})
    return record


def insert_event(conn: sqlite3.Connection, event: AuditEvent, created_at: str) -> int:
    """Append one row inside the caller's transaction; returns its id."""
    cursor = conn.execute(
        "INSERT INTO vault_audit (created_at, actor, op, target, outcome, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        audit_values(event, created_at),
    )
    return int(cursor.lastrowid or 0)


@dataclass(frozen=True)
class AuditStatements:
    """One backend's vault_audit statements (Backend.audit): insert_event(conn, event,
    created_at) -> id, list_events(conn, *, principal=None, limit=50), with the answers of
    the SQLite functions of those names in this module."""

    insert_event: Callable[[Any, AuditEvent, str], int]
    list_events: Callable[..., list[AuditRow]]


class AuditWriter:
    """The daemon's audit sink: one `Database.write` per event.

    A failed audit write is logged and swallowed: the vault operation it describes has
    already been persisted, and failing the HTTP request would only hide that.
    """

    def __init__(self, db: Store, log: Logger | None = None,
                 clock: Callable[[], str] = utcnow_text,
                 statements: AuditStatements | None = None) -> None:
        self._db = db
        self._log = log
        self._clock = clock
        self._sql = SQLITE_AUDIT if statements is None else statements

    async def __call__(self, event: AuditEvent) -> None:
        created_at = self._clock()
        try:
            await self._db.write(lambda conn: self._sql.insert_event(conn, event, created_at))
        except StoreError as exc:
            if self._log is not None:
                self._log.error("vault audit row not written", op=event.op,
                                target=event.target, outcome=event.outcome, error=str(exc))


def append_offline(state_path: str, event: AuditEvent, *,
                   clock: Callable[[], str] = utcnow_text) -> bool:
    """Append a row from the CLI with its own short write transaction.

    Returns False (and writes nothing) when the database does not exist yet: an offline vault
    verb before the first `system start` has no audit trail to join, and must not create a
    database on its own.
    """
    if not os.path.isfile(state_path):
        return False
    from ductile.store.db import BUSY_TIMEOUT_MS

    try:
        conn = sqlite3.connect(state_path, isolation_level=None,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"database {state_path}: cannot open for the vault audit: {exc}") \
            from exc
    try:
        conn.execute("BEGIN IMMEDIATE")
        insert_event(conn, event, clock())
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"database {state_path}: cannot append the vault audit row: {exc}") \
            from exc
    finally:
        conn.close()
    return True


def append_creating_database(state_path: str, events: Sequence[AuditEvent], *,
                             clock: Callable[[], str] = utcnow_text) -> None:
    """Append `events` in one transaction, creating the state database first when there is
    none (schema at the current version, exactly as the gateway creates it at its first boot).

    For `config init`: it writes the vault (genesis, the minted `api-token`) before any gateway
    ran, and those writes belong in the trail the gateway and `system vault-audit` read. The
    gateway then opens this database as its own. Raises StoreError when it cannot be written.
    """
    import trio

    from ductile.store.db import Database

    async def write() -> None:
        db = await Database.open(state_path)
        try:
            created_at = clock()
            await db.write(lambda conn: [insert_event(conn, e, created_at) for e in events])
            # A read through the reader pool before closing lets the last connection checkpoint
            # and remove the -wal/-shm files: the new config directory holds one state file.
            await db.read(lambda conn: conn.execute("SELECT count(*) FROM vault_audit")
                          .fetchone())
        finally:
            await db.close()

    trio.run(write)


def list_events(conn: sqlite3.Connection, *, principal: str | None = None,
                limit: int = 50) -> list[AuditRow]:
    """Newest first; `principal` keeps rows where it is the actor or the target."""
    sql = ("SELECT id, created_at, actor, op, target, outcome, detail FROM vault_audit")
    params: list[Any] = []
    if principal:
        sql += " WHERE actor = ? OR target = ?"
        params += [principal, principal]
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [audit_row(row) for row in conn.execute(sql, params)]


SQLITE_AUDIT = AuditStatements(insert_event=insert_event, list_events=list_events)
