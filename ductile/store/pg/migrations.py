"""The PostgreSQL schema's versions and their runner.

The PostgreSQL store numbers its schema on its own (table `schema_version`, one row per applied
version), independently of the SQLite file's `PRAGMA user_version`: it starts at version 1 with
the tables of ductile/store/schema.sql as they are today, so none of SQLite's history (JSON
affinity fixes, added columns) needs replaying here. A later change to the tables adds a
`PgMigration` to `PG_MIGRATIONS` and the same change to schema.sql beside this file.

Why an advisory lock. Several gateways may share one database and boot at the same moment. The
runner takes a session-level `pg_advisory_lock` before looking at the version, so exactly one of
them creates or migrates the schema; the others wait, then find it current. Advisory locks are
per database, so two ductile databases on one cluster do not block each other. Every step and
the version row are one transaction (PostgreSQL DDL is transactional): a failure leaves the
database as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ductile.errors import MigrationFailed, SchemaMismatch, SchemaOutdated, SchemaTooNew
from ductile.store.jobs import utcnow_text

if TYPE_CHECKING:
    import psycopg

#: The version schema.sql creates when there is no migration step yet.
BASELINE_VERSION = 1

#: `pg_advisory_lock` key of the schema runner ("ductile" in ASCII, as a bigint).
ADVISORY_LOCK_KEY = 0x64756374696C65

#: How long a booting gateway waits for another one's migration (the lock) before giving up.
MIGRATION_LOCK_TIMEOUT = "60s"

#: The table whose presence marks a database as ours.
_MARKER_TABLE = "job_queue"


@dataclass(frozen=True)
class PgMigration:
    """One step: `apply(conn)` brings a database at `version - 1` to `version`, inside the
    runner's transaction (it must not commit)."""

    version: int
    description: str
    apply: Callable[[psycopg.Connection[Any]], None]


@dataclass(frozen=True)
class PgMigrated:
    """What opening did to the schema: created it (`from_version` 0) or migrated it."""

    label: str
    from_version: int
    to_version: int
    steps: tuple[str, ...]


#: Steps after the baseline (none yet).
PG_MIGRATIONS: tuple[PgMigration, ...] = ()


def target_version(migrations: Sequence[PgMigration] = PG_MIGRATIONS) -> int:
    return migrations[-1].version if migrations else BASELINE_VERSION


#: The schema version this release creates and migrates to.
PG_SCHEMA_VERSION = target_version()


def schema_sql() -> str:
    """The text of ductile/store/pg/schema.sql shipped in the package."""
    return (resources.files("ductile.store.pg") / "schema.sql").read_text(encoding="utf-8")


_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.DOTALL | re.IGNORECASE
)
_NOT_A_COLUMN = {"PRIMARY", "UNIQUE", "CONSTRAINT", "CHECK", "FOREIGN", "EXCLUDE"}


def required_schema(text: str | None = None) -> dict[str, tuple[str, ...]]:
    """Every table schema.sql creates, with its columns, read from the file itself (one column
    per line, as it is written) so the check cannot drift from the schema."""
    tables: dict[str, tuple[str, ...]] = {}
    for match in _CREATE_TABLE.finditer(schema_sql() if text is None else text):
        columns = []
        for line in match.group(2).splitlines():
            words = line.split("--", 1)[0].split()
            if words and words[0].upper() not in _NOT_A_COLUMN:
                columns.append(words[0].lower())
        tables[match.group(1).lower()] = tuple(columns)
    return tables


def ensure_schema(
    conn: psycopg.Connection[Any],
    label: str,
    migrations: Sequence[PgMigration] = PG_MIGRATIONS,
) -> PgMigrated | None:
    """Create the schema in an empty database, migrate an older one, refuse a newer one
    (SchemaTooNew) or a foreign one (SchemaMismatch), all under the advisory lock.

    `conn` is a dedicated autocommit connection; the lock is released before returning.
    Returns what was done, None when the schema was already current.
    """
    _check_order(migrations)
    conn.execute("SELECT set_config('lock_timeout', %s, false), "
                 "set_config('statement_timeout', %s, false)",
                 (MIGRATION_LOCK_TIMEOUT, MIGRATION_LOCK_TIMEOUT))
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        with conn.transaction():
            done = _create_or_migrate(conn, label, migrations)
        verify_tables(conn, label)
        return done
    finally:
        _unlock(conn)


def check_schema(conn: psycopg.Connection[Any], label: str,
                 migrations: Sequence[PgMigration] = PG_MIGRATIONS) -> None:
    """The reader's half of `ensure_schema`: change nothing, take no lock, and refuse a
    database this release cannot read as it is (no ductile schema yet, an older version only a
    gateway's boot migrates, a newer one, a missing table or column)."""
    target = target_version(migrations)
    found = stored_version(conn)
    if found is None:
        raise SchemaMismatch(
            f"{label}: no ductile schema in this database yet: a gateway creates it on its "
            "first start (ductile system start); check state.dsn names the right database"
        )
    if found > target:
        raise SchemaTooNew(label, found, target)
    if found < target:
        raise SchemaOutdated(label, found, target)
    verify_tables(conn, label)


def _unlock(conn: psycopg.Connection[Any]) -> None:
    """Release the advisory lock; if the connection is broken, closing it (the caller does)
    releases the session lock anyway, and the error that broke it is the one to report."""
    import psycopg

    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    except psycopg.Error:
        pass


def stored_version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema version recorded, or None when there is no schema_version table."""
    if not _table_exists(conn, "schema_version"):
        return None
    row = conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
    value = _first(row)
    return None if value is None else int(value)


def _create_or_migrate(
    conn: psycopg.Connection[Any], label: str, migrations: Sequence[PgMigration]
) -> PgMigrated | None:
    target = target_version(migrations)
    found = stored_version(conn)
    if found is None:
        if _table_exists(conn, _MARKER_TABLE):
            raise SchemaMismatch(
                f"{label}: table {_MARKER_TABLE} exists but schema_version does not: the "
                "database holds tables not created by ductile's PostgreSQL store; point the "
                "DSN at an empty database"
            )
        conn.execute(schema_sql())
        _record(conn, target, "created from schema.sql")
        return PgMigrated(label=label, from_version=0, to_version=target,
                          steps=(f"{target}: created from schema.sql",))
    if found > target:
        raise SchemaTooNew(label, found, target)
    if found == target:
        return None
    steps = [step for step in migrations if step.version > found]
    for step in steps:
        try:
            with conn.transaction():  # a savepoint: name the failing step
                step.apply(conn)
        except Exception as exc:
            raise MigrationFailed(
                f"{label}: migration from schema version {found} to {target} failed at step "
                f"{step.version} ({step.description}): {exc}; the transaction was rolled back, "
                f"so the database is unchanged (still version {found})",
                path=label, found=found, target=target,
            ) from exc
        _record(conn, step.version, step.description)
    return PgMigrated(label=label, from_version=found, to_version=target,
                      steps=tuple(f"{s.version}: {s.description}" for s in steps))


def verify_tables(conn: psycopg.Connection[Any], label: str) -> None:
    """Raise SchemaMismatch naming the first table or column of schema.sql that is missing."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall()
    present: dict[str, set[str]] = {}
    for row in rows:
        table, column = (row["table_name"], row["column_name"]) if isinstance(row, dict) else row
        present.setdefault(table, set()).add(column)
    for table, columns in required_schema().items():
        if table not in present:
            raise SchemaMismatch(
                f"{label}: required table {table} is missing: the schema was changed by hand; "
                "restore the database from a backup (the expected schema is "
                "ductile/store/pg/schema.sql)"
            )
        for column in columns:
            if column not in present[table]:
                raise SchemaMismatch(
                    f"{label}: table {table} lacks column {column}: the schema was changed by "
                    "hand; restore the database from a backup or add the column (see "
                    "ductile/store/pg/schema.sql)"
                )


def _record(conn: psycopg.Connection[Any], version: int, description: str) -> None:
    conn.execute(
        "INSERT INTO schema_version (version, applied_at, description) VALUES (%s, %s, %s)",
        (version, utcnow_text(), description),
    )


def _table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) AS t", (table,)).fetchone()
    return _first(row) is not None


def _first(row: Any) -> Any:
    if row is None:
        return None
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


def _check_order(migrations: Sequence[PgMigration]) -> None:
    """Steps must be consecutive from version 2: a gap or a repeat is a bug in the list."""
    expected = list(range(BASELINE_VERSION + 1, BASELINE_VERSION + 1 + len(migrations)))
    versions = [step.version for step in migrations]
    if versions != expected:
        raise ValueError(f"migration versions must be {expected}, got {versions}")
