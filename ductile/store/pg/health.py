"""The database's health on PostgreSQL, for the selfcheck: the twin of store/health.py's
SQLite check. There is no `integrity_check` to run (the server checks its own pages); what
can drift is the schema, so this reads the recorded version and checks every table and
column of pg/schema.sql is there, in the read's own snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.errors import StoreError
from ductile.store.health import DatabaseHealth, HealthStatements

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def pg_health(conn: Conn, label: str) -> DatabaseHealth:
    """The schema version against this release's, and the tables; never raises StoreError."""
    from ductile.store.pg.migrations import PG_SCHEMA_VERSION, stored_version, verify_tables

    version: int | None = None
    try:
        version = stored_version(conn)
        if version is None:
            return DatabaseHealth(False, f"{label}: no schema_version table: this is not a "
                                  "ductile database (the gateway creates one in an empty "
                                  "database at its first start)")
        if version != PG_SCHEMA_VERSION:
            newer = "newer" if version > PG_SCHEMA_VERSION else "older"
            return DatabaseHealth(False, f"{label}: schema version {version} is {newer} than "
                                  f"this release's {PG_SCHEMA_VERSION}; run the release that "
                                  "matches it, or start this one to migrate an older schema",
                                  version)
        verify_tables(conn, label)
    except StoreError as exc:
        return DatabaseHealth(False, str(exc), version)
    return DatabaseHealth(True, f"reachable, schema version {version} (current "
                          f"{PG_SCHEMA_VERSION})", version)


PG_HEALTH = HealthStatements(check=pg_health)
