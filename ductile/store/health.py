"""The database's own health, for the selfcheck (`ductile system selfcheck`,
`GET /system/selfcheck`): is it intact, and is its schema the one this release uses.

Read only. Each backend answers with a `DatabaseHealth` through its `HealthStatements`
(Backend.health): SQLite runs `PRAGMA integrity_check` and checks the schema version and
tables (`SQLITE_HEALTH`, here); PostgreSQL, whose server guards its own pages, checks the
schema version and tables (store/pg/health.py). config/selfcheck.py turns the answer into a
check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ductile.errors import StoreError


@dataclass(frozen=True)
class DatabaseHealth:
    """The finding: `ok`, a one-line `detail` (what is wrong, or what was checked), and the
    stored schema version when it could be read."""

    ok: bool
    detail: str
    schema_version: int | None = None


@dataclass(frozen=True)
class HealthStatements:
    """check(conn, label) -> DatabaseHealth, on a read connection; `label` names the
    database in the detail (a path, or a DSN without its password)."""

    check: Callable[[Any, str], DatabaseHealth]


def sqlite_health(conn: sqlite3.Connection, path: str) -> DatabaseHealth:
    """`PRAGMA integrity_check` and the schema version over an open (read) connection."""
    from ductile.store.db import verify_schema
    from ductile.store.migrations import SCHEMA_VERSION, stored_version

    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.Error as exc:
        return DatabaseHealth(False, f"integrity_check failed: {exc}")
    if rows != ["ok"]:
        shown = "; ".join(rows[:5]) + (f" (+{len(rows) - 5} more)" if len(rows) > 5 else "")
        return DatabaseHealth(False, f"integrity_check: {shown}")
    try:
        verify_schema(conn, path)
        version = stored_version(conn)
    except (StoreError, sqlite3.Error) as exc:
        return DatabaseHealth(False, str(exc))
    return DatabaseHealth(True, f"integrity ok, schema version {version} (current "
                          f"{SCHEMA_VERSION})", version)


SQLITE_HEALTH = HealthStatements(check=sqlite_health)
