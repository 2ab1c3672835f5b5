"""Versioned migrations of the state database: an ordered list of steps, and their runner.

Why. schema.sql is applied only to an empty file, and SQLite cannot change a column's declared
type, so a change to schema.sql would strand every existing database. The file records its
schema version in `PRAGMA user_version`; each `Migration` brings a database from the version
before it to its own `version`. A new database is created from schema.sql at the newest version.
Version 1 is the schema from before versions were recorded: user_version 0 with our tables.

How a migration runs (`migrate`, called by the gateway when it opens the database at boot):

- a database newer than the newest step is refused (SchemaTooNew) before anything is written:
  migrations only go forward, and an older release cannot know what a newer schema means;
- the file is backed up beside itself (`<state.db>.v<old>-<UTC time>.bak`, mode 0600) with
  SQLite's online backup API, inside the same read snapshot the steps then write on, so the
  backup is exactly what was migrated (another process writing in between makes the migration
  fail instead, with nothing changed);
- every pending step, the new user_version and an optional check of the result run in ONE
  transaction: a failure anywhere rolls it back, leaving the file as it was, and deletes the
  backup (a boot loop must not fill the disk with copies of an untouched file).

A step is frozen once released: it transforms the schema of its own version, never "whatever
schema.sql says today", so a later step can build on it. tests/test_store_migrations.py checks
that migrating a version 1 file gives the same tables, columns and indexes as schema.sql.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ductile.atomicfile import fsync_directory
from ductile.errors import MigrationFailed, SchemaMismatch, SchemaTooNew
from ductile.store.jobs import utcnow

#: The schema version of a database from before versions were recorded (user_version 0).
BASELINE_VERSION = 1

#: The table whose presence marks a file as a ductile state database (see `is_ours`).
_MARKER_TABLE = "job_queue"


@dataclass(frozen=True)
class Migration:
    """One step: `apply(conn)` turns a database at `version - 1` into one at `version`.

    It runs inside the runner's transaction and must not commit or roll back itself.
    """

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migrated:
    """What a completed migration did (logged once at boot, recorded as boot facts)."""

    path: str
    from_version: int
    to_version: int
    backup_path: str
    steps: tuple[str, ...]


# -- version 2: JSON columns become TEXT -----------------------------------------------------

#: The columns version 1 declared `JSON`. SQLite gives that declared type NUMERIC affinity, so
#: JSON text such as `42` or `1.50` was stored as a number and read back as a Python int or
#: float instead of the text that was written.
_V1_JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "job_queue": ("payload",),
    "config_snapshots": (
        "semantics", "plugin_fingerprints", "sanitized_config", "secret_fingerprints",
    ),
    "plugin_state": ("state",),
    "plugin_facts": ("fact_json",),
    "event_context": ("accumulated_json",),
}

_NUMBER_TO_JSON = "ductile_json_number"


def json_number_text(value: int | float) -> str:
    """JSON text for a number NUMERIC affinity made of JSON text.

    The original text is gone (`1.50` became 1.5), so this is the shortest text that reads back
    as the same number: Python's float repr round-trips every double, where SQLite's own CAST
    keeps 15 digits (0.30000000000000004 would become 0.3). An infinity can only have come from
    a literal too large for a double, so it is written back as one (`1e999`).
    """
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return json.dumps(value)
    return str(value)


def _json_columns_to_text(conn: sqlite3.Connection) -> None:
    """Rebuild each table of `_V1_JSON_COLUMNS` with those columns declared TEXT."""
    conn.create_function(_NUMBER_TO_JSON, 1, json_number_text, deterministic=True)
    for table, columns in _V1_JSON_COLUMNS.items():
        retype_columns(conn, table, columns, "TEXT", convert=_numbers_to_json_text)


def _numbers_to_json_text(column: str) -> str:
    quoted = _quote(column)
    return (f"CASE WHEN typeof({quoted}) IN ('integer', 'real') "
            f"THEN {_NUMBER_TO_JSON}({quoted}) ELSE {quoted} END")


# -- version 3: relay replay protection --------------------------------------------------------


def _relay_seen(conn: sqlite3.Connection) -> None:
    """The table of relay envelopes accepted within the clock-skew window (store/relay.py)."""
    conn.execute("""
        CREATE TABLE relay_seen (
            peer             TEXT NOT NULL,
            signature        TEXT NOT NULL,
            event_id         TEXT NOT NULL,
            seen_at          TEXT NOT NULL,
            expires_at       TEXT NOT NULL,
            PRIMARY KEY (peer, signature)
        )""")
    conn.execute("CREATE INDEX relay_seen_expires_idx ON relay_seen (expires_at)")


# -- version 4: retry and rerun links ------------------------------------------------------------


def _again_links(conn: sqlite3.Connection) -> None:
    """job_queue.retry_of / rerun_of: the job a `ductile job retry` or `pipeline rerun` started
    again, so the ledger shows the link both ways (the old job's "retried as" is an index
    lookup). Nothing else changes: adding a nullable column keeps every existing row."""
    conn.execute("ALTER TABLE job_queue ADD COLUMN retry_of TEXT")
    conn.execute("ALTER TABLE job_queue ADD COLUMN rerun_of TEXT")
    conn.execute("CREATE INDEX job_queue_retry_of_idx ON job_queue (retry_of) "
                 "WHERE retry_of IS NOT NULL")
    conn.execute("CREATE INDEX job_queue_rerun_of_idx ON job_queue (rerun_of) "
                 "WHERE rerun_of IS NOT NULL")


# -- version 5: the event log ---------------------------------------------------------------------


def _events(conn: sqlite3.Connection) -> None:
    """The recent events of the event hub (events/hub.py), so a subscriber reconnecting with
    Last-Event-ID resumes without a gap, also after a restart. Each batch
    written prunes it to the newest events (store/events.py)."""
    conn.execute("""
        CREATE TABLE events (
            id               INTEGER PRIMARY KEY,
            type             TEXT NOT NULL,
            at               TEXT NOT NULL,
            data             TEXT NOT NULL
        )""")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "JSON columns become TEXT, so stored JSON text round-trips byte for byte",
              _json_columns_to_text),
    Migration(3, "relay_seen: relay envelopes accepted within the clock-skew window",
              _relay_seen),
    Migration(4, "job_queue.retry_of and rerun_of: a retried job or rerun pipeline run is "
                 "linked to the one it started again", _again_links),
    Migration(5, "events: the recent events of GET /events, kept for resuming", _events),
)

#: The schema version this release creates and migrates to.
SCHEMA_VERSION: int = MIGRATIONS[-1].version


# -- the runner -------------------------------------------------------------------------------


def target_version(migrations: Sequence[Migration]) -> int:
    """The version a database has after every step of `migrations`."""
    return migrations[-1].version if migrations else BASELINE_VERSION


def is_ours(conn: sqlite3.Connection) -> bool:
    """True when the file holds our marker table: only then does a version mean anything (a
    foreign SQLite file may use user_version for its own purposes)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_MARKER_TABLE,)
    ).fetchone()
    return row is not None


def stored_version(conn: sqlite3.Connection) -> int:
    """The schema version of a database of ours: user_version, or 1 when none was recorded."""
    raw = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return raw if raw > 0 else BASELINE_VERSION


def migrate(
    conn: sqlite3.Connection,
    path: str,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    verify: Callable[[sqlite3.Connection], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Migrated | None:
    """Bring the database of `conn` (the file `path`) to the newest version of `migrations`.

    Returns None when there is nothing to do: already current, empty, or not ours (the schema
    check that follows names what is missing). `verify(conn)` runs before the commit, so a
    result that still cannot be used is rolled back too. `conn` must be in autocommit mode
    (`isolation_level=None`) and outside a transaction.

    Raises SchemaTooNew (nothing written), MigrationFailed (rolled back, backup removed), or
    what `verify` raises (rolled back, backup removed).
    """
    _check_order(migrations)
    target = target_version(migrations)
    # A deferred BEGIN: the backup API cannot read a connection that holds the write lock, so
    # the backup reads this transaction's snapshot and `_take_write_lock` upgrades it after.
    conn.execute("BEGIN")
    backup: str | None = None
    try:
        found = _pending_from(conn, path, target)
        if found is None:
            conn.execute("ROLLBACK")
            return None
        backup = _back_up(conn, path, found, target, clock())
        _take_write_lock(conn, path, found, target)
        steps = [step for step in migrations if step.version > found]
        for step in steps:
            _apply(conn, path, step, found, target)
        conn.execute(f"PRAGMA user_version = {int(target)}")
        if verify is not None:
            verify(conn)
        _commit(conn, path, found, target)
    except BaseException:
        _rollback(conn)
        if backup is not None:
            discard_file(backup)
        raise
    return Migrated(path=path, from_version=found, to_version=target, backup_path=backup,
                    steps=tuple(f"{step.version}: {step.description}" for step in steps))


def _check_order(migrations: Sequence[Migration]) -> None:
    """Steps must be consecutive from version 2: a gap or a repeat is a bug in the list."""
    expected = list(range(BASELINE_VERSION + 1, BASELINE_VERSION + 1 + len(migrations)))
    versions = [step.version for step in migrations]
    if versions != expected:
        raise ValueError(f"migration versions must be {expected}, got {versions}")


def _pending_from(conn: sqlite3.Connection, path: str, target: int) -> int | None:
    """The version to migrate from, or None when there is nothing to migrate."""
    if not is_ours(conn):
        return None
    found = stored_version(conn)
    if found > target:
        raise SchemaTooNew(path, found, target)
    return found if found < target else None


def _back_up(
    conn: sqlite3.Connection, path: str, found: int, target: int, moment: datetime
) -> str:
    try:
        return backup_beside(conn, path, found, moment)
    except (OSError, sqlite3.Error) as exc:
        directory = os.path.dirname(path) or "."
        raise MigrationFailed(
            f"state database {path}: cannot write its backup before migrating from schema "
            f"version {found} to {target}: {exc}; nothing was migrated: free disk space or "
            f"make {directory} writable, then start again",
            path=path, found=found, target=target,
        ) from exc


def _take_write_lock(conn: sqlite3.Connection, path: str, found: int, target: int) -> None:
    """Upgrade the backup's read snapshot to the write lock with a write that changes nothing.

    In WAL mode SQLite refuses the upgrade (SQLITE_BUSY_SNAPSHOT) when another connection
    committed since the snapshot began, i.e. since before the backup was taken.
    """
    raw = int(conn.execute("PRAGMA user_version").fetchone()[0])
    try:
        conn.execute(f"PRAGMA user_version = {raw}")
    except sqlite3.Error as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_READONLY:
            why = (f"the file is not writable ({exc}); make it, its -wal/-shm files and its "
                   "directory writable by the gateway's user")
        else:
            why = (f"another process wrote to or locked the file while it was being backed up "
                   f"({exc}); stop that process (a ductile CLI command?)")
        raise MigrationFailed(
            f"state database {path}: cannot migrate from schema version {found} to {target}: "
            f"{why}; nothing was migrated, start the gateway again",
            path=path, found=found, target=target,
        ) from exc


def _apply(
    conn: sqlite3.Connection, path: str, step: Migration, found: int, target: int
) -> None:
    try:
        step.apply(conn)
    except Exception as exc:
        raise MigrationFailed(
            f"state database {path}: migration from schema version {found} to {target} failed "
            f"at step {step.version} ({step.description}): {exc}; the transaction was rolled "
            f"back, so the file is unchanged (still version {found}): fix the cause and start "
            "again, or keep running the previous ductile release on it",
            path=path, found=found, target=target,
        ) from exc


def _commit(conn: sqlite3.Connection, path: str, found: int, target: int) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise MigrationFailed(
            f"state database {path}: the migration from schema version {found} to {target} "
            f"could not be committed ({exc}); the file is unchanged (still version {found}): "
            "free disk space or fix the file's permissions and start again",
            path=path, found=found, target=target,
        ) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already ended the transaction (I/O error); nothing was committed


# -- the backup -------------------------------------------------------------------------------


def backup_name(path: str, version: int, moment: datetime, attempt: int = 1) -> str:
    """`<path>.v<version>-<YYYYMMDDTHHMMSSZ>.bak` (`-<attempt>` before `.bak` after the first)."""
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{path}.v{version}-{stamp}{suffix}.bak"


def backup_beside(
    conn: sqlite3.Connection, path: str, version: int, moment: datetime
) -> str:
    """Copy the database of `conn` (as its current transaction sees it) to a new 0600 file
    beside `path`; return the file's path. The copy is a plain rollback-journal database, so it
    can be opened, or copied back over `path`, on its own. On failure nothing is left behind
    and the OSError or sqlite3.Error propagates."""
    target = _reserve(path, version, moment)
    try:
        dest = sqlite3.connect(target, isolation_level=None)
        try:
            conn.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        os.chmod(target, 0o600)
        fsync_directory(os.path.dirname(target))
    except BaseException:
        discard_file(target)
        raise
    return target


def _reserve(path: str, version: int, moment: datetime) -> str:
    """Create the backup file empty with mode 0600, never replacing an earlier backup."""
    for attempt in range(1, 100):
        name = backup_name(path, version, moment, attempt)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(f"99 backups named like {backup_name(path, version, moment)} "
                          "already exist; move them away")


def discard_file(path: str) -> None:
    """Remove a backup (and a journal its copy may have left) that is no longer wanted."""
    for name in (path, path + "-journal"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


# -- rebuilding a table -----------------------------------------------------------------------


def retype_columns(
    conn: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    new_type: str,
    *,
    convert: Callable[[str], str] | None = None,
) -> None:
    """Rebuild `table` with `columns` declared `new_type`, keeping everything else.

    SQLite cannot change a column's type in place, so: create the table again from its own
    stored definition with the types replaced, under a temporary name; copy every row with its
    rowid (FIFO tie-breaks order by rowid), passing each retyped column through the SQL
    expression `convert(column)`; drop the old table; rename; recreate its indexes and
    triggers; restore its AUTOINCREMENT counter. Run it inside a transaction.
    """
    create = _table_sql(conn, table)
    names = [str(row[1]) for row in conn.execute(f"PRAGMA table_info({_quote(table)})")]
    for column in columns:
        if column not in names:
            raise SchemaMismatch(f"table {table} lacks column {column}: cannot change its type")
    temporary = f"_ductile_migrating_{table}"
    dependents = [str(row[0]) for row in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY rowid", (table,))]
    counter = _sequence(conn, table)
    conn.execute(_retyped(create, table, temporary, columns, new_type))
    target_list = ", ".join(_quote(name) for name in names)
    source_list = ", ".join(
        convert(name) if convert is not None and name in columns else _quote(name)
        for name in names
    )
    conn.execute(f"INSERT INTO {_quote(temporary)} (rowid, {target_list}) "
                 f"SELECT rowid, {source_list} FROM {_quote(table)}")
    conn.execute(f"DROP TABLE {_quote(table)}")
    conn.execute(f"ALTER TABLE {_quote(temporary)} RENAME TO {_quote(table)}")
    for sql in dependents:
        conn.execute(sql)
    if counter is not None:
        conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?",
                     (counter, table))


def _table_sql(conn: sqlite3.Connection, table: str) -> str:
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if row is None or row[0] is None:
        raise SchemaMismatch(f"required table {table} is missing: cannot rebuild it")
    return str(row[0])


def _retyped(
    create: str, table: str, temporary: str, columns: Sequence[str], new_type: str
) -> str:
    """`create` (a table's stored CREATE TABLE text) renamed to `temporary`, with each of
    `columns` declared `new_type`. Each must match exactly once, or the rebuild is refused."""
    head = re.compile(
        r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"`\[]?" + re.escape(table)
        + r"[\"`\]]?\s*\(", re.IGNORECASE)
    sql, count = head.subn(f"CREATE TABLE {_quote(temporary)} (", create, count=1)
    if count != 1:
        raise SchemaMismatch(f"cannot parse the definition of table {table}: {create[:80]!r}")
    for column in columns:
        declaration = re.compile(
            r"([(,]\s*[\"`\[]?" + re.escape(column) + r"[\"`\]]?\s+)[A-Za-z_]\w*",
            re.IGNORECASE)
        sql, count = declaration.subn(lambda m: m.group(1) + new_type, sql)
        if count != 1:
            raise SchemaMismatch(
                f"cannot find the declared type of column {column} in table {table}")
    return sql


def _sequence(conn: sqlite3.Connection, table: str) -> int | None:
    """The AUTOINCREMENT counter of `table`, if it has one."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone() \
            is None:
        return None
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row is not None else None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
